"""The `truth` reader: words and boxes from the renderer, which knows where it drew each character.

`truth_words(rendered, table)` groups the drawn characters into the reader's unit (a run of
non-space Latin characters, or one CJK character) and says which cell each word belongs to, so
synthetic samples carry their layout targets. Word breaks come from the cell's own text (the
renderer skips spaces but draws the other characters in order), so a rotated drawing, whose
bounding boxes overlap, splits words as the text does. Used for training data (with
`tabvlm.data.noise`, to look like a real reader's output) and as an ablation at evaluation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tabvlm.read.words import Word, is_cjk_char, reading_order

if TYPE_CHECKING:
    from tabvlm.data.render import Rendered
    from tabvlm.tables.grid import Table


def cell_of(box: tuple, cell_boxes: list) -> int:
    """The cell whose box holds the centre of `box` (the nearest centre among several, as rotated
    drawings give overlapping bounding boxes); -1 when none does."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    best, best_d = -1, float("inf")
    for i, (x0, y0, x1, y1) in enumerate(cell_boxes):
        if x0 <= cx < x1 and y0 <= cy < y1:
            d = abs((x0 + x1) / 2 - cx) + abs((y0 + y1) / 2 - cy)
            if d < best_d:
                best, best_d = i, d
    return best


def _breaks(text: str) -> list[bool]:
    """For each non-space character of `text`: does a new word start at it?"""
    out, prev, space = [], "", True
    for ch in text:
        if ch.isspace():
            space = True
            continue
        out.append(space or is_cjk_char(ch) or is_cjk_char(prev))
        prev, space = ch, False
    return out


def truth_words(rendered: Rendered, table: Table) -> tuple[list[Word], list[int]]:
    """The drawing's words in reading order and, for each, the index of its cell in
    `table.cells` (-1: outside every cell)."""
    glyph_cell = [cell_of(box, rendered.cell_boxes) for _, box in rendered.glyph_boxes]
    starts: list[bool] = [True] * len(glyph_cell)
    by_cell: dict[int, list[int]] = {}
    for g, c in enumerate(glyph_cell):
        by_cell.setdefault(c, []).append(g)
    for c, gs in by_cell.items():
        if c < 0:
            continue
        breaks = _breaks(table.cells[c].text)
        if len(breaks) == len(gs):
            for g, b in zip(gs, breaks):
                starts[g] = b
    words: list[Word] = []
    cells: list[int] = []
    text, box = "", None
    for g, (ch, b) in enumerate(rendered.glyph_boxes):
        if box is not None and not starts[g] and glyph_cell[g] == glyph_cell[g - 1]:
            text += ch
            box = (min(box[0], b[0]), min(box[1], b[1]), max(box[2], b[2]), max(box[3], b[3]))
            continue
        if box is not None:
            words.append(Word(text, tuple(float(v) for v in box)))
            cells.append(glyph_cell[g - 1])
        text, box = ch, b
    if box is not None:
        words.append(Word(text, tuple(float(v) for v in box)))
        cells.append(glyph_cell[-1])
    order = reading_order(words)
    return [words[i] for i in order], [cells[i] for i in order]
