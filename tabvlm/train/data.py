"""Training data: one deterministic stream of samples from jsonl files and/or the synthetic
generator, sharded per DDP rank and DataLoader worker, resumable at any sample."""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from tabvlm.data.dataset import (
    MAX_ATTEMPTS,
    DataConfig,
    Sample,
    collate,
    encode_conversation,
    image_sample,
    pack,
    synth_answer,
)
from tabvlm.data.render import sample_rngs
from tabvlm.data.shards import ShardReader, expand_shards
from tabvlm.data.synth import synthesize
from tabvlm.errors import DataError
from tabvlm.tasks import user_prompt
from tabvlm.tokenizer import TableTokenizer

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Data: one deterministic stream of samples, sharded per rank and worker, resumable
# ---------------------------------------------------------------------------------------------


def read_text_records(path: str | Path) -> list[str]:
    """The `text` of each line of a plain-text jsonl (`{"text": ...}`); DataError with file:line."""
    path = Path(path)
    texts: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as e:
        raise DataError("no such file", str(path)) from e
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"not valid JSON ({e.msg})", str(path), n) from e
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise DataError('expected an object with a string "text"', str(path), n)
        texts.append(item["text"])
    if not texts:
        raise DataError("no text record", str(path))
    return texts


def encode_text(tokenizer: TableTokenizer, text: str, max_len: int) -> Sample:
    """A plain-text LM sample: every token is a target; `<|endoftext|>` ends it; cut at max_len."""
    ids = (tokenizer.encode(text) + [tokenizer.endoftext_id])[:max_len]
    t = torch.tensor(ids, dtype=torch.long)
    return {"pixel_values": torch.empty(0, 3, 1, 1), "input_ids": t, "labels": t.clone()}


class SampleSource:
    """Global sample index g -> sample, mixing the synthetic stream and jsonl records.

    Synthetic at g iff floor((g+1) r) > floor(g r) (r = synthetic share), so exactly the share r
    is synthetic, and the synthetic / file counts before g are closed forms. File samples walk
    the concatenated records in a fresh shuffle each epoch (seeded by `seed` and the epoch).
    """

    def __init__(self, ratio: float, synth: Callable[[int], Sample] | None, files: Sequence[Any], seed: int):
        self.ratio, self.synth, self.files, self.seed = ratio, synth, list(files), seed
        self.sizes = [len(f) for f in self.files]
        self.total = sum(self.sizes)
        self._perm: tuple[int, list[int]] | None = None

    def _record(self, k: int) -> Sample:
        epoch, pos = divmod(k, self.total)
        if self._perm is None or self._perm[0] != epoch:
            order = list(range(self.total))
            random.Random(f"records:{self.seed}:{epoch}").shuffle(order)
            self._perm = (epoch, order)
        i = self._perm[1][pos]
        for f, n in zip(self.files, self.sizes):
            if i < n:
                return f[i]
            i -= n
        raise AssertionError("index past the records")  # unreachable: i < total

    def __call__(self, g: int) -> Sample:
        n_synth = math.floor(g * self.ratio)
        if self.synth is not None and math.floor((g + 1) * self.ratio) > n_synth:
            return self.synth(n_synth)
        return self._record(g - n_synth)


class TextFile:
    """Plain-text jsonl as map-style samples."""

    def __init__(self, path: str | Path, tokenizer: TableTokenizer, max_len: int):
        self.texts, self.tokenizer, self.max_len = read_text_records(path), tokenizer, max_len

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> Sample:
        return encode_text(self.tokenizer, self.texts[i], self.max_len)


class SynthText:
    """Synthetic table text (the `data.tasks` views of random grids) for LM pretraining."""

    def __init__(self, data: DataConfig, tokenizer: TableTokenizer):
        self.data, self.tokenizer = data, tokenizer

    def __call__(self, index: int) -> Sample:
        synth_cfg = self.data.draw_configs(index)[0]
        table = synthesize(sample_rngs(self.data.seed, index)[0], synth_cfg)  # SynthSamples' grid
        task = self.data.draw_task("task", index)
        return encode_text(self.tokenizer, synth_answer(task, table), self.data.max_len)


