"""Align a reader's words with a table's cells by their text: layout targets for user records
that carry only an image and its HTML (the PaddleOCR-VL fine-tuning case), where no renderer
says which word lies in which cell.

Two passes. (1) A monotonic alignment (dynamic programming, as in sequence alignment) of the
words in reading order against the cells' tokens in row-major order, scored by rapidfuzz's
similarity of the two texts: most tables read row by row, cell by cell, so this places nearly
every word. (2) A word left over (a cell's second line, read after its neighbours' first lines)
goes to the cell with an unclaimed token most like it, preferring cells whose placed words lie
near it. A word like no token stays outside the table (-1), as a caption would.
`tabvlm.data.align` is measured on synthetic tables, where the truth is known: `bench/align_accuracy.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rapidfuzz import fuzz
from rapidfuzz.process import cdist

from tabvlm.read.words import Word, split_text
from tabvlm.tables.grid import Table

MIN_SIMILARITY = 0.6  # below this a word and a token are not the same text


def _cell_tokens(table: Table) -> tuple[list[str], list[int]]:
    """The cells' tokens in row-major order (the reader's unit: Latin words, CJK characters) and
    each token's cell index."""
    order = sorted(range(len(table.cells)), key=lambda i: (table.cells[i].row, table.cells[i].col))
    tokens, cells = [], []
    for i in order:
        for tok in split_text(table.cells[i].text):
            tokens.append(tok)
            cells.append(i)
    return tokens, cells


def align_words(words: Sequence[Word], table: Table) -> list[int]:
    """For each word, the index of its cell in `table.cells`, or -1 (see the module docstring)."""
    tokens, tok_cell = _cell_tokens(table)
    n, m = len(words), len(tokens)
    if not n or not m:
        return [-1] * n
    # A merged word ("12 345") is compared by its first piece; the DP skips what it cannot match.
    texts = [w.text.split()[0] if w.text.split() else w.text for w in words]
    sim = cdist(texts, tokens, scorer=fuzz.ratio, dtype=np.float32) / 100.0  # (n, m)
    gain = np.where(sim >= MIN_SIMILARITY, sim, -1.0)
    # DP over (words, tokens): best total similarity of a monotonic matching.
    score = np.zeros((n + 1, m + 1), np.float32)
    for i in range(1, n + 1):
        row, prev, g = score[i], score[i - 1], gain[i - 1]
        row[1:] = np.maximum(prev[1:], prev[:-1] + g)
        np.maximum.accumulate(row, out=row)  # skipping tokens costs nothing
    out = [-1] * n
    used = np.zeros(m, bool)
    i, j = n, m
    while i > 0 and j > 0:
        if score[i, j] == score[i - 1, j]:
            i -= 1
        elif score[i, j] == score[i, j - 1]:
            j -= 1
        else:
            out[i - 1] = tok_cell[j - 1]
            used[j - 1] = True
            i, j = i - 1, j - 1
    _place_leftovers(words, out, sim, used, tok_cell)
    return out


def _place_leftovers(
    words: Sequence[Word], out: list[int], sim: np.ndarray, used: np.ndarray, tok_cell: list[int]
) -> None:
    """Pass 2: each unplaced word to the unclaimed token most like it, nearer cells first."""
    centres: dict[int, list[tuple[float, float]]] = {}
    for w, c in zip(words, out):
        if c >= 0:
            centres.setdefault(c, []).append(((w.box[0] + w.box[2]) / 2, (w.box[1] + w.box[3]) / 2))
    for k, w in enumerate(words):
        if out[k] >= 0:
            continue
        h = max(1.0, w.box[3] - w.box[1])
        cx, cy = (w.box[0] + w.box[2]) / 2, (w.box[1] + w.box[3]) / 2
        best, best_score = -1, 0.0
        for j in np.flatnonzero((sim[k] >= MIN_SIMILARITY) & ~used):
            c = tok_cell[j]
            near = min((abs(x - cx) + abs(y - cy) for x, y in centres.get(c, [])), default=50 * h)
            s = float(sim[k, j]) - 0.01 * near / h  # a line below its cell's first line is ~1-2 h away
            if s > best_score:
                best, best_score = j, s
        if best >= 0:
            used[best] = True
            out[k] = tok_cell[best]


def cells_by_overlap(words: Sequence[Word], truth: Sequence[Word], truth_cells: Sequence[int]) -> list[int]:
    """Each reader word's cell where the true words and their cells are known (a rendered page):
    the cell (or -1, outside the table) whose true words its box covers most. A word that covers
    no true word (a speck read as text) is outside."""
    if not words or not truth:
        return [-1] * len(words)
    a = np.asarray([w.box for w in words], np.float64)[:, None, :]
    b = np.asarray([w.box for w in truth], np.float64)[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    area = iw * ih  # (W, T)
    labels = np.asarray(truth_cells)
    keys = np.unique(labels)
    by_cell = np.stack([area[:, labels == k].sum(1) for k in keys], 1)  # (W, K)
    best = by_cell.argmax(1)
    return [int(keys[j]) if by_cell[i, j] > 0 else -1 for i, j in enumerate(best)]
