"""The layout model: masks, cached decoding against the teacher-forced pass, the grammar, the
pointer loss, saving, and a tiny model that overfits two tables and decodes them exactly."""

import random

import pytest
import torch

from tabvlm.data.layout import LayoutInputs, LayoutSample, collate_layout, encode_inputs, layout_targets
from tabvlm.errors import ConfigError
from tabvlm.layout_decode import _Grammar, decode_layout
from tabvlm.model.layout import TAGS, LayoutConfig, LayoutModel, load_layout_config, prefix_lm_mask
from tabvlm.read.words import Word
from tabvlm.tables.grid import Cell, Table
from tabvlm.tables.html import to_html
from tabvlm.tables.otsl import parse_otsl
from tabvlm.tokenizer import load_tokenizer
from tabvlm.train.layout import TARGET_KEYS, layout_loss

TOK = load_tokenizer()


def tiny_config(**kw) -> LayoutConfig:
    base = dict(
        image_size=64, hidden=48, layers=2, heads=4, vocab_size=TOK.vocab_size, box_bins=64, image_pool=2
    )
    base.update(kw)
    return LayoutConfig(**base)


def page(table: Table, cell_w: int = 40, cell_h: int = 16):
    """A blank page with one word per line of each cell laid out on a regular grid, the words'
    cells, and the page image (the tests need geometry, not glyphs)."""
    from PIL import Image

    words, cells = [], []
    for i, c in enumerate(table.cells):
        for k, w in enumerate(c.text.split()):
            x0 = c.col * cell_w + 2 + 12 * k
            y0 = c.row * cell_h + 3
            words.append(Word(w, (x0, y0, x0 + 10, y0 + 10)))
            cells.append(i)
    img = Image.new("RGB", (table.n_cols * cell_w, table.n_rows * cell_h), "white")
    return img, words, cells


def sample(table: Table, cfg: LayoutConfig) -> LayoutSample:
    img, words, cells = page(table)
    return LayoutSample(encode_inputs(img, words, cfg, TOK), layout_targets(table, cells), words)


SPAN = Table(3, 3, [
    Cell("Name Age", 0, 0, colspan=2), Cell("City", 0, 2),
    Cell("Ann", 1, 0), Cell("31", 1, 1), Cell("Oslo", 1, 2, rowspan=2),
    Cell("Bob", 2, 0), Cell("", 2, 1),
])  # fmt: skip
PLAIN = Table(2, 2, [Cell("a", 0, 0), Cell("b c", 0, 1), Cell("d", 1, 0), Cell("e", 1, 1)])


def test_targets_are_the_otsl_tags_and_fcel_positions():
    t = layout_targets(SPAN, [0, 0, 1, 2, 3, 4, 5])
    assert [TAGS[i] for i in t.tags] == [
        "fcel", "lcel", "fcel", "nl", "fcel", "fcel", "fcel", "nl", "fcel", "ecel", "ucel", "nl", "end",
    ]  # fmt: skip
    # inputs are <bos> + tags: fcel tag k is input at position k + 1
    assert t.word_targets == [1, 1, 3, 5, 6, 7, 9]
    assert (t.word_rows, t.word_cols) == ([0, 0, 0, 1, 1, 1, 2], [0, 0, 2, 0, 1, 2, 0])
    assert layout_targets(SPAN, [-1, 6]).word_targets == [-1, -1]  # no cell; an empty cell


def test_prefix_lm_mask():
    m = prefix_lm_mask(2, torch.tensor([[True, False]]), torch.tensor([[True, True, False]]))[0, 0]
    P = 4
    assert m[:P, :P].tolist() == [[True, True, True, False]] * 4  # the prefix sees the real prefix
    assert not m[:P, P:].any()  # ... and no tag
    assert m[P:, P:].tolist() == [[True, False, False], [True, True, False], [True, True, False]]
    assert not m[:, 3].any()  # a padding word is nobody's key


def test_cached_decoding_matches_the_teacher_forced_pass():
    torch.manual_seed(0)
    cfg = tiny_config()
    model = LayoutModel(cfg).eval()
    s = sample(SPAN, cfg)
    res = decode_layout(model, [s.inputs], [s.words], max_tags=40)[0]
    ids = [TAGS.index(t) for t in res.tags]
    forced = LayoutSample(s.inputs, type(s.targets)(ids, [-1] * len(s.words)))
    batch = collate_layout([forced])
    with torch.no_grad():
        out = model(**{k: v for k, v in batch.items() if k not in TARGET_KEYS})
    # every decoded tag is the best tag the grammar allowed under the teacher-forced logits
    g = _Grammar(cfg.max_cols)
    assert len(ids) <= 40 and ids[-1] == TAGS.index("end")
    for p, t in enumerate(ids[: res.forced_at]):
        allowed = torch.tensor(g.allowed())
        assert t == int(out.tag_logits[0, p].masked_fill(~allowed, float("-inf")).argmax())
        g.push(t)
    # ... and each word's cell is the forced pass's pointer argmax over the fcel inputs + none
    fcel = [p + 1 for p, t in enumerate(ids[:-1]) if TAGS[t] == "fcel"]
    cand = out.pointer_logits[0][:, fcel + [len(ids)]]
    expect = [k if k < len(fcel) else -1 for k in cand.argmax(-1).tolist()]
    assert res.word_fcels == expect
    # word_cells index the grid's cells: each word's cell holds the word's text
    for w, k in zip(s.words, res.word_cells):
        assert k == -1 or w.text in res.table.cells[k].text


