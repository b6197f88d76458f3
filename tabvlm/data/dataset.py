"""From images and conversations to training batches: preprocess, loss masks, collate, packing.

Two sources feed the trainer through the same sample format:
- `JsonlDataset`: canonical jsonl records (user data), map-style.
- `SynthSamples`: synthetic sample i of a seed, synthesized and rendered on the fly: the same
  image and target as `tabvlm synth`'s sample i (`tabvlm.data.render.make_sample`). How the
  indices are split among ranks and workers is `tabvlm.train.data.TrainStream`'s job.

A sample is a dict:
  pixel_values  (n_images, 3, S, S) float32 in [-1, 1]   (n_images is 0 or 1 here; made by
                `tabvlm.image`, as in inference: file -> load_image -> preprocess_image)
  input_ids     (T,) int64
  labels        (T,) int64: -100 except the assistant turns' content tokens and their `<|im_end|>`
`collate` pads samples into a batch; `pack` concatenates several samples into each row instead.

How the model finds the images: each image's place in the token sequence is a run of
`n_image_tokens` `<|image_pad|>` tokens, and the splice fills those tokens in order across the
whole batch (row-major). So `pixel_values` always lists the images in the order their pad runs
appear in `input_ids` read row by row: one per sample for `collate`, several per row for `pack`.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from tabvlm.data.fonts import FontSet, discover_fonts
from tabvlm.data.reading import reading_targets, stack_reading
from tabvlm.data.records import read_records
from tabvlm.data.render import (
    RenderConfig,
    Rendered,
    Variant,
    draw_variant,
    render,
    resolve_variants,
    sample_rngs,
    variants_need_cjk,
)
from tabvlm.data.synth import SynthConfig, synthesize
from tabvlm.errors import ConfigError, DataError, TabVLMError
from tabvlm.image import load_image, preprocess_image
from tabvlm.tables.grid import Table
from tabvlm.tasks import IMAGE_PLACEHOLDER, WRITABLE_TASKS, get_task, user_prompt
from tabvlm.tokenizer import IGNORE_INDEX, TableTokenizer

logger = logging.getLogger(__name__)


Sample = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Conversations -> token ids + loss mask
# ---------------------------------------------------------------------------------------------


def encode_conversation(
    tokenizer: TableTokenizer,
    conversations: Sequence[dict[str, str]],
    n_image_tokens: int,
    max_len: int,
    n_images: int | None = None,
) -> dict[str, torch.Tensor]:
    """Chat-template a conversation and mask the loss to what the assistant says.

    Returns `input_ids` (T,) and `labels` (T,) int64 with `labels[t] = input_ids[t]` on every
    assistant turn's content tokens and on the `<|im_end|>` closing it (so the model learns to
    stop), and -100 everywhere else: system/user turns, the `<|im_start|>assistant\\n` headers,
    the image tokens, the newline after `<|im_end|>`. Labels are aligned with `input_ids` (not
    shifted); the model shifts them.

    The text comes from `tokenizer.chat_prompt`; each `<image>` becomes `n_image_tokens`
    `<|image_pad|>` tokens via `tokenizer.expand_image`. The text is encoded piece by piece
    (context up to and including each assistant header, then the answer), so an answer's tokens
    are exactly what generation after the `<|im_start|>assistant\\n` prompt would produce.

    `n_images`: when given, the number of `<image>` placeholders must equal it (a record with one
    image and no placeholder, or two, would break the splice later).
    Raises DataError when the sequence is longer than `max_len`. It is never truncated: cutting
    the answer would teach a wrong table, cutting the image tokens would break the splice.
    """
    msgs = [{"role": m["role"], "content": m["content"]} for m in conversations]
    if not any(m["role"] == "assistant" for m in msgs):
        raise DataError("conversation has no assistant turn; nothing to learn from")
    found = sum(m["content"].count(IMAGE_PLACEHOLDER) for m in msgs)
    if n_images is not None and found != n_images:
        raise DataError(f"expected {n_images} {IMAGE_PLACEHOLDER} placeholder(s), found {found}")
    if any(IMAGE_PLACEHOLDER in m["content"] for m in msgs if m["role"] == "assistant"):
        raise DataError(f"an assistant turn contains {IMAGE_PLACEHOLDER}; images belong to user turns")
    end_tok = tokenizer.id_to_token(tokenizer.eos_id)  # "<|im_end|>"

    ids: list[int] = []
    labels: list[int] = []
    done = ""  # chat text encoded so far

    def context(text: str) -> None:  # masked text
        piece = tokenizer.encode(tokenizer.expand_image(text, n_image_tokens)) if text else []
        ids.extend(piece)
        labels.extend([IGNORE_INDEX] * len(piece))

    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        head = tokenizer.chat_prompt(msgs[:i], add_generation_prompt=True)  # ends "...assistant\n"
        full = tokenizer.chat_prompt(msgs[: i + 1], add_generation_prompt=False)
        answer = m["content"] + end_tok
        if not (head.startswith(done) and full.startswith(head) and full[len(head) :].startswith(answer)):
            raise TabVLMError(f"the tokenizer's chat template does not nest around turn {i} (assistant)")
        context(head[len(done) :])
        piece = tokenizer.encode(answer)
        ids.extend(piece)
        labels.extend(piece)
        done = head + answer
    context(tokenizer.chat_prompt(msgs, add_generation_prompt=False)[len(done) :])

    if len(ids) > max_len:
        raise DataError(f"sequence has {len(ids)} tokens, more than max_len={max_len}")
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
    }


# ---------------------------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------------------------


def _stack_images(samples: Sequence[Sample]) -> torch.Tensor | None:
    """All samples' images in order, (N_images, 3, S, S); None when there are none."""
    images = [s["pixel_values"] for s in samples if s["pixel_values"].shape[0] > 0]
    return torch.cat(images) if images else None


