"""Look, don't only read: the reader's words and the cells they were put into, drawn on the image.

`draw_overlay(image, prediction) -> PIL.Image`: every word's box (thin grey), and each cell that
received words as the union of their boxes, outlined in its column's colour and labelled with
its row and column (spans as `r-r2,c-c2`). Words the model put outside the table are crossed in
red. `tabvlm predict --viz DIR` and the web UI show this picture.
"""

from __future__ import annotations

from PIL import Image, ImageDraw

from tabvlm.recognizer import Prediction

_PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]  # fmt: skip


def _label(cell) -> str:
    rows = f"{cell.row}" if cell.rowspan == 1 else f"{cell.row}-{cell.row + cell.rowspan - 1}"
    cols = f"{cell.col}" if cell.colspan == 1 else f"{cell.col}-{cell.col + cell.colspan - 1}"
    return f"{rows},{cols}"


def draw_overlay(image: Image.Image, pred: Prediction) -> Image.Image:
    """A copy of `image` with `pred`'s words and cells drawn over it (see the module docstring)."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out, "RGBA")
    fcels = (
        []
        if pred.table is None
        else sorted((c for c in pred.table.cells if c.text), key=lambda c: (c.row, c.col))
    )
    boxes: dict[int, list[float]] = {}
    for w, k in zip(pred.words, pred.word_cells):
        x0, y0, x1, y1 = w.box
        if k < 0:
            draw.rectangle((x0, y0, x1, y1), outline=(220, 0, 0, 255), width=1)
            draw.line((x0, y0, x1, y1), fill=(220, 0, 0, 200), width=1)
            continue
        draw.rectangle((x0, y0, x1, y1), outline=(90, 90, 90, 160), width=1)
        b = boxes.setdefault(k, [x0, y0, x1, y1])
        b[:] = [min(b[0], x0), min(b[1], y0), max(b[2], x1), max(b[3], y1)]
    for k, (x0, y0, x1, y1) in boxes.items():
        if k >= len(fcels):
            continue
        cell = fcels[k]
        r, g, b = _PALETTE[cell.col % len(_PALETTE)]
        draw.rectangle((x0 - 2, y0 - 2, x1 + 2, y1 + 2), outline=(r, g, b, 255), fill=(r, g, b, 40), width=2)
        draw.text((x0 - 1, max(0, y0 - 11)), _label(cell), fill=(r, g, b, 255))
    return out
