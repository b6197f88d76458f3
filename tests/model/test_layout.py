"""The layout model: the prefix mask, padding and batching, saving and loading (older folders, the
removed tags head), and an empty page."""

import json

import pytest
import torch

from tabvlm.data.layout import LayoutInputs, LayoutSample, collate_layout, encode_inputs, layout_targets
from tabvlm.errors import ConfigError
from tabvlm.layout_decode import decode_grid, grid_page_logits
from tabvlm.model.layout import LayoutConfig, LayoutModel, load_layout_config, prefix_keys
from tabvlm.read.words import Word
from tabvlm.tables.grid import Cell, Table
from tabvlm.tokenizer import load_tokenizer

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
    x = encode_inputs(img, words, cfg, TOK)
    return LayoutSample(x, layout_targets(table, cells, x), words)


SPAN = Table(3, 3, [
    Cell("Name Age", 0, 0, colspan=2), Cell("City", 0, 2),
    Cell("Ann", 1, 0), Cell("31", 1, 1), Cell("Oslo", 1, 2, rowspan=2),
    Cell("Bob", 2, 0), Cell("", 2, 1),
])  # fmt: skip
PLAIN = Table(2, 2, [Cell("a", 0, 0), Cell("b c", 0, 1), Cell("d", 1, 0), Cell("e", 1, 1)])


def test_prefix_keys_are_every_image_token_and_the_real_words():
    keys = prefix_keys(2, torch.tensor([[True, False], [True, True]]))
    assert keys.tolist() == [[True, True, True, False], [True, True, True, True]]


def test_a_page_gets_the_same_logits_alone_and_beside_a_longer_page():
    """Padding words are nobody's key: batching a page with a longer one changes none of its
    logits (beyond float noise)."""
    torch.manual_seed(0)
    cfg = tiny_config()
    model = LayoutModel(cfg).eval()
    short, long = sample(PLAIN, cfg), sample(SPAN, cfg)
    assert len(short.words) < len(long.words)
    alone = grid_page_logits(model, [short.inputs])[0]
    batched = grid_page_logits(model, [short.inputs, long.inputs])
    assert batched[0].shape == alone.shape == (len(short.words), alone.shape[1])
    assert abs(batched[0] - alone).max() < 1e-5
    assert abs(batched[1] - grid_page_logits(model, [long.inputs])[0]).max() < 1e-5


def test_collate_pads_words_and_ignores_their_labels():
    cfg = tiny_config()
    batch = collate_layout([sample(SPAN, cfg), sample(PLAIN, cfg)], pad_to=16)
    n = len(sample(PLAIN, cfg).words)
    assert batch["boxes"].shape[:2] == batch["word_mask"].shape == (2, 16)
    assert batch["word_mask"][1].tolist() == [True] * n + [False] * (16 - n)
    assert (batch["grid_targets"][1, n:] == -100).all() and (batch["grid_targets"][1, :n, 2] == 0).all()
    assert len(batch["text_offsets"]) == 2 * 16


def test_save_and_load(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config()
    model = LayoutModel(cfg).eval()
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["output"] == "grid"
    again = LayoutModel.from_pretrained(tmp_path)
    s = sample(PLAIN, cfg)
    assert decode_grid(model, [s.inputs], [s.words]) == decode_grid(again, [s.inputs], [s.words])
    (tmp_path / "config.json").write_text(
        '{"model_type": "tabvlm-layout", "hidden": 48, "output": "grid", "bogus": 1}'
    )
    with pytest.raises(ConfigError, match="bogus"):
        load_layout_config(tmp_path)


def test_the_tags_head_is_refused_with_a_reason(tmp_path):
    with pytest.raises(ConfigError, match="tags head .* was removed"):
        tiny_config(output="tags")
    with pytest.raises(ConfigError, match="expected 'grid'"):
        tiny_config(output="cells")
    (tmp_path / "config.json").write_text('{"model_type": "tabvlm-layout", "hidden": 48, "output": "tags"}')
    with pytest.raises(ConfigError, match="needs a grid model"):
        LayoutModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "tabvlm-layout", "hidden": 48}')  # before grid
    with pytest.raises(ConfigError, match="needs a grid model"):
        load_layout_config(tmp_path)


def test_a_folder_saved_beside_the_tags_head_loads_unchanged(tmp_path):
    """A grid folder written while the tags head existed (the shipped one) holds the pointer's
    temperature and the tag tokens' line / band count embeddings: both are dropped on load."""
    torch.manual_seed(0)
    cfg = tiny_config()
    model = LayoutModel(cfg).eval()
    model.save_pretrained(tmp_path)
    from safetensors.torch import load_file, save_file

    weights = load_file(str(tmp_path / "model.safetensors"))
    weights["n_lines_embed.weight"] = torch.randn(cfg.max_rows + 1, cfg.hidden)
    weights["n_bands_embed.weight"] = torch.randn(cfg.max_cols + 1, cfg.hidden)
    save_file(weights, str(tmp_path / "model.safetensors"))
    raw = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, "temperature": 0.1}))
    again = LayoutModel.from_pretrained(tmp_path)
    s = sample(SPAN, cfg)
    assert decode_grid(model, [s.inputs], [s.words]) == decode_grid(again, [s.inputs], [s.words])
    weights["tag_head.weight"] = torch.zeros(7, cfg.hidden)  # a weight no grid model has
    save_file(weights, str(tmp_path / "model.safetensors"))
    with pytest.raises(ConfigError, match="tag_head.weight"):
        LayoutModel.from_pretrained(tmp_path)


def test_a_page_with_no_words_is_an_empty_grid():
    cfg = tiny_config()
    model = LayoutModel(cfg).eval()
    from PIL import Image

    inputs = encode_inputs(Image.new("RGB", (50, 30), "white"), [], cfg, TOK)
    assert isinstance(inputs, LayoutInputs) and inputs.boxes.shape == (0, 4)
    r = decode_grid(model, [inputs], [[]], max_tags=20)[0]
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
    assert decode_grid(model, [s.inputs], [s.words]) == decode_grid(again, [s.inputs], [s.words])
    del old["grid_head.2.weight"]
    save_file(old, str(tmp_path / "model.safetensors"))
    with pytest.raises(ConfigError, match="grid_head.2.weight"):
        LayoutModel.from_pretrained(tmp_path)
