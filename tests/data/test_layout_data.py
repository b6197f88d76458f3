"""Training data of the layout model: the renderer's true words, reader noise, the alignment of
user records' words with their cells, and the synthetic stream."""

import random

import pytest

from tabvlm.data.align import align_words
from tabvlm.data.fonts import discover_fonts
from tabvlm.data.layout import LayoutDataConfig, SynthLayoutSamples, layout_targets
from tabvlm.data.noise import NoiseConfig, add_reader_noise
from tabvlm.data.render import RenderConfig, make_sample
from tabvlm.data.synth import SynthConfig
from tabvlm.model.layout import TAGS, LayoutConfig
from tabvlm.read.truth import truth_words
from tabvlm.read.words import Word, join_words
from tabvlm.tables.grid import Cell, Table
from tabvlm.tokenizer import load_tokenizer

FONTS = discover_fonts(need_cjk=True)
CLEAN = RenderConfig(rotate_rate=0, downscale_rate=0, blur_rate=0, noise_rate=0, jpeg_rate=0)


@pytest.mark.parametrize("zh_rate", [0.0, 1.0])
def test_truth_words_rebuild_every_cell(zh_rate):
    for i in range(8):
        table, rendered = make_sample(
            3, i, SynthConfig(rows=(2, 8), cols=(2, 5), zh_rate=zh_rate), CLEAN, FONTS
        )
        words, cells = truth_words(rendered, table)
        assert all(c >= 0 for c in cells)
        for k, cell in enumerate(table.cells):
            got = join_words([w.text for w, c in zip(words, cells) if c == k])
            # join_words puts no space beside CJK: "R&D 商品" comes back as "R&D商品"
            assert got.replace(" ", "") == cell.text.replace(" ", "")
            if zh_rate == 0.0:
                assert got == cell.text


def test_truth_words_are_in_reading_order_and_inside_their_cells():
    table, rendered = make_sample(5, 0, SynthConfig(rows=(4, 6), cols=(3, 4), zh_rate=0.0), CLEAN, FONTS)
    words, cells = truth_words(rendered, table)
    for w, c in zip(words, cells):
        x0, y0, x1, y1 = rendered.cell_boxes[c]
        cx, cy = (w.box[0] + w.box[2]) / 2, (w.box[1] + w.box[3]) / 2
        assert x0 <= cx < x1 and y0 <= cy < y1
    rows = [table.cells[c].row for c in cells]
    assert rows == sorted(rows)  # one line per row here: reading order is row order


def test_noise_off_is_the_truth_and_each_kind_does_what_it_says():
    table, rendered = make_sample(2, 1, SynthConfig(rows=(5, 8), cols=(3, 5), zh_rate=0.0), CLEAN, FONTS)
    words, cells = truth_words(rendered, table)
    off = NoiseConfig(
        box_jitter=0, shrink=0, merge_rate=0, cross_merge_rate=0, split_rate=0, drop_rate=0, char_error_rate=0
    )
    w2, c2 = add_reader_noise(words, cells, random.Random(0), off)
    assert [w.text for w in w2] == [w.text for w in words] and c2 == cells
    assert [w.box for w in w2] == [w.box for w in words]
    dropped, _ = add_reader_noise(words, cells, random.Random(0), NoiseConfig(drop_rate=1.0))
    assert dropped == []
    merged, mc = add_reader_noise(
        words, cells, random.Random(0), NoiseConfig(**{**off.__dict__, "merge_rate": 1.0})
    )
    assert len(merged) < len(words)
    # a merged word keeps its first word's cell, and its text is both words' with a space
    assert join_words([w.text for w in merged]).split() == join_words([w.text for w in words]).split()
    assert set(mc) <= set(cells)


def test_alignment_places_noisy_words_in_their_cells():
    ok = total = 0
    for i in range(6):
        table, rendered = make_sample(9, i, SynthConfig(rows=(3, 12), cols=(2, 6)), RenderConfig(), FONTS)
        words, cells = truth_words(rendered, table)
        words, cells = add_reader_noise(words, cells, random.Random(i), NoiseConfig())
        got = align_words(words, table)
        ok += sum(g == c for g, c in zip(got, cells))
        total += len(cells)
    assert ok / total > 0.95  # bench/align_accuracy.py measures it on more tables


def test_alignment_handles_a_cell_read_after_its_neighbour_and_text_outside():
    table = Table(1, 2, [Cell("alpha beta", 0, 0), Cell("gamma", 0, 1)])
    # "beta" is the second line of cell 0, read after "gamma" (reading order is by line)
    words = [Word("alpha", (0, 0, 30, 10)), Word("gamma", (60, 0, 90, 10)), Word("beta", (0, 12, 30, 22)),
             Word("Caption:", (0, 40, 50, 50))]  # fmt: skip
    assert align_words(words, table) == [0, 1, 0, -1]
    assert align_words([], table) == []
    assert align_words(words, Table(1, 1, [Cell("", 0, 0)])) == [-1] * 4


def test_synthetic_stream_is_deterministic_and_within_limits():
    cfg = LayoutConfig(
        max_words=300, max_tags=200, max_rows=20, max_cols=8, vocab_size=load_tokenizer().vocab_size
    )
    data = LayoutDataConfig(synth=SynthConfig(rows=(1, 30), cols=(1, 10)))
    tok = load_tokenizer()
    a, b = SynthLayoutSamples(data, cfg, tok, FONTS), SynthLayoutSamples(data, cfg, tok, FONTS)
    for i in range(4):
        sa, sb = a[i], b[i]
        assert sa.targets == sb.targets and [w.text for w in sa.words] == [w.text for w in sb.words]
        assert len(sa.words) <= 300 and len(sa.targets.tags) <= 200
        assert TAGS[sa.targets.tags[-1]] == "end"
        assert sa.inputs.pixels.shape == (1, cfg.image_size, cfg.image_size)
        assert ((sa.inputs.boxes >= 0) & (sa.inputs.boxes <= 1)).all()


def test_targets_of_an_empty_cell_word_point_nowhere():
    table = Table(1, 2, [Cell("a", 0, 0), Cell("", 0, 1)])
    t = layout_targets(table, [0, 1])
    assert t.word_targets == [1, -1] and t.word_rows == [0, -1]
