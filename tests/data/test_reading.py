"""Dense reading targets: glyph boxes are where the ink is, targets land on the right tokens."""

from __future__ import annotations

import collections
import random

import numpy as np
import pytest
import torch

from tabvlm.data.fonts import discover_fonts
from tabvlm.data.reading import (
    CJK_CHARS,
    IGNORE_INDEX,
    MAX_CELL_TOKENS,
    N_CHAR_CLASSES,
    char_class,
    reading_targets,
    stack_reading,
)
from tabvlm.data.render import RenderConfig, render
from tabvlm.data.synth import SynthConfig, synthesize
from tabvlm.image import fit_image
from tabvlm.tables.grid import Cell, Table

CLEAN = {"rotate_rate": 0.0, "downscale_rate": 0.0, "blur_rate": 0.0, "noise_rate": 0.0, "jpeg_rate": 0.0}


@pytest.fixture(scope="module")
def fonts():
    return discover_fonts(need_cjk=True)


def test_char_classes_cover_printable_ascii_common_chinese_then_one_class_for_the_rest() -> None:
    assert char_class("!") == 0 and char_class("~") == 93
    assert len({char_class(chr(o)) for o in range(33, 127)}) == 94
    chinese = {char_class(ch) for ch in "中国的合计利润年月日"}
    assert len(chinese) == 10 and all(94 <= c < N_CHAR_CLASSES - 1 for c in chinese)
    assert len(CJK_CHARS) == len(set(CJK_CHARS)) == N_CHAR_CLASSES - 95
    assert char_class("é") == char_class("龘") == char_class(" ") == N_CHAR_CLASSES - 1


def test_chinese_classes_cover_what_the_generator_draws() -> None:
    seen = collections.Counter(
        ch
        for i in range(100)
        for cell in synthesize(random.Random(i), SynthConfig(zh_rate=1.0)).cells
        for ch in cell.text
        if "\u4e00" <= ch <= "\u9fff"
    )
    covered = sum(n for ch, n in seen.items() if char_class(ch) < N_CHAR_CLASSES - 1)
    assert covered / sum(seen.values()) > 0.99


def test_every_drawn_character_has_a_box_with_ink_inside_its_text_box(fonts) -> None:
    cfg = RenderConfig(**CLEAN)
    synth = SynthConfig(span_rate=0.5, blank_rate=0.3, long_text_rate=0.3)
    for i in range(10):
        table = synthesize(random.Random(i), synth)
        out = render(table, random.Random(i), cfg, fonts)
        drawn = "".join(ch for ch, _ in out.glyph_boxes)
        assert drawn == "".join(c.text for c in table.cells).replace(" ", "").replace("\n", "")
        ink = np.asarray(out.image.convert("L")) < 160
        text_boxes = [b for b in out.text_boxes if b]
        for ch, (x0, y0, x1, y1) in out.glyph_boxes:
            assert x0 < x1 and y0 < y1
            assert any(t[0] <= x0 and x1 <= t[2] + 1 and t[1] <= y0 and y1 <= t[3] + 1 for t in text_boxes), (
                ch
            )
            if ch not in "._-,'`·、。，":  # thin marks may fall below the ink threshold
                assert ink[y0:y1, x0:x1].any(), (i, ch)


def test_glyph_boxes_follow_downscaling_and_rotation(fonts) -> None:
    table = synthesize(random.Random(3), SynthConfig(zh_rate=0.0))
    plain = render(table, random.Random(5), RenderConfig(**CLEAN), fonts)
    for extra in ({"downscale_rate": 1.0}, {"rotate_rate": 1.0}):
        out = render(table, random.Random(5), RenderConfig(**{**CLEAN, **extra}), fonts)
        assert [ch for ch, _ in out.glyph_boxes] == [ch for ch, _ in plain.glyph_boxes]
        w, h = out.image.size
        assert all(0 <= b[0] < b[2] <= w and 0 <= b[1] < b[3] <= h for _, b in out.glyph_boxes)
        assert out.image.size != plain.image.size


def test_targets_mark_the_tokens_under_each_cell(fonts) -> None:
    cells = [Cell("Ab", 0, 0), Cell("7", 0, 1), Cell("", 1, 0), Cell("xy", 1, 1)]
    table = Table(2, 2, cells, 1)
    out = render(table, random.Random(0), RenderConfig(styles=["grid"], width=[224, 224], **CLEAN), fonts)
    grid, size = 7, 224
    tokens = [[11, 12], [13], [], [14, 15, 16, 17, 18]]
    t = reading_targets(out, table, size, grid, tokens)
    assert t["chars"].shape == (grid * grid, N_CHAR_CLASSES) and t["tokens"].shape == (
        grid * grid,
        MAX_CELL_TOKENS,
    )
    scale = size / max(out.image.size)
    side = size / grid
    seen: set[str] = set()
    for ch, (x0, y0, x1, y1) in out.glyph_boxes:  # each glyph's class is set at its centre's token
        k = int((y0 + y1) / 2 * scale // side) * grid + int((x0 + x1) / 2 * scale // side)
        assert t["chars"][k, char_class(ch)] == 1
        seen.add(ch)
    assert int(t["chars"].sum()) <= len(out.glyph_boxes) and seen == set("Ab7xy")
    for i, (cell, (x0, y0, x1, y1)) in enumerate(zip(cells, out.cell_boxes)):
        cx, cy = (x0 + x1) / 2 * scale, (y0 + y1) / 2 * scale
        k = int(cy // side) * grid + int(cx // side)
        assert (int(t["row"][k]), int(t["col"][k])) == (cell.row, cell.col)
        want = (tokens[i][:MAX_CELL_TOKENS] + [IGNORE_INDEX] * MAX_CELL_TOKENS)[:MAX_CELL_TOKENS]
        assert t["tokens"][k].tolist() == want
    # tokens below the table (the fitted image's white padding) belong to no cell
    fitted_h = round(out.image.size[1] * scale)
    below = [k for k in range(grid * grid) if (k // grid + 0.5) * side > fitted_h]
    assert below and all(int(t["row"][k]) == IGNORE_INDEX for k in below)
    assert fit_image(out.image, size).size == (size, size)


def test_stack_marks_the_images_without_targets() -> None:
    with_t = {"pixel_values": torch.zeros(1, 3, 8, 8), "reading": {
        "chars": torch.ones(4, N_CHAR_CLASSES, dtype=torch.uint8), "row": torch.zeros(4, dtype=torch.long),
        "col": torch.zeros(4, dtype=torch.long), "tokens": torch.zeros(4, MAX_CELL_TOKENS, dtype=torch.long)}}  # fmt: skip
    record = {"pixel_values": torch.zeros(1, 3, 8, 8)}
    text_only = {"pixel_values": torch.zeros(0, 3, 8, 8)}
    out = stack_reading([record, text_only, with_t])
    assert out is not None and out["has"].tolist() == [0.0, 1.0]
    assert out["chars"].shape == (2, 4, N_CHAR_CLASSES) and int(out["chars"][0].sum()) == 0
    assert out["row"][0].tolist() == [IGNORE_INDEX] * 4
    assert stack_reading([record, text_only]) is None
