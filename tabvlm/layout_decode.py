"""A layout model's tables: one pass over each page's prefix (image and words), then
`tabvlm.layout_grid.assemble_grid` turns each word's grid logits into the table and the words'
cells (`decode_grid`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tabvlm.data.layout import LayoutInputs, LayoutSample, LayoutTargets, collate_layout
from tabvlm.layout_grid import assemble_grid
from tabvlm.model.layout import LayoutModel
from tabvlm.read.words import Word
from tabvlm.tables.grid import Cell, Table
from tabvlm.tables.otsl import otsl_tags


@dataclass
class LayoutResult:
    table: Table
    tags: list[str]  # the OTSL tags of `table` (its size in tags: rows x (columns + 1))
    word_cells: list[int]  # per word: the index of its cell in table.cells, -1 for none
    finish_reason: str  # "stop" | "length"


def _collate_pages(inputs: list[LayoutInputs]) -> dict[str, torch.Tensor]:
    """A batch of pages to decode (no targets)."""
    return collate_layout([LayoutSample(x, LayoutTargets()) for x in inputs])


@torch.no_grad()
def decode_grid(
    model: LayoutModel, inputs: list[LayoutInputs], words: list[list[Word]], max_tags: int | None = None
) -> list[LayoutResult]:
    """The tables of a batch of pages (their inputs and words): one pass over each page's prefix,
    then `assemble_grid` (no tags are decoded; `tags` holds the OTSL of the assembled grid).
    `max_tags` (a request's budget in OTSL tags, an `end` tag included) keeps the first rows
    whose tags fit, at least one, with finish reason "length"."""
    results = []
    for x, ws, page_logits in zip(inputs, words, grid_page_logits(model, inputs)):
        table, cells = assemble_grid(ws, x.lines.tolist(), x.bands.tolist(), page_logits)
        finish = "stop"
        if max_tags is not None and table.n_rows * (table.n_cols + 1) + 1 > max_tags:
            table, cells = _first_rows(table, cells, max(1, (max_tags - 1) // (table.n_cols + 1)))
            finish = "length"
        results.append(LayoutResult(table, otsl_tags(table), cells, finish))
    return results


@torch.no_grad()
def grid_page_logits(model: LayoutModel, inputs: list[LayoutInputs]) -> list[np.ndarray]:
    """The model's (W, GRID_LOGITS) logits for each page, in one batch."""
    batch = _collate_pages(inputs)
    dev = next(model.parameters()).device
    logits = model.grid_logits(**{k: v.to(dev) for k, v in batch.items()}).float().cpu().numpy()
    return [logits[b, : len(x.text_ids)] for b, x in enumerate(inputs)]


def _first_rows(table: Table, word_cells: list[int], rows: int) -> tuple[Table, list[int]]:
    """The first `rows` rows of `table` (spans cut at the last row) and the words' cells in it
    (-1 for a word whose cell was cut away)."""
    keep = [k for k, c in enumerate(table.cells) if c.row < rows]
    new_index = {k: i for i, k in enumerate(keep)}
    cells = [
        Cell(c.text, c.row, c.col, min(c.rowspan, rows - c.row), c.colspan)
        for c in (table.cells[k] for k in keep)
    ]
    cut = Table(rows, table.n_cols, cells, min(table.header_rows, rows))
    return cut, [new_index.get(k, -1) if k >= 0 else -1 for k in word_cells]
