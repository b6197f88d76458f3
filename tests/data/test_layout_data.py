"""Training data of the layout model: the renderer's true words, reader noise, the alignment of
user records' words with their cells, and the synthetic stream."""

import random

import pytest

from tabvlm.data.align import align_words
from tabvlm.data.fonts import discover_fonts
from tabvlm.data.layout import LayoutDataConfig, LayoutInputs, SynthLayoutSamples, layout_targets
from tabvlm.data.noise import NoiseConfig, add_reader_noise
from tabvlm.data.render import RenderConfig, make_sample
from tabvlm.data.synth import SynthConfig
from tabvlm.errors import ConfigError
from tabvlm.model.layout import LayoutConfig
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
        box_jitter=0,
        grow_top=(0, 0),
        grow_bottom=(0, 0),
        merge_rate=0,
        cross_merge_rate=0,
        split_rate=0,
        drop_rate=0,
        char_error_rate=0,
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
        assert len(sa.words) <= 300 and len(sa.targets.grid) == len(sa.words)
        table = a.raw(i)[0]
        assert table.n_rows <= 20 and table.n_cols <= 8 and table.n_rows * (table.n_cols + 1) + 1 <= 200
        assert sa.inputs.pixels.shape == (1, cfg.image_size, cfg.image_size)
        assert ((sa.inputs.boxes >= 0) & (sa.inputs.boxes <= 1)).all()


def test_a_word_of_an_empty_cell_is_outside_the_table():
    import torch

    table = Table(1, 2, [Cell("a", 0, 0), Cell("", 0, 1)])
    x = LayoutInputs(
        torch.zeros(1, 8, 8, dtype=torch.uint8), torch.zeros(2, 4), [[1], [2]],
        torch.tensor([0, 0]), torch.tensor([0, 1]),
    )  # fmt: skip
    grid = layout_targets(table, [0, 1], x).grid
    assert grid[0][:3] == [1, 1, 0] and grid[1] == [-100, -100, 1, -100, -100, -100, -100]


def test_page_text_is_outside_the_table_and_keeps_the_table_words():
    from tabvlm.data.layout import add_page_text

    table, rendered = make_sample(5, 0, SynthConfig(rows=(3, 5), cols=(2, 4)), CLEAN, FONTS)
    words, cells = truth_words(rendered, table)
    page, words2, cells2 = add_page_text(rendered.image, words, cells, table, random.Random(1), FONTS)
    outside = [w for w, c in zip(words2, cells2) if c < 0]
    assert outside and page.size[1] > rendered.image.size[1] and page.size[0] == rendered.image.size[0]
    # the table's words are all still there, each with its cell, moved down by the same amount
    kept = sorted((w.text, c) for w, c in zip(words2, cells2) if c >= 0)
    assert kept == sorted((w.text, c) for w, c in zip(words, cells))
    dy = {round(b.box[1] - a.box[1]) for a, b in zip(sorted(words, key=lambda w: (w.text, w.box)),
                                                   sorted([w for w, c in zip(words2, cells2) if c >= 0], key=lambda w: (w.text, w.box)))}  # fmt: skip
    assert len(dy) == 1
    # every outside word lies above or below the table's drawing
    top = min(w.box[1] for w, c in zip(words2, cells2) if c >= 0)
    bottom = max(w.box[3] for w, c in zip(words2, cells2) if c >= 0)
    assert all(w.box[3] <= top + 1 or w.box[1] >= bottom - 1 for w in outside)
    assert all(" " not in w.text for w in outside)


def test_shard_samples_carry_their_words_and_targets(tmp_path):
    from tabvlm.data.layout import LayoutSamples
    from tabvlm.data.shards import write_shard

    drawn = [make_sample(9, i, SynthConfig(rows=(2, 4), cols=(2, 3)), CLEAN, FONTS) for i in range(3)]
    write_shard(tmp_path / "shard-000000.tar", [(t, r, 9, i) for i, (t, r) in enumerate(drawn)])
    cfg = LayoutDataConfig(shards=[str(tmp_path / "*.tar")], shard_ratio=1.0, noise_rate=0.0)
    samples = LayoutSamples(cfg, LayoutConfig(), load_tokenizer())
    for i in range(3):
        s = samples[i]  # shard_ratio 1: every sample comes from the shard, i-th drawn -> i-th sample
        words, _ = truth_words(drawn[i][1], drawn[i][0])
        assert [w.text for w in s.words] == [w.text for w in words]
        assert len(s.targets.grid) == len(words) and all(g[2] == 0 for g in s.targets.grid)