def collate(samples: Sequence[Sample], pad_id: int, pad_to_multiple_of: int = 1) -> dict[str, Any]:
    """Right-pad samples into a training batch.

    Returns input_ids (B, T) padded with `pad_id`, attention_mask (B, T) int64 (1 = real token),
    labels (B, T) with -100 on padding, pixel_values (N_images, 3, S, S) (N_images = B when every
    sample has one image; None for a text-only batch). T is the longest sample rounded up to
    `pad_to_multiple_of` (a few fixed lengths keep `torch.compile` from recompiling every step).
    """
    if not samples:
        raise DataError("collate got no samples")
    longest = max(len(s["input_ids"]) for s in samples)
    t = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    b = len(samples)
    input_ids = torch.full((b, t), pad_id, dtype=torch.long)
    labels = torch.full((b, t), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((b, t), dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s["input_ids"])
        input_ids[i, :n] = s["input_ids"]
        labels[i, :n] = s["labels"]
        attention_mask[i, :n] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "pixel_values": _stack_images(samples),
        "reading": stack_reading(samples),
    }


def pack(samples: Sequence[Sample], max_len: int, pad_id: int) -> dict[str, Any]:
    """Pack samples into as few rows of exactly `max_len` tokens as first-fit allows.

    Returns the `collate` keys plus segment_ids (R, max_len) int64: 1, 2, ... for the samples of
    a row in order, 0 on the padding at the row's end. The model attends only within a segment
    and restarts positions at each one, so packed samples never see each other; labels stay
    aligned with their own tokens (each segment's labels are its sample's, unshifted). The
    number of rows R <= len(samples) varies with the lengths; every row has the fixed width.
    pixel_values lists the images row by row, left to right (the order of their pad runs).
    First-fit keeps the samples' order inside each row, so the packing is deterministic.
    """
    rows: list[list[Sample]] = []
    room: list[int] = []
    for s in samples:
        n = len(s["input_ids"])
        if n > max_len:
            raise DataError(f"sample has {n} tokens, more than the packing length {max_len}")
        for r, free in enumerate(room):
            if n <= free:
                rows[r].append(s)
                room[r] -= n
                break
        else:
            rows.append([s])
            room.append(max_len - n)
    shape = (len(rows), max_len)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    segment_ids = torch.zeros(shape, dtype=torch.long)
    for r, row in enumerate(rows):
        pos = 0
        for k, s in enumerate(row, start=1):
            n = len(s["input_ids"])
            input_ids[r, pos : pos + n] = s["input_ids"]
            labels[r, pos : pos + n] = s["labels"]
            segment_ids[r, pos : pos + n] = k
            pos += n
    return {
        "input_ids": input_ids,
        "attention_mask": (segment_ids > 0).long(),
        "labels": labels,
        "segment_ids": segment_ids,
        "pixel_values": _stack_images([s for row in rows for s in row]),
        "reading": stack_reading([s for row in rows for s in row]),
    }


# ---------------------------------------------------------------------------------------------
# Jsonl records (map-style)
# ---------------------------------------------------------------------------------------------