class ShardSamples:
    """Pre-rendered samples (`data.shards`) by position k = 0, 1, ...: epoch after epoch over all
    shard samples, each epoch in a fresh shuffle seeded by (`data.seed`, epoch), so sample k is a
    pure function of k and a resumed run reads on exactly where it stopped. The task is drawn per
    k with `data.tasks`' weights. A sample whose sequence is over `data.max_len` is replaced by
    the next position's (logged)."""

    def __init__(
        self, data: DataConfig, tokenizer: TableTokenizer, n_image_tokens: int, reading: bool = False
    ):
        self.data, self.tokenizer, self.n_image_tokens, self.reading = (
            data,
            tokenizer,
            n_image_tokens,
            reading,
        )
        self.reader = ShardReader(expand_shards(data.shards))  # reads every header now: errors at start
        self._perm: tuple[int, list[int]] | None = None

    def __len__(self) -> int:
        return len(self.reader)

    def position(self, k: int) -> int:
        """The reader index of shard position k."""
        epoch, pos = divmod(k, len(self.reader))
        if self._perm is None or self._perm[0] != epoch:
            order = list(range(len(self.reader)))
            random.Random(f"shards:{self.data.seed}:{epoch}").shuffle(order)
            self._perm = (epoch, order)
        return self._perm[1][pos]

    def __call__(self, k: int) -> Sample:
        task = self.data.draw_task("shard-task", k)
        for attempt in range(MAX_ATTEMPTS):
            item = self.reader[self.position(k + attempt)]
            conv = [
                {"role": "user", "content": user_prompt(task)},
                {"role": "assistant", "content": synth_answer(task, item.table)},
            ]
            try:
                enc = encode_conversation(
                    self.tokenizer, conv, self.n_image_tokens, self.data.max_len, n_images=1
                )
            except DataError as e:
                logger.warning("shard sample %s (position %d) skipped: %s", item.key, k + attempt, e)
                continue
            sample = image_sample(
                item.table, item.rendered, enc, self.data.image_size, self.tokenizer, self.n_image_tokens,
                self.reading,
            )  # fmt: skip
            return {**sample, "index": k, "task": task, "shard_key": item.key}
        raise DataError(
            f"shard position {k}: {MAX_ATTEMPTS} samples in a row were over max_len={self.data.max_len} tokens"
        )


class SynthMix:
    """The synthetic stream with a share `ratio` of pre-rendered shard samples mixed in.

    Synthetic sample s is shard sample floor(s r) when floor((s+1) r) > floor(s r), else PIL
    sample s - floor(s r) (r = ratio): the same closed form as `SampleSource`, so both streams
    advance with the trainer's consumed count and resume exactly; at r = 0 it is the PIL stream."""

    def __init__(self, pil: Callable[[int], Sample], shards: Callable[[int], Sample], ratio: float):
        self.pil, self.shards, self.ratio = pil, shards, ratio

    def __call__(self, s: int) -> Sample:
        n_shard = math.floor(s * self.ratio)
        if math.floor((s + 1) * self.ratio) > n_shard:
            return self.shards(n_shard)
        return self.pil(s - n_shard)


class TrainStream(torch.utils.data.IterableDataset):
    """The one place samples are split among DDP ranks and DataLoader workers.

    Rank `rank` of `world_size` owns global samples g = j * world_size + rank, j = start, ...;
    its j-th sample is the j-th one the trainer consumes on that rank, whatever the worker count:
    DataLoader asks its workers for batches round-robin, so worker w of W makes the loader's
    batches w, w + W, ... each of `batch_size` consecutive j's. Hence ranks and workers never
    repeat each other's samples, the stream is the same with 0, 1 or 8 workers, and `start=c`
    resumes exactly after c consumed samples. `batch_size` must be the DataLoader's."""

    def __init__(self, source: SampleSource, rank: int, world_size: int, start: int, batch_size: int):
        self.source, self.rank, self.world_size = source, rank, world_size
        self.start, self.batch_size = start, batch_size

    def __iter__(self) -> Iterator[Sample]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        block = worker
        while True:  # the loader's batches worker, worker + W, ...
            for i in range(self.batch_size):
                j = self.start + block * self.batch_size + i
                yield self.source(j * self.world_size + self.rank)
            block += num_workers


def make_batch(samples: Sequence[Sample], pad_id: int, packing: bool, max_len: int, multiple: int) -> dict:
    """`pack` into rows of max_len tokens, or `collate` (right padding to a multiple)."""
    return pack(samples, max_len, pad_id) if packing else collate(samples, pad_id, multiple)
