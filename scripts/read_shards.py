"""Read every image of pre-rendered shards once with the reader and keep its words on disk.

Run as: .venv/bin/python scripts/read_shards.py 'data/browser-shards-v2/shard-*.tar'
        --cache data/shard-read-cache [--threads 1]

The layout recipe's `data.shard_words: reader` then takes these words (by the image's pixel
digest, the key `read_words` uses) instead of the drawing's true words with simulated noise, so
training never reads an image twice. Resumable: images already in the cache are skipped.
"""

from __future__ import annotations

import argparse
import sys
import time

from tabvlm.data.shards import ShardReader, expand_shards
from tabvlm.read import read_words
from tabvlm.read.cache import WordCache


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("shards", nargs="+", help="shard files or globs")
    ap.add_argument("--cache", required=True, help="the read cache folder")
    ap.add_argument("--reader", default="ppocr")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads")
    args = ap.parse_args()
    shards = ShardReader(expand_shards(args.shards))
    cache = WordCache(max_items=0, folder=args.cache)
    t0 = time.perf_counter()
    for i in range(len(shards)):
        s = shards[i]
        read_words(
            s.rendered.image,
            args.reader,
            name=f"{s.key} (shard sample {i})",
            cache=cache,
            threads=args.threads,
        )
        if (i + 1) % 50 == 0 or i + 1 == len(shards):
            rate = (i + 1) / (time.perf_counter() - t0)
            print(f"{i + 1}/{len(shards)} images, {rate:.2f}/s, cache hits {cache.hits}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
