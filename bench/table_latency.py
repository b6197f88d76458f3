"""Seconds per table of a trained model at batch 1, end to end (load the image, vision, prefill,
decode with the table grammar, parse), on folders of real and example tables.

Run as: .venv/bin/python bench/table_latency.py [--model models/tabvlm-base] [--dtype float32]
        [--sets examples ../shared/realtables] [--threads 2] [--out bench/results/table_latency.json]

The model stops where it decides the table ends, so a table's time grows with its length: the
median over each folder is the figure (the issue's target: <= 1.0 s per table on 2 cores). Each
image is read once before timing starts (grammar tables built, caches warm).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from common import ROOT, write_result

from tabvlm.recognizer import TableRecognizer

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "tabvlm-base"))
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "int8"])
    ap.add_argument(
        "--sets", nargs="+", default=[str(ROOT / "examples"), str(ROOT.parent / "shared" / "realtables")]
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "table_latency.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rec = TableRecognizer.from_pretrained(args.model, dtype=args.dtype)
    rec.predict(next(Path(args.sets[0]).glob("*.png")))  # warm-up: grammar tables, allocator
    rows = []
    for folder in args.sets:
        images = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            print(f"skipped {folder}: no images")
            continue
        seconds, tokens = [], []
        for path in images:
            t0 = time.perf_counter()
            pred = rec.predict(path)
            seconds.append(time.perf_counter() - t0)
            tokens.append(pred.tokens)
        rows.append(
            {
                "set": Path(folder).name,
                "tables": len(images),
                "median_s": statistics.median(seconds),
                "p90_s": sorted(seconds)[int(0.9 * (len(seconds) - 1))],
                "max_s": max(seconds),
                "median_tokens": statistics.median(tokens),
            }
        )
    print(f"model {args.model} ({args.dtype}), {args.threads} threads, batch 1")
    print("| set | tables | median s | p90 s | max s | median tokens |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['set']} | {r['tables']} | {r['median_s']:.3f} | {r['p90_s']:.3f} | {r['max_s']:.3f} | "
            f"{r['median_tokens']:.0f} |"
        )
    write_result(args.out, {"model": args.model, "dtype": args.dtype, "threads": args.threads, "rows": rows})


if __name__ == "__main__":
    main()