class JsonlDataset(torch.utils.data.Dataset):
    """Canonical jsonl records (see `tabvlm.data.records`) as training samples; records keep
    their own prompts (table, formula, chart, OCR, text-only).

    Records are parsed when the dataset is built; images are opened and tokens counted per item.
    `on_error`:
    - "raise": a bad line, a corrupt image or a sequence over `max_len` raises DataError with
      file:line.
    - "skip": bad lines are dropped when reading; a bad item at index i is logged (file:line and
      why) and replaced by the next good one (i+1, i+2, ... wrapping), so what index i yields is a
      pure function of the file: the same in every worker, run and epoch.
    """

    def __init__(
        self,
        path: str | Path,
        tokenizer: TableTokenizer,
        image_size: int,
        n_image_tokens: int,
        max_len: int,
        on_error: Literal["raise", "skip"] = "raise",
    ):
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"on_error: expected 'raise' or 'skip', found {on_error!r}")
        self.path = Path(path)
        self.tokenizer, self.image_size = tokenizer, image_size
        self.n_image_tokens, self.max_len, self.on_error = n_image_tokens, max_len, on_error
        errors: list[DataError] | None = [] if on_error == "skip" else None
        self.records = list(read_records(self.path, errors=errors))
        for e in errors or []:
            logger.warning("skipped record: %s", e)
        if not self.records:
            raise DataError("no usable record", str(self.path))

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> Sample:
        """Sample of record `index`; DataError (file:line) when its image or length is bad."""
        rec = self.records[index]
        n_images = 0 if rec.image is None else 1
        try:
            enc = encode_conversation(
                self.tokenizer, rec.conversations, self.n_image_tokens, self.max_len, n_images=n_images
            )
        except DataError as e:
            raise DataError(e.reason, rec.file, rec.line) from e
        if rec.image is None:
            pixel_values = torch.empty(0, 3, self.image_size, self.image_size)
        else:
            try:
                img = load_image(rec.image)  # RGB, EXIF orientation applied
            except DataError as e:
                raise DataError(str(e), rec.file, rec.line) from e
            pixel_values = preprocess_image(img, self.image_size)[None]  # (1, 3, S, S)
        return {"pixel_values": pixel_values, **enc}

    def __getitem__(self, index: int) -> Sample:
        n = len(self.records)
        if not -n <= index < n:  # IndexError also ends plain iteration over the dataset
            raise IndexError(f"index {index} out of range for {n} records")
        for k in range(n):
            try:
                return self.load((index + k) % n)
            except DataError as e:
                if self.on_error == "raise":
                    raise
                logger.warning("skipped record: %s", e)
        raise DataError("every record failed to load", str(self.path))


# ---------------------------------------------------------------------------------------------
# Synthetic tables, streamed
# ---------------------------------------------------------------------------------------------


def synth_answer(task: str, table: Table) -> str:
    """The assistant turn of a synthetic sample: `table` written as `task` asks."""
    write = get_task(task).write
    assert write is not None  # DataConfig admits only WRITABLE_TASKS
    return write(table)


MAX_ATTEMPTS = 16  # redraws of one sample index whose sequence is over max_len