def test_layout_data_shares_are_checked():
    with pytest.raises(ConfigError, match="shard_ratio"):
        LayoutDataConfig(shard_ratio=0.5)
    with pytest.raises(ConfigError, match="at most 1"):
        LayoutDataConfig(files=["a.jsonl"], files_ratio=0.6, shards=["s/*.tar"], shard_ratio=0.6)
    with pytest.raises(ConfigError, match="page_text_rate"):
        LayoutDataConfig(page_text_rate=1.5)


def test_noise_grows_boxes_as_the_reader_does():
    """PP-OCRv6's boxes are taller than the true line (a median 1.125x on our renders,
    docs/BENCHMARKS.md); the simulated noise must not make them shorter."""
    table, rendered = make_sample(4, 2, SynthConfig(rows=(6, 9), cols=(3, 5), zh_rate=0.0), CLEAN, FONTS)
    words, cells = truth_words(rendered, table)
    cfg = NoiseConfig(merge_rate=0, cross_merge_rate=0, split_rate=0, drop_rate=0, char_error_rate=0)
    ratios = []
    for seed in range(20):
        noisy, _ = add_reader_noise(words, cells, random.Random(seed), cfg)
        truth = {w.text: w.box for w in words}
        ratios += [
            (w.box[3] - w.box[1]) / (truth[w.text][3] - truth[w.text][1]) for w in noisy if w.text in truth
        ]
    ratios.sort()
    assert 1.08 <= ratios[len(ratios) // 2] <= 1.35


def test_reader_words_of_a_shard_go_to_the_cells_they_cover(tmp_path):
    """`shard_words: reader`: the words come from the read cache (read once, by the image's
    pixels), each in the cell whose true words its box covers; a word over no true word is outside."""
    from tabvlm.data.layout import LayoutSamples
    from tabvlm.data.shards import write_shard
    from tabvlm.read import get_reader, read_words
    from tabvlm.read.cache import WordCache, cache_key, pixels_digest

    table, rendered = make_sample(9, 0, SynthConfig(rows=(3, 3), cols=(2, 2)), CLEAN, FONTS)
    write_shard(tmp_path / "shard-000000.tar", [(table, rendered, 9, 0)])
    truth, cells = truth_words(rendered, table)
    # a stand-in for the reader: the first two true words merged into one box, and a speck
    merged = Word(
        f"{truth[0].text} {truth[1].text}",
        (truth[0].box[0], truth[0].box[1], truth[1].box[2], truth[1].box[3]),
        0.9,
    )
    fake = [merged, *truth[2:], Word("x", (0.0, 0.0, 1.0, 1.0), 0.5)]
    cache = WordCache(max_items=0, folder=tmp_path / "read")
    cache.put(cache_key(pixels_digest(rendered.image), get_reader("ppocr").cache_id), fake)
    assert [w.text for w in read_words(rendered.image, cache=cache)] == [w.text for w in fake]
    cfg = LayoutDataConfig(
        shards=[str(tmp_path / "*.tar")],
        shard_ratio=1.0,
        shard_words="reader",
        read_cache=str(tmp_path / "read"),
    )
    s = LayoutSamples(cfg, LayoutConfig(), load_tokenizer())[0]
    assert [w.text for w in s.words] == [w.text for w in fake]
    outside = [g[2] for g in s.targets.grid]
    assert outside[-1] == 1 and not any(outside[:-1])


def test_cells_by_overlap_takes_the_cell_a_box_covers_most():
    from tabvlm.data.align import cells_by_overlap

    truth = [Word("a", (0, 0, 10, 10), 1.0), Word("b", (12, 0, 40, 10), 1.0), Word("c", (0, 20, 10, 30), 1.0)]
    read = [
        Word("a b", (0, 0, 40, 10), 1.0),  # across two cells: b's wider box wins
        Word("c", (1, 21, 9, 29), 1.0),
        Word(".", (100, 100, 101, 101), 1.0),  # covers no true word
    ]
    assert cells_by_overlap(read, truth, [0, 1, -1]) == [1, -1, -1]
    assert cells_by_overlap(read, [], []) == [-1, -1, -1]


def test_shard_words_are_checked():
    with pytest.raises(ConfigError, match="shard_words"):
        LayoutDataConfig(shard_words="ocr")
    with pytest.raises(ConfigError, match="read_cache"):
        LayoutDataConfig(shard_words="reader")
