"""A layout model's tables. A grid model (`output: grid`, the shipped one): one pass over the
prefix, then `tabvlm.layout_grid.assemble_grid` (`decode_grid`). A tags model: prefill the prefix
once, then grammar-constrained greedy tags, then each word to its cell (`decode_layout`).

The OTSL grammar keeps every output a rectangular, valid grid: the first row sets the width
(`nl` only after a full row afterwards), `lcel` needs an anchor or `lcel` to its left, `ucel`
the start of a cell above (an anchor or a `ucel`), and a `ucel` under a cell w slots wide is
followed by w - 1 `xcel`s, the only place `xcel` may appear; `end` only after a `nl`. A row or tag budget closes the table early (finish reason "length").
At the end each word goes to its best cell by the pointer (or to none): a cell's text is its
words joined in reading order; a fcel that gets no word is an empty cell.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import numpy as np
import torch

from tabvlm.data.layout import LayoutInputs, LayoutSample, LayoutTargets, collate_layout
from tabvlm.layout_grid import assemble_grid
from tabvlm.model.layout import BOS, TAG_ID, TAGS, LayoutModel, prefix_keys
from tabvlm.read.words import Word, join_words
from tabvlm.tables.grid import Cell, Table
from tabvlm.tables.otsl import parse_otsl, to_otsl

_F, _E, _L, _U, _X, _NL, _END = (TAG_ID[t] for t in TAGS)
_ANCHOR = (_F, _E)
_OTSL_TAG = re.compile(r"<(fcel|ecel|lcel|ucel|xcel|nl)>")


@dataclass
class LayoutResult:
    table: Table
    tags: list[str]
    word_fcels: list[int]  # per word: the index of its fcel among the fcel tags, -1 for none
    word_cells: list[int]  # per word: the index of its cell in table.cells, -1 for none
    finish_reason: str  # "stop" | "length"
    forced_at: int | None = None  # "length": the tag index from which the budget closed the table


class _Grammar:
    """One row's OTSL state: which tags may come next. Besides each tag's own neighbour rule, a
    `ucel` under a cell `w` slots wide must be followed by `w - 1` `xcel`s (the rectangle of a
    cell spanning rows and columns), and `xcel` appears nowhere else."""

    def __init__(self, max_cols: int):
        self.max_cols = max_cols
        self.width: int | None = None
        self.prev: list[int] = []  # the row above
        self.prev_span: list[
            int
        ] = []  # per slot of the row above: its cell's width if it starts there, else 0
        self.cur: list[int] = []
        self.xcels = 0  # xcel slots still owed by the last ucel
        self.rows = 0  # rows ended so far

    def allowed(self) -> list[bool]:
        ok = [False] * len(TAGS)
        c = len(self.cur)
        full = c == (self.width if self.width is not None else self.max_cols)
        if self.xcels:
            ok[_X] = True
            return ok
        if not full:
            ok[_F] = ok[_E] = True
            left = self.cur[-1] if c else None
            ok[_L] = left in (_F, _E, _L)
            ok[_U] = bool(self.prev) and self.prev_span[c] > 0
        ok[_NL] = c > 0 and (self.width is None or full)
        ok[_END] = c == 0 and bool(self.prev)
        return ok

    def push(self, tag: int) -> None:
        if tag == _NL:
            self.width = self.width or len(self.cur)
            self.prev_span = self._spans()
            self.prev, self.cur = self.cur, []
            self.rows += 1
        elif tag != _END:
            if tag == _U:
                self.xcels = self.prev_span[len(self.cur)] - 1
            elif tag == _X:
                self.xcels -= 1
            self.cur.append(tag)

    def _spans(self) -> list[int]:
        """The current row's `prev_span`: an anchor's width is itself plus its lcels; a ucel's
        is the width of the cell above (the same cell)."""
        spans = [0] * len(self.cur)
        for k, t in enumerate(self.cur):
            if t in _ANCHOR:
                w = 1
                while k + w < len(self.cur) and self.cur[k + w] == _L:
                    w += 1
                spans[k] = w
            elif t == _U:
                spans[k] = self.prev_span[k]
        return spans

    def fits(self, tag: int, left: int, max_rows: int) -> bool:
        """Whether the table can still end within `left` more tags, and `max_rows` rows, after `tag`."""
        if tag == _END:
            return True
        if tag == _NL:
            return self.rows + 1 <= max_rows and left >= 1
        c = len(self.cur) + 1  # the row's slots after this cell
        if self.rows + 1 > max_rows:  # this cell is in row rows+1
            return False
        return (self.width or c) - c + 2 <= left


def _collate_pages(inputs: list[LayoutInputs]) -> dict[str, torch.Tensor]:
    """A batch of pages to decode (their targets are placeholders)."""
    return collate_layout([LayoutSample(x, LayoutTargets([_END], [-1] * len(x.text_ids))) for x in inputs])


@torch.no_grad()
def decode_layout(
    model: LayoutModel, inputs: list[LayoutInputs], words: list[list[Word]], max_tags: int | None = None
) -> list[LayoutResult]:
    """Greedy, grammar-constrained decoding of a batch of pages (their inputs and words); a
    grid model's pages are assembled from its grid head instead (`decode_grid`)."""
    if model.config.output == "grid":
        return decode_grid(model, inputs, words, max_tags)
    cfg = model.config
    max_tags = min(max_tags or cfg.max_tags, cfg.max_tags)
    batch = _collate_pages(inputs)
    B = len(inputs)
    dev = next(model.parameters()).device
    batch = {k: v.to(dev) for k, v in batch.items()}
    prefix = model.embed_prefix(
        batch["pixels"],
        batch["boxes"],
        batch["text_ids"],
        batch["text_offsets"],
        batch["lines"],
        batch["bands"],
        batch["gaps"],
    )
    counts = model.hint_counts(batch["lines"], batch["bands"], batch["word_mask"])
    P = prefix.shape[1]
    W = batch["boxes"].shape[1]
    keys_prefix = prefix_keys(cfg.image_tokens, batch["word_mask"])
    cache = model.new_cache(B, P + max_tags)
    h = model.run(prefix, keys_prefix[:, None, None, :].expand(B, 1, P, P), cache)
    word_keys = model.pointer_keys(h[:, P - W :])  # (B,W,d)

    grammars = [_Grammar(cfg.max_cols) for _ in range(B)]
    out: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    forced: list[int | None] = [None] * B
    queries: list[torch.Tensor] = []  # per step (B,d): the state of each input position
    tag_in = torch.full((B, 1), BOS, dtype=torch.long, device=dev)
    rows = torch.zeros(B, 1, dtype=torch.long, device=dev)
    cols = torch.zeros(B, 1, dtype=torch.long, device=dev)
    rows_in, cols_in = rows, cols
    for step in range(max_tags):
        x = model.embed_tags(tag_in, rows, cols, counts, start=step)
        key_mask = torch.cat([keys_prefix, torch.ones(B, step + 1, dtype=torch.bool, device=dev)], 1)
        h = model.run(x, key_mask[:, None, None, :], cache)
        queries.append(model.pointer_queries(h[:, :1], rows_in, cols_in)[:, 0])
        logits = model.tag_head(h[:, 0])  # (B, n_tags)
        nxt = []
        for b in range(B):
            if done[b]:
                nxt.append(_END)
                continue
            g = grammars[b]
            ok = g.allowed()
            fits = [o and g.fits(t, max_tags - step - 1, cfg.max_rows) for t, o in enumerate(ok)]
            if fits != ok and forced[b] is None:
                forced[b] = step
            ok = fits
            masked = logits[b].masked_fill(~torch.tensor(ok, device=dev), float("-inf"))
            t = int(masked.argmax())
            out[b].append(t)
            g.push(t)
            done[b] = t == _END
            nxt.append(t)
        if all(done):
            break
        tag_in = torch.tensor(nxt, device=dev)[:, None]
        rows_in, cols_in = rows, cols  # the slot the tag just written sits in
        rows = torch.tensor([o.count(_NL) for o in out], device=dev)[:, None]
        cols = torch.tensor([len(g.cur) for g in grammars], device=dev)[:, None]

    q = torch.stack(queries, 1)  # (B, steps, d): input position p holds tag out[p-1]
    results = []
    for b in range(B):
        fcel_pos = [p + 1 for p, t in enumerate(out[b]) if t == _F and p + 1 < q.shape[1]]
        n = len(words[b])
        cells = [-1] * n
        if n and fcel_pos:
            cand = torch.cat([q[b, fcel_pos], model.none_query()[None]], 0)  # (K+1, d)
            best = (word_keys[b, :n] @ cand.T).argmax(-1).tolist()
            cells = [k if k < len(fcel_pos) else -1 for k in best]
        finish = "stop" if forced[b] is None else "length"
        table, word_cells = _assemble(out[b], words[b], cells)
        tags = [TAGS[t] for t in out[b]]
        results.append(LayoutResult(table, tags, cells, word_cells, finish, forced[b]))
    return results


