"""The grid head: the geometric first guess of the grid, corrected word by word.

`tabvlm.data.layout.grid_hints` cuts a page's words into visual lines and column bands. Real
tables are mostly that grid, wrong in known ways: a cell's second line is not a new row, a gap
inside a column is not a new column, a header spans columns, a row header spans rows, a caption
is not part of the table. The grid head says, for every word:

    row_start  does its line start a new row (or continue the row above: a multi-line cell)?
    col_start  does its band start a new column (or continue the band to its left)?
    outside    is it text outside the table (caption, note, page text)?
    up, down, left, right   how many rows / columns its cell reaches beyond the word's own
               (0 .. SPAN_CLASSES - 1)

A line's decision is the mean of its words' logits, as is a band's; a cell's spans are the sum of
its words' log-probabilities. The decisions are dense (every word, every step) and anchored on
geometry, so a small model learns them from synthetic tables in a CPU session, where the
autoregressive OTSL decoder this model had first (removed since) learned the generator's row
conventions and merged real rows (docs/BENCHMARKS.md). `grid_targets` makes the labels from a known grid;
`assemble_grid` turns the per-word logits into a `Table`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from tabvlm.read.words import Word, join_words
from tabvlm.tables.grid import Cell, Table

SPAN_CLASSES = 4  # a cell reaches 0, 1, 2 or 3+ rows / columns beyond its word's
GRID_FIELDS = ("row_start", "col_start", "outside", "up", "down", "left", "right")
N_BINARY = 3
GRID_LOGITS = N_BINARY + 4 * SPAN_CLASSES
IGNORE = -100


def _starts(
    groups: Sequence[int], values: Sequence[int], n_groups: int
) -> tuple[dict[int, int], dict[int, int]]:
    """For groups (lines or bands) in order, from the true index most of each group's words have
    (the larger on a tie: a line holding a row header that spans from above and the new row's
    cells is the new row; one word in a wrong cell does not move it): whether the group starts a
    new row / column (its index exceeds every earlier group's), and the true index the group
    stands for (the running maximum)."""
    counts: list[Counter[int]] = [Counter() for _ in range(n_groups)]
    for g, v in zip(groups, values):
        counts[g][v] += 1
    top = [max(c.items(), key=lambda kv: (kv[1], kv[0]))[0] if c else -1 for c in counts]
    start, value, run = {}, {}, -1
    for g in range(n_groups):
        if top[g] < 0:
            continue
        start[g] = int(top[g] > run)
        run = max(run, top[g])
        value[g] = run
    return start, value


def _between(values: np.ndarray, lo: int, hi: int) -> int:
    """How many of the sorted distinct `values` lie in [lo, hi] (0 when hi < lo)."""
    return max(0, int(np.searchsorted(values, hi, side="right") - np.searchsorted(values, lo, side="left")))


def grid_targets(
    table: Table, word_cells: Sequence[int], lines: Sequence[int], bands: Sequence[int]
) -> list[list[int]]:
    """Per word, the labels of GRID_FIELDS (IGNORE where a field does not apply: a word outside
    the table has only `outside`). `word_cells` are indices in table.cells (-1: outside);
    `lines` / `bands` the words' `grid_hints`. Rows and columns are counted over the grid the
    lines and bands can make (a row with no word in it cannot be found, so spans skip it)."""
    n = len(word_cells)
    inside = [c >= 0 and bool(table.cells[c].text) for c in word_cells]
    idx = [i for i in range(n) if inside[i]]
    cells = [table.cells[word_cells[i]] for i in idx]
    n_lines = max(lines, default=-1) + 1
    n_bands = max(bands, default=-1) + 1
    row_start, row_of = _starts([lines[i] for i in idx], [c.row for c in cells], n_lines)
    col_start, col_of = _starts([bands[i] for i in idx], [c.col for c in cells], n_bands)
    rows = np.array(sorted(set(row_of.values())))
    cols = np.array(sorted(set(col_of.values())))
    out = [[IGNORE] * len(GRID_FIELDS) for _ in range(n)]
    for i in range(n):
        out[i][2] = 0 if inside[i] else 1
    for i, c in zip(idx, cells):
        r, k = row_of[lines[i]], col_of[bands[i]]
        up = _between(rows, c.row, r - 1)
        down = _between(rows, r + 1, c.end_row - 1)
        left = _between(cols, c.col, k - 1)
        right = _between(cols, k + 1, c.end_col - 1)
        cap = SPAN_CLASSES - 1
        out[i] = [
            row_start[lines[i]],
            col_start[bands[i]],
            0,
            min(cap, up),
            min(cap, down),
            min(cap, left),
            min(cap, right),
        ]
    return out


def label_logits(labels: Sequence[Sequence[int]]) -> np.ndarray:
    """(W, GRID_LOGITS) logits that say what `grid_targets` labels say (a word outside the table
    is outside; a reach it has no label for is 0): the grid head's best case, for
    `bench/grid_ceiling.py` and tests."""
    out = np.zeros((len(labels), GRID_LOGITS))
    for i, lab in enumerate(labels):
        for k in range(N_BINARY):
            out[i, k] = 5.0 if lab[k] == 1 or (k == 2 and lab[k] == IGNORE) else -5.0
        for s in range(4):
            out[i, N_BINARY + s * SPAN_CLASSES + max(0, lab[N_BINARY + s])] = 5.0
    return out


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def assemble_grid(
    words: Sequence[Word], lines: Sequence[int], bands: Sequence[int], logits: np.ndarray
) -> tuple[Table, list[int]]:
    """The table the grid head's `logits` (W, GRID_LOGITS) make of `words` (with their hints),
    and each word's cell as an index in table.cells (-1: outside). A cell whose spans would cover
    another cell's words is cut back to the slots it can have; a slot no cell covers is an empty
    cell."""
    n = len(words)
    if n == 0:
        return Table(1, 1, [Cell("", 0, 0)]), []
    logits = np.asarray(logits, np.float64)[:n]
    inside = [i for i in range(n) if logits[i, 2] <= 0]
    if not inside:
        return Table(1, 1, [Cell("", 0, 0)]), [-1] * n

    def merged(groups: Sequence[int], column: int) -> dict[int, int]:
        votes: dict[int, list[float]] = {}
        for i in inside:
            votes.setdefault(groups[i], []).append(logits[i, column])
        index, k = {}, -1
        for g in sorted(votes):
            if k < 0 or np.mean(votes[g]) > 0:
                k += 1
            index[g] = k
        return index

    row_of, col_of = merged(lines, 0), merged(bands, 1)
    n_rows, n_cols = max(row_of.values()) + 1, max(col_of.values()) + 1
    members: dict[tuple[int, int], list[int]] = {}
    for i in inside:
        members.setdefault((row_of[lines[i]], col_of[bands[i]]), []).append(i)
    owner = np.full((n_rows, n_cols), -1, np.int64)
    anchors = list(members)
    for a, key in enumerate(anchors):
        owner[key] = a
    spans = []
    for key in anchors:
        ws = members[key]
        reach = []
        for s in range(4):
            part = logits[ws, N_BINARY + s * SPAN_CLASSES : N_BINARY + (s + 1) * SPAN_CLASSES]
            reach.append(int(_log_softmax(part).sum(0).argmax()))
        spans.append(reach)
    # Big cells first claim their rectangle; a slot held by another cell's words stops the growth.
    order = sorted(range(len(anchors)), key=lambda a: -sum(spans[a]))
    rect: dict[int, tuple[int, int, int, int]] = {}
    for a in order:
        r, c = anchors[a]
        up, down, left, right = spans[a]
        r0, r1, c0, c1 = (
            max(0, r - up),
            min(n_rows - 1, r + down),
            max(0, c - left),
            min(n_cols - 1, c + right),
        )

        def free(rr0: int, rr1: int, cc0: int, cc1: int, a: int = a) -> bool:
            block = owner[rr0 : rr1 + 1, cc0 : cc1 + 1]
            return bool(((block == -1) | (block == a)).all())

        while not free(r0, r1, c0, c1):  # shrink the side farthest from the words first
            options = [(r - r0, "u"), (r1 - r, "d"), (c - c0, "l"), (c1 - c, "r")]
            amount, side = max(options)
            if amount == 0:
                r0, r1, c0, c1 = r, r, c, c
                break
            if side == "u":
                r0 += 1
            elif side == "d":
                r1 -= 1
            elif side == "l":
                c0 += 1
            else:
                c1 -= 1
        owner[r0 : r1 + 1, c0 : c1 + 1] = a
        rect[a] = (r0, r1, c0, c1)
    out_cells, word_cells = [], [-1] * n
    for a, key in enumerate(anchors):
        r0, r1, c0, c1 = rect[a]
        ws = sorted(members[key])  # reading order
        out_cells.append(Cell(join_words([words[i].text for i in ws]), r0, c0, r1 - r0 + 1, c1 - c0 + 1))
    for r in range(n_rows):
        for c in range(n_cols):
            if owner[r, c] == -1:
                out_cells.append(Cell("", r, c))
    table = Table(n_rows, n_cols, out_cells)
    index = {(cell.row, cell.col): k for k, cell in enumerate(table.cells)}
    for a, key in enumerate(anchors):
        r0, _, c0, _ = rect[a]
        for i in members[key]:
            word_cells[i] = index[(r0, c0)]
    return table, word_cells
