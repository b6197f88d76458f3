"""The renderer draws faithfully: each cell's text inside its own box, spans cover their slots."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tabvlm.data.fonts import discover_fonts
from tabvlm.data.render import STYLES, RenderConfig, make_sample, render
from tabvlm.data.synth import SynthConfig, synthesize
from tabvlm.errors import ConfigError, DataError
from tabvlm.tables.grid import Cell, Table

CLEAN = {"rotate_rate": 0.0, "downscale_rate": 0.0, "blur_rate": 0.0, "noise_rate": 0.0, "jpeg_rate": 0.0}
SYNTH = SynthConfig(span_rate=0.7, blank_rate=0.5, long_text_rate=0.5)


@pytest.fixture(scope="module")
def fonts():
    return discover_fonts(need_cjk=True)


def _check_faithful(table: Table, cell_boxes, text_boxes, size) -> None:
    width, height = size
    col_x: dict[int, int] = {}
    row_y: dict[int, int] = {}
    for c, (x0, y0, x1, y1) in zip(table.cells, cell_boxes):
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        # Boxes sit on one set of grid lines: a span covers exactly the union of its slots.
        for key, val in ((c.col, x0), (c.end_col, x1)):
            assert col_x.setdefault(key, val) == val
        for key, val in ((c.row, y0), (c.end_row, y1)):
            assert row_y.setdefault(key, val) == val
    for t, box in zip(table.cells, text_boxes):
        assert (box is None) == (t.text == "")
    for c, cb, tb in zip(table.cells, cell_boxes, text_boxes):
        if tb is not None:
            assert cb[0] <= tb[0] < tb[2] <= cb[2] and cb[1] <= tb[1] < tb[3] <= cb[3], (c, cb, tb)
    # Half-open boxes tile without overlap: total area = area of the table's bounding box.
    area = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in cell_boxes)
    xs, ys = sorted(col_x.values()), sorted(row_y.values())
    assert area == (xs[-1] - xs[0]) * (ys[-1] - ys[0])


def test_boxes_are_faithful_for_many_tables(fonts):
    cfg = RenderConfig(**CLEAN)
    for i in range(25):
        table = synthesize(random.Random(i), SYNTH)
        out = render(table, random.Random(i), cfg, fonts)
        assert out.image.mode == "RGB"
        assert len(out.cell_boxes) == len(table.cells) == len(out.text_boxes)
        _check_faithful(table, out.cell_boxes, out.text_boxes, out.image.size)


def test_text_ink_lies_inside_its_text_box(fonts):
    # Draw one cell's text on a blank style and check where the dark pixels are.
    table = Table(
        2, 2, [Cell("Revenue", 0, 0), Cell("", 0, 1), Cell("12.5%", 1, 0), Cell("中文表格", 1, 1)], 1
    )
    cfg = RenderConfig(styles=["none"], tint_rate=0.0, shade_header_rate=0.0, **CLEAN)
    out = render(table, random.Random(3), cfg, fonts)
    ink = np.asarray(out.image.convert("L")) < 160
    inside = np.zeros_like(ink)
    for box in out.text_boxes:
        if box:
            inside[box[1] : box[3], box[0] : box[2]] = True
    assert ink.sum() > 50
    assert not (ink & ~inside).any(), "ink drawn outside the text boxes"
    for box in out.text_boxes:
        if box:
            assert ink[box[1] : box[3], box[0] : box[2]].any()


def test_every_style_and_big_tables_fit(fonts):
    big = synthesize(random.Random(0), SynthConfig(rows=(40, 40), cols=(15, 15), long_text_rate=1.0))
    for style in STYLES:
        cfg = RenderConfig(styles=[style], **CLEAN)
        out = render(big, random.Random(1), cfg, fonts)
        assert out.style["style"] == style
        assert cfg.width[0] <= out.image.width <= cfg.width[1] and out.image.height <= cfg.max_height
        _check_faithful(big, out.cell_boxes, out.text_boxes, out.image.size)


def test_degraded_boxes_follow_the_image(fonts):
    table = synthesize(random.Random(5), SynthConfig(rows=(6, 10), cols=(3, 5)))
    cfg = RenderConfig(rotate_rate=1.0, downscale_rate=1.0, blur_rate=1.0, noise_rate=1.0, jpeg_rate=1.0)
    out = render(table, random.Random(5), cfg, fonts)
    kinds = [d.split(":")[0] for d in out.style["degradations"]]
    assert kinds == ["rotate", "downscale", "blur", "noise", "jpeg"]
    w, h = out.image.size
    for (x0, y0, x1, y1), tb in zip(out.cell_boxes, out.text_boxes):
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        if tb:  # still (about) inside the cell after the geometry changed
            assert x0 - 2 <= tb[0] and tb[2] <= x1 + 2 and y0 - 2 <= tb[1] and tb[3] <= y1 + 2


def test_render_is_deterministic(fonts):
    a = make_sample(7, 3, SynthConfig(), RenderConfig(), fonts)
    b = make_sample(7, 3, SynthConfig(), RenderConfig(), fonts)
    assert a[0] == b[0] and a[1].cell_boxes == b[1].cell_boxes and a[1].style == b[1].style
    assert np.array_equal(np.asarray(a[1].image), np.asarray(b[1].image))


def test_chinese_needs_a_cjk_face_and_bad_styles_are_config_errors(fonts, tmp_path):
    table = Table(1, 1, [Cell("中文", 0, 0)], 0)
    out = render(table, random.Random(0), RenderConfig(**CLEAN), fonts)
    assert out.style["font_kind"] == "cjk"
    dejavu = [f for f in fonts.faces if f.family == "DejaVu Sans"][0]
    (tmp_path / "DejaVuSans.ttf").write_bytes(open(dejavu.path, "rb").read())
    latin_only = discover_fonts([str(tmp_path)], use_system=False)
    with pytest.raises(DataError, match="CJK"):
        render(table, random.Random(0), RenderConfig(**CLEAN), latin_only)
    with pytest.raises(ConfigError, match="styles"):
        RenderConfig(styles=["fancy"])
