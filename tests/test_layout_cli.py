"""The layout model through the product's doors: training (and resuming), `tabvlm predict --viz`,
`tabvlm eval --reader truth|ppocr`, and the recognizer choosing it from a model folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tabvlm.cli import main as cli
from tabvlm.layout_recognizer import LayoutRecognizer
from tabvlm.model.layout import LayoutConfig, LayoutModel
from tabvlm.recognizer import TableRecognizer
from tabvlm.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.image_size=64", "model.hidden=32", "model.layers=1", "model.heads=2", "model.box_bins=32",
    "model.max_words=200", "model.max_tags=200", "model.max_rows=24", "model.max_cols=12",
    "data.synth.rows=[1,4]", "data.synth.cols=[1,3]", "batch_size=2", "warmup_steps=1",
    "num_workers=0", "eval_samples=2", "log_every=1",
]  # fmt: skip
# The shipped recipe from scratch, without the browser shards (not in a clean clone).
RECIPE = [
    str(ROOT / "configs" / "layout-grid.yaml"),
    "init_from=null",
    "data.shards=[]",
    "data.shard_ratio=0",
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("layout")
    torch.manual_seed(0)
    cfg = LayoutConfig(
        image_size=64, hidden=32, layers=1, heads=2, box_bins=32, vocab_size=load_tokenizer().vocab_size
    )
    LayoutModel(cfg).save_pretrained(folder)
    return folder


def test_a_layout_folder_loads_as_the_read_then_lay_out_recognizer(tiny_model: Path) -> None:
    rec = TableRecognizer.from_pretrained(tiny_model)
    assert isinstance(rec, LayoutRecognizer)
    pred = rec.predict(ROOT / "examples" / "en-span.png")
    assert pred.html.startswith("<table>") and pred.words and pred.reader_seconds > 0
    assert len(pred.word_cells) == len(pred.words)
    assert all(-1 <= k < len(pred.table.cells) for k in pred.word_cells)
    blank = rec.predict(Image.new("RGB", (200, 80), "white"))  # no text: an empty table, no error
    assert blank.words == [] and all(not c.text for c in blank.table.cells)


def test_train_then_resume_continues_the_step_count(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    args = ["train", *RECIPE, f"out_dir={out}", *TINY]
    assert cli([*args, "max_steps=2", "eval_every=2", "save_every=1"]) == 0
    metrics = json.loads((out / "final" / "metrics.json").read_text())
    assert metrics["step"] == 2 and metrics["samples"] == 4
    assert (out / "final" / "tokenizer.json").is_file()
    assert cli([*args, "max_steps=3", "eval_every=3", "save_every=1", "--resume"]) == 0
    assert json.loads((out / "final" / "metrics.json").read_text())["step"] == 3
    assert "held-out TEDS" in capsys.readouterr().out
    model = LayoutModel.from_pretrained(out / "final")
    assert model.config.hidden == 32
    # a new run from those weights counts what they had cost: the lineage adds up
    more = tmp_path / "more"
    assert cli(["train", *RECIPE, f"out_dir={more}", *TINY,
                f"init_from={out / 'final'}", "max_steps=1", "eval_every=1"]) == 0  # fmt: skip
    m = json.loads((more / "final" / "metrics.json").read_text())
    assert (m["step"], m["total_steps"], m["total_samples"]) == (1, 4, 8)


def test_the_shipped_recipe_continues_a_model_folder(tiny_model: Path, tmp_path: Path) -> None:
    """configs/layout-grid.yaml as shipped (init_from a model folder, whose config wins): trained,
    saved, and recognised with (the browser shards are not in a clean clone: off)."""
    out = tmp_path / "grid"
    args = ["train", str(ROOT / "configs" / "layout-grid.yaml"), f"out_dir={out}", *TINY,
            f"init_from={tiny_model}", "data.shards=[]", "data.shard_ratio=0", "max_steps=2", "eval_every=2"]  # fmt: skip
    assert cli(args) == 0
    model = LayoutModel.from_pretrained(out / "final")
    assert model.config.output == "grid" and model.config.hidden == 32  # the folder's config wins
    before = LayoutModel.from_pretrained(tiny_model)
    assert not torch.equal(model.blocks[0].qkv.weight, before.blocks[0].qkv.weight)  # it trained
    rec = TableRecognizer.from_pretrained(out / "final")
    pred = rec.predict(ROOT / "examples" / "en-span.png")
    assert pred.html.startswith("<table>") and len(pred.word_cells) == len(pred.words)
    assert all(-1 <= k < len(pred.table.cells) for k in pred.word_cells)
    pred.table.validate()


def test_predict_viz_draws_words_and_cells(tiny_model: Path, tmp_path: Path) -> None:
    viz = tmp_path / "viz"
    out = tmp_path / "pred.jsonl"
    image = ROOT / "examples" / "en-span.png"
    assert cli(["predict", "--model", str(tiny_model), "--viz", str(viz), "--out", str(out), str(image)]) == 0
    drawn = Image.open(next(viz.glob("*.png")))
    assert drawn.size == Image.open(image).size
    assert (np.asarray(drawn) != np.asarray(Image.open(image).convert("RGB"))).any()  # something drawn
    rec = json.loads(out.read_text().splitlines()[0])
    assert rec["reader_seconds"] > 0 and rec["html"].startswith("<table>")
    # an overlay never takes an input's place
    assert cli(["predict", "--model", str(tiny_model), "--viz", str(image.parent), str(image)]) == 1


def test_eval_with_true_words_needs_them_and_uses_them(tiny_model: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "synth"
    assert (
        cli(["synth", "--n", "2", "--seed", "3", "--out", str(data), "synth.rows=[2,3]", "synth.cols=[2,3]"])
        == 0
    )
    rec = json.loads((data / "gt.jsonl").read_text().splitlines()[0])
    assert rec["meta"]["words"] and len(rec["meta"]["words"][0]) == 5
    assert cli(["eval", "--data", str(data), "--model", str(tiny_model), "--reader", "truth"]) == 0
    printed = capsys.readouterr().out
    assert "reader truth" in printed and "1.0000 / 1.0000 / 1.0000" in printed  # the truth reads perfectly
    assert (
        cli(["eval", "--data", str(ROOT / "examples"), "--model", str(tiny_model), "--reader", "truth"]) == 1
    )
    assert "meta.words" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse's usage error: --reader without a model
        cli(["eval", "--data", str(data), "--pred", str(data / "gt.jsonl"), "--reader", "truth"])


def test_options_the_layout_model_does_not_have_are_refused(tiny_model: Path) -> None:
    from tabvlm.errors import ConfigError

    with pytest.raises(ConfigError, match="float32"):
        TableRecognizer.from_pretrained(tiny_model, dtype="int8")
    with pytest.raises(ConfigError, match="grammar"):
        TableRecognizer.from_pretrained(tiny_model, constrain=False)
    rec = TableRecognizer.from_pretrained(tiny_model, max_new_tokens=12)
    pred = rec.predict(ROOT / "examples" / "en-span.png")
    assert pred.tokens <= 12  # the tag budget: the table is closed within it
    full = TableRecognizer.from_pretrained(tiny_model)
    assert (
        full.predict_many([ROOT / "examples" / "en-span.png"], max_new_tokens=9)[0].tokens <= 9
    )  # a request's cap
    with pytest.raises(TypeError):
        full.predict_many([ROOT / "examples" / "en-span.png"], temperature=0.7)  # not silently ignored


def test_the_server_serves_a_layout_model(tiny_model: Path) -> None:
    """/v1/recognize and the chat route with the reader + layout model behind them: the page
    reaches the reader at its own size, the usage counts the prefix (image tokens + words)."""
    import base64

    from fastapi.testclient import TestClient

    from tabvlm.serve import ServeConfig, create_app

    rec = TableRecognizer.from_pretrained(tiny_model)
    png = (ROOT / "examples" / "en-span.png").read_bytes()
    with TestClient(create_app(rec, ServeConfig(model_name="t", ui=False)), base_url="http://localhost") as c:
        r = c.post("/v1/recognize", files={"file": ("t.png", png, "image/png")})
        assert r.status_code == 200, r.text
        assert r.json()["html"].startswith("<table>")
        body = {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Convert the table to HTML."},
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()},
                        },
                    ],
                }
            ]
        }
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        words = len(rec.predict(ROOT / "examples" / "en-span.png").words)
        assert r.json()["usage"]["prompt_tokens"] == rec.model.config.image_tokens + words


def test_training_on_user_records_reads_and_aligns_them(tmp_path: Path) -> None:
    """data.files: records of image + HTML (no boxes): the reader's words, aligned to the cells."""
    data = tmp_path / "mine"
    assert (
        cli(["synth", "--n", "2", "--seed", "5", "--out", str(data), "synth.rows=[2,3]", "synth.cols=[2,3]"])
        == 0
    )
    out = tmp_path / "run"
    args = [
        "train",
        *RECIPE,
        f"out_dir={out}",
        *TINY,
        "max_steps=2",
        "eval_every=2",
    ]
    assert (
        cli(
            [
                *args,
                f"data.files=[{data / 'gt.jsonl'}]",
                "data.files_ratio=1.0",
                f"data.read_cache={tmp_path / 'words'}",
            ]
        )
        == 0
    )
    assert json.loads((out / "final" / "metrics.json").read_text())["samples"] == 4
    assert any((tmp_path / "words").rglob("*.json"))  # the reader's words, kept: read once
