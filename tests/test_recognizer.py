"""TableRecognizer and `tabvlm predict`: loading, predictions, bad images, output files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tabvlm.commands import predict as predict_cmd
from tabvlm.errors import DataError, TabVLMError
from tabvlm.recognizer import TableRecognizer
from tabvlm.tables.html import parse_html, to_html

TINY = "configs/tiny.yaml"


@pytest.fixture(scope="module")
def rec() -> TableRecognizer:
    return TableRecognizer.from_pretrained(TINY, max_new_tokens=24)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("imgs")
    for i, color in enumerate(["white", "gray"]):
        Image.new("RGB", (60 + 20 * i, 40), color).save(d / f"t{i}.png")
    (d / "broken.png").write_bytes(b"not an image")
    (d / "notes.txt").write_text("ignored")
    return d


def test_import_tabvlm_is_lazy() -> None:
    code = "import sys, tabvlm; assert 'torch' not in sys.modules; from tabvlm import TableRecognizer; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"


def test_predict_gives_canonical_html_and_views(rec: TableRecognizer, image_dir: Path) -> None:
    pred = rec.predict(image_dir / "t0.png")
    assert pred.table is not None and pred.raw.startswith("<table>")
    assert pred.html == to_html(parse_html(pred.raw))
    assert pred.markdown and pred.csv is not None
    assert 0 < pred.tokens <= 24 and pred.seconds > 0


def test_predict_many_matches_predict(rec: TableRecognizer, image_dir: Path) -> None:
    paths = [image_dir / "t0.png", image_dir / "t1.png", image_dir / "t0.png"]
    many = rec.predict_many(paths, batch_size=2)
    assert [p.raw for p in many] == [rec.predict(p).raw for p in paths]


def test_unreadable_image_names_path(rec: TableRecognizer, image_dir: Path) -> None:
    with pytest.raises(DataError, match="broken.png.*cannot read"):
        rec.predict(image_dir / "broken.png")
    with pytest.raises(DataError, match="missing.png: no such image file"):
        rec.predict(image_dir / "missing.png")


def test_model_folder_round_trip(rec: TableRecognizer, image_dir: Path, tmp_path: Path) -> None:
    rec.model.save_pretrained(tmp_path / "m", tokenizer=rec.tokenizer)
    again = TableRecognizer.from_pretrained(tmp_path / "m", max_new_tokens=24)
    assert again.predict(image_dir / "t1.png").raw == rec.predict(image_dir / "t1.png").raw


def test_no_default_model_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TabVLMError, match="no default model is shipped yet"):
        TableRecognizer.from_pretrained(None)


def test_cli_jsonl_and_bad_images(image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "preds.jsonl"
    rc = predict_cmd.main(["--model", TINY, "--max-new-tokens", "16", "--out", str(out), str(image_dir)])
    assert rc == 1  # broken.png was skipped
    assert "broken.png" in capsys.readouterr().err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == ["t0", "t1"]
    assert all(x["html"].startswith("<table>") and x["seconds"] > 0 for x in lines)


def test_cli_writes_one_file_per_image(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    images = [str(image_dir / "t0.png"), str(image_dir / "t1.png")]
    assert (
        predict_cmd.main(
            ["--model", TINY, "--max-new-tokens", "16", "--format", "md", "--out", str(tmp_path), *images]
        )
        == 0
    )
    assert sorted(p.name for p in tmp_path.glob("*.md")) == ["t0.md", "t1.md"]
    assert predict_cmd.main(["--model", TINY, "--max-new-tokens", "16", images[0]]) == 0
    assert capsys.readouterr().out.startswith("<table>")


@pytest.mark.parametrize(
    ("dtype", "held_in", "min_cosine"), [("bfloat16", "bfloat16", 0.99), ("int8", "float32", 0.999)]
)
def test_low_precision_recognizers_track_float32(
    rec: TableRecognizer, image_dir: Path, dtype: str, held_in: str, min_cosine: float
) -> None:
    import torch

    from tabvlm.generate import image_prompt
    from tabvlm.image import preprocess_images

    low_rec = TableRecognizer.from_pretrained(TINY, dtype=dtype, max_new_tokens=24)
    # bf16 parameters; int8 keeps float32 parameters and lives in the packed decode copies
    assert {p.dtype for p in low_rec.model.parameters()} == {getattr(torch, held_in)}
    pred = low_rec.predict(image_dir / "t0.png")
    assert pred.table is not None and pred.html == to_html(parse_html(pred.raw))
    # the same weights (seed 0) in lower precision: the next-token logits keep their direction
    px = preprocess_images([Image.open(image_dir / "t0.png")], rec.model.config.vision.image_size)
    ids = torch.tensor([rec.tokenizer.encode(image_prompt(rec.tokenizer, rec.model.image_tokens))])
    with torch.no_grad():
        full = rec.model(ids, pixel_values=px).logits[0, -1]
        low = low_rec.model(ids, pixel_values=px).logits[0, -1].float()
    assert torch.nn.functional.cosine_similarity(full, low, dim=0) > min_cosine


def test_unknown_dtype_is_a_clear_error() -> None:
    from tabvlm.errors import ConfigError

    with pytest.raises(ConfigError, match="dtype.*float16"):
        TableRecognizer.from_pretrained(TINY, dtype="float16")