def _assemble(tags: list[int], words: list[Word], fcels: list[int]) -> tuple[Table, list[int]]:
    """The grid of `tags` with each fcel's words (in reading order) as its text, and each word's
    cell as an index in the grid's cells (-1 for none)."""
    texts: dict[int, list[str]] = {}
    for w, k in zip(words, fcels):
        if k >= 0:
            texts.setdefault(k, []).append(w.text)
    parts, anchors, r, c = [], [], 0, 0
    for t in tags:
        if t == _F:
            parts.append("<fcel>" + html.escape(join_words(texts.get(len(anchors), [])), quote=False))
            anchors.append((r, c))
        elif t != _END:
            parts.append(f"<{TAGS[t]}>")
        r, c = (r + 1, 0) if t == _NL else (r, c + 1)
    table = parse_otsl("".join(parts))
    index = {(cell.row, cell.col): i for i, cell in enumerate(table.cells)}
    return table, [index.get(anchors[k], -1) if k >= 0 else -1 for k in fcels]


@torch.no_grad()
def decode_grid(
    model: LayoutModel, inputs: list[LayoutInputs], words: list[list[Word]], max_tags: int | None = None
) -> list[LayoutResult]:
    """A grid model's tables: one pass over each page's prefix, then `assemble_grid` (no tags are
    decoded; `tags` holds the OTSL of the assembled grid). `max_tags` (a request's budget, as
    for a tags model, the `end` tag included) keeps the first rows whose tags fit, at least one,
    with finish reason "length"."""
    results = []
    for x, ws, page_logits in zip(inputs, words, grid_page_logits(model, inputs)):
        n = len(ws)
        table, cells = assemble_grid(ws, x.lines.tolist(), x.bands.tolist(), page_logits)
        finish = "stop"
        if max_tags is not None and table.n_rows * (table.n_cols + 1) + 1 > max_tags:
            table, cells = _first_rows(table, cells, max(1, (max_tags - 1) // (table.n_cols + 1)))
            finish = "length"
        results.append(LayoutResult(table, _OTSL_TAG.findall(to_otsl(table)), [-1] * n, cells, finish))
    return results


@torch.no_grad()
def grid_page_logits(model: LayoutModel, inputs: list[LayoutInputs]) -> list[np.ndarray]:
    """A grid model's (W, GRID_LOGITS) logits for each page, in one batch."""
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
