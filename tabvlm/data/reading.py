"""Dense reading targets: which characters lie under each image token, and which cell it is in.

A vision tower trained from scratch gets almost no gradient through the LM until it already
sees glyphs (the diagnosis in docs/BENCHMARKS.md): the LM learns the answers' text prior and
ignores the image. The renderer knows exactly where every character is, so a synthetic sample
can also say, for each image token (a square of the fitted image): the characters whose centres
fall in it, and the (row, column) of the cell whose box holds its centre. `train.reading_loss`
turns these into an auxiliary loss on the image tokens (tabvlm.train.reading), which teaches the
tower glyphs from the first step; the shipped model never sees the head.

Targets of one image, for a token grid of g x g (row-major, as the image tokens):
  chars (g*g, N_CHAR_CLASSES) uint8  multi-hot
  row, col (g*g,) int64              clipped to MAX_INDEX - 1; -100 where no cell is
  tokens (g*g, MAX_CELL_TOKENS) int64 the LM tokens of that cell's text; -100 padded
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tabvlm.data.render import Rendered
from tabvlm.tables.grid import Table
from tabvlm.tokenizer import IGNORE_INDEX

# Character classes: the 94 printable ASCII characters but space, then the 3,518 Chinese
# characters that are single tokens of the shipped tokenizer (assets/reading_chars.txt, in token
# id order: BPE merges, roughly by frequency; 99.9% of the Chinese characters the generator
# draws), then one class for all others.
CJK_CHARS = (Path(__file__).parents[1] / "assets" / "reading_chars.txt").read_text(encoding="utf-8").strip()
_CJK_CLASS = {ch: 94 + i for i, ch in enumerate(CJK_CHARS)}
N_CHAR_CLASSES = 94 + len(CJK_CHARS) + 1
MAX_INDEX = 32  # row and column classes; deeper indices share the last
MAX_CELL_TOKENS = 4  # LM tokens of a cell's text kept as an image token's targets


def char_class(ch: str) -> int:
    """The class of one character: printable ASCII by code point, then the listed Chinese
    characters, anything else the last class."""
    o = ord(ch)
    if 33 <= o <= 126:
        return o - 33
    return _CJK_CLASS.get(ch, N_CHAR_CLASSES - 1)


def reading_targets(
    rendered: Rendered,
    table: Table,
    image_size: int,
    grid: int,
    cell_tokens: Sequence[Sequence[int]],
) -> dict[str, torch.Tensor]:
    """Targets for `rendered` (a drawing of `table`) after `fit_image(.., image_size)`, on a
    `grid` x `grid` token grid; `cell_tokens` holds each cell's text as LM token ids."""
    w, h = rendered.image.size
    scale = image_size / max(w, h)  # fit_image: longer side to image_size, table at the top left
    side = image_size / grid / scale  # a token's side, in the drawing's pixels
    chars = np.zeros((grid, grid, N_CHAR_CLASSES), np.uint8)
    for ch, (x0, y0, x1, y1) in rendered.glyph_boxes:
        gx, gy = int((x0 + x1) / 2 // side), int((y0 + y1) / 2 // side)
        if 0 <= gx < grid and 0 <= gy < grid:
            chars[gy, gx, char_class(ch)] = 1
    row = np.full((grid, grid), IGNORE_INDEX, np.int64)
    col = np.full((grid, grid), IGNORE_INDEX, np.int64)
    tokens = np.full((grid, grid, MAX_CELL_TOKENS), IGNORE_INDEX, np.int64)
    centres = (np.arange(grid) + 0.5) * side
    for i, (cell, (x0, y0, x1, y1)) in enumerate(zip(table.cells, rendered.cell_boxes)):
        ys = np.flatnonzero((centres >= y0) & (centres < y1))
        xs = np.flatnonzero((centres >= x0) & (centres < x1))
        if len(ys) and len(xs):
            area = (slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
            row[area] = min(cell.row, MAX_INDEX - 1)
            col[area] = min(cell.col, MAX_INDEX - 1)
            if cell_tokens[i]:
                ids = list(cell_tokens[i])[:MAX_CELL_TOKENS]
                tokens[area + (slice(0, len(ids)),)] = ids
    return {
        "chars": torch.from_numpy(chars.reshape(grid * grid, N_CHAR_CLASSES)),
        "row": torch.from_numpy(row.reshape(-1)),
        "col": torch.from_numpy(col.reshape(-1)),
        "tokens": torch.from_numpy(tokens.reshape(grid * grid, MAX_CELL_TOKENS)),
    }


def stack_reading(samples: Sequence[dict]) -> dict[str, torch.Tensor] | None:
    """The reading targets of every image of `samples` in order, (N_images, ...), with `has`
    (N_images,) marking the images that have targets (records from jsonl files have none);
    None when no sample has any."""
    with_image = [s for s in samples if s["pixel_values"].shape[0] > 0]
    present = [s["reading"] for s in with_image if "reading" in s]
    if not present:
        return None
    n_tokens = present[0]["row"].shape[0]
    empty = {
        "chars": torch.zeros(n_tokens, N_CHAR_CLASSES, dtype=torch.uint8),
        "row": torch.full((n_tokens,), IGNORE_INDEX, dtype=torch.long),
        "col": torch.full((n_tokens,), IGNORE_INDEX, dtype=torch.long),
        "tokens": torch.full((n_tokens, MAX_CELL_TOKENS), IGNORE_INDEX, dtype=torch.long),
    }
    parts = [s.get("reading", empty) for s in with_image]
    out = {k: torch.stack([p[k] for p in parts]) for k in empty}
    out["has"] = torch.tensor([float("reading" in s) for s in with_image])
    return out