@dataclass
class DataConfig:
    """Knobs of the training data: synthetic tables, their rendering, the task mix, lengths.

    `image_size` must equal the model's `vision.image_size`, and the image-token count passed to
    the datasets its `ModelConfig.image_tokens`.
    """

    synth: SynthConfig = field(default_factory=SynthConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    # Task -> weight for synthetic samples (normalised); answers come from the task's writer
    # (tabvlm.tasks.TASKS: html, otsl, markdown).
    tasks: dict[str, float] = field(default_factory=lambda: {"html": 1.0})
    image_size: int = 512
    max_len: int = 2048  # tokens per sample, image tokens included; longer ones are redrawn
    seed: int = 0
    # Pre-rendered samples (`tabvlm synth --shard-size`, tabvlm.data.shards): globs of .tar shards,
    # and the share of synthetic samples taken from them instead of drawn by PIL (0: none).
    shards: list[str] = field(default_factory=list)
    shard_ratio: float = 0.0
    # Shares of the drawn samples made with other synth/render settings (a curriculum: small,
    # large-text tables teach reading); the rest use `synth` and `render`. See `Variant`.
    variants: list[Variant] = field(default_factory=list)

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in WRITABLE_TASKS]
        if unknown:
            raise ConfigError(
                f"data.tasks: unknown synthetic task(s) {unknown}; known: {', '.join(WRITABLE_TASKS)}"
            )
        weights = list(self.tasks.values())
        if not weights or any(not isinstance(w, (int, float)) or w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(
                f"data.tasks: expected non-negative weights with a positive sum, found {self.tasks}"
            )
        if not 0.0 <= self.shard_ratio <= 1.0:  # also false for nan
            raise ConfigError(f"data.shard_ratio: expected a share in [0, 1], found {self.shard_ratio}")
        if self.shard_ratio > 0 and not self.shards:
            raise ConfigError("data.shard_ratio > 0 but data.shards is empty: name the shard files (globs)")
        if self.image_size < 1 or self.max_len < 1:
            raise ConfigError(
                f"data: image_size and max_len must be >= 1, found {self.image_size}, {self.max_len}"
            )
        self._choices = resolve_variants(self.synth, self.render, self.variants, "data.variants")

    @property
    def needs_cjk(self) -> bool:
        """Whether any drawn sample can hold Chinese text."""
        return variants_need_cjk(self._choices)

    def draw_configs(self, index: int) -> tuple[SynthConfig, RenderConfig]:
        """The synth and render settings of drawn sample `index` (`variants`' share)."""
        return draw_variant(self.seed, index, self._choices)

    def draw_task(self, stream: str, index: int) -> str:
        """The task of sample `index` of `stream` ("task" for drawn samples, "shard-task" for shard
        positions): drawn from `tasks`' weights by its own generator, seeded by (stream, seed, index)."""
        names = [t for t, w in self.tasks.items() if w > 0]
        weights = [self.tasks[t] for t in names]
        return random.Random(f"{stream}:{self.seed}:{index}").choices(names, weights)[0]


def image_sample(
    table: Table,
    drawn: Rendered,
    enc: dict[str, torch.Tensor],
    image_size: int,
    tokenizer: TableTokenizer,
    n_image_tokens: int,
    reading: bool,
) -> Sample:
    """A training sample from a drawn grid and its encoded conversation (`encode_conversation`):
    the image preprocessed as in inference, and with `reading` the dense reading targets."""
    pixel_values = preprocess_image(drawn.image, image_size)[None]  # (1, 3, S, S)
    sample = {"pixel_values": pixel_values, **enc}
    if reading:
        grid = math.isqrt(n_image_tokens)
        cell_tokens = tokenizer.encode_batch([c.text for c in table.cells])
        sample["reading"] = reading_targets(drawn, table, image_size, grid, cell_tokens)
    return sample


class SynthSamples:
    """Synthetic sample `index` of `cfg.seed`: `make_sample`'s grid and drawing (so the image is
    byte for byte `tabvlm synth`'s, whose jsonl holds the same html target), asked as a task
    drawn from `cfg.tasks` with its own generator. A sample whose sequence is over `cfg.max_len`
    is redrawn with the next attempt's generators (logged), so every index yields."""

    def __init__(
        self,
        cfg: DataConfig,
        tokenizer: TableTokenizer,
        n_image_tokens: int,
        *,
        fonts: FontSet | None = None,
        reading: bool = False,
    ):
        self.cfg, self.tokenizer, self.n_image_tokens = cfg, tokenizer, n_image_tokens
        self.reading = reading  # also give each sample its dense reading targets (tabvlm.data.reading)
        # Found once here, so a missing CJK font stops the run at start, not inside a worker.
        self.fonts = (
            fonts
            if fonts is not None
            else discover_fonts(cfg.render.font_dirs, cfg.render.use_system_fonts, need_cjk=cfg.needs_cjk)
        )

    def __call__(self, index: int) -> Sample:
        """The sample at global `index` (also carries `index` and `task`)."""
        task = self.cfg.draw_task("task", index)
        synth_cfg, render_cfg = self.cfg.draw_configs(index)
        for attempt in range(MAX_ATTEMPTS):
            grid_rng, draw_rng = sample_rngs(self.cfg.seed, index, attempt)
            table = synthesize(grid_rng, synth_cfg)
            conv = [
                {"role": "user", "content": user_prompt(task)},
                {"role": "assistant", "content": synth_answer(task, table)},
            ]
            try:  # tokens before pixels: a sample that is too long costs no rendering
                enc = encode_conversation(
                    self.tokenizer, conv, self.n_image_tokens, self.cfg.max_len, n_images=1
                )
            except DataError as e:
                logger.warning("synthetic sample %d, attempt %d redrawn: %s", index, attempt, e)
                continue
            drawn = render(table, draw_rng, render_cfg, self.fonts)
            sample = image_sample(table, drawn, enc, self.cfg.image_size, self.tokenizer, self.n_image_tokens,
                                  self.reading)  # fmt: skip
            return {**sample, "index": index, "task": task}
        raise DataError(
            f"synthetic sample {index}: {MAX_ATTEMPTS} draws were all over max_len={self.cfg.max_len} "
            "tokens; raise data.max_len or shrink synth.rows / synth.cols"
        )