def test_the_grammar_accepts_every_real_grid():
    """Every target tag of many synthetic grids (spans of every shape) is allowed when it comes."""
    from tabvlm.data.layout import table_tags
    from tabvlm.data.synth import SynthConfig, synthesize

    for i in range(300):
        table = synthesize(random.Random(i), SynthConfig(rows=(1, 12), cols=(1, 8)))
        g = _Grammar(64)
        for t in table_tags(table)[0]:
            assert g.allowed()[t], (i, TAGS[t], g.cur)
            g.push(t)


def test_decoding_always_writes_a_valid_grid():
    for seed in range(12):
        torch.manual_seed(seed)
        cfg = tiny_config()
        model = LayoutModel(cfg).eval()
        s = sample(SPAN, cfg)
        r = decode_layout(model, [s.inputs], [s.words], max_tags=30)[0]
        otsl = "".join(f"<{t}>" for t in r.tags if t != "end")
        parse_otsl(otsl, strict=True)  # rectangular, every merge claimed
        assert r.tags[-1] == "end"
        assert len(r.word_cells) == len(r.word_fcels) == len(s.words)


def test_pointer_loss_ignores_padding_and_non_fcel_positions():
    torch.manual_seed(0)
    cfg = tiny_config()
    model = LayoutModel(cfg)
    batch = collate_layout([sample(SPAN, cfg), sample(PLAIN, cfg)], pad_to=16)
    loss, stats = layout_loss(model, batch)
    assert torch.isfinite(loss) and stats["ptr_loss"] > 0
    assert batch["boxes"].shape[1] == 16 and batch["tags"].shape[1] == 16
    # the "none" column is the padded tag length
    assert (batch["word_targets"][batch["word_mask"]] < 16).all()
    loss.backward()
    assert model.ptr_word.weight.grad is not None and model.ptr_word.weight.grad.abs().sum() > 0


def test_a_tiny_model_overfits_and_decodes_the_tables_exactly():
    torch.manual_seed(0)
    cfg = tiny_config()
    model = LayoutModel(cfg)
    data = [sample(SPAN, cfg), sample(PLAIN, cfg)]
    batch = collate_layout(data)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss, stats = layout_loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert stats["tag_acc"] == 1.0 and stats["ptr_acc"] == 1.0 and stats["grid_loss"] < 0.1
    model.eval()
    res = decode_layout(model, [d.inputs for d in data], [d.words for d in data])
    assert [to_html(r.table) for r in res] == [to_html(SPAN), to_html(PLAIN)]
    assert all(r.finish_reason == "stop" for r in res)


def test_save_and_load(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config()
    model = LayoutModel(cfg).eval()
    model.save_pretrained(tmp_path)
    again = LayoutModel.from_pretrained(tmp_path)
    s = sample(PLAIN, cfg)
    assert decode_layout(model, [s.inputs], [s.words]) == decode_layout(again, [s.inputs], [s.words])
    (tmp_path / "config.json").write_text('{"model_type": "tabvlm-layout", "hidden": 48, "bogus": 1}')
    with pytest.raises(ConfigError, match="bogus"):
        load_layout_config(tmp_path)


def test_a_page_with_no_words_is_an_empty_grid():
    cfg = tiny_config()
    model = LayoutModel(cfg).eval()
    from PIL import Image

    inputs = encode_inputs(Image.new("RGB", (50, 30), "white"), [], cfg, TOK)
    assert isinstance(inputs, LayoutInputs) and inputs.boxes.shape == (0, 4)
    r = decode_layout(model, [inputs], [[]], max_tags=20)[0]
    assert r.word_cells == [] and all(not c.text for c in r.table.cells)


def test_an_older_folder_loads_with_its_newer_inputs_neutral(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config()
    model = LayoutModel(cfg).eval()
    model.save_pretrained(tmp_path)
    from safetensors.torch import load_file, save_file

    weights = load_file(str(tmp_path / "model.safetensors"))
    old = {k: v for k, v in weights.items() if not k.startswith("gap_embed.")}  # saved before gaps existed
    save_file(old, str(tmp_path / "model.safetensors"))
    again = LayoutModel.from_pretrained(tmp_path)
    s = sample(SPAN, cfg)
    assert decode_layout(model, [s.inputs], [s.words]) == decode_layout(again, [s.inputs], [s.words])
    del old["tag_head.weight"]
    save_file(old, str(tmp_path / "model.safetensors"))
    with pytest.raises(ConfigError, match="tag_head.weight"):
        LayoutModel.from_pretrained(tmp_path)
