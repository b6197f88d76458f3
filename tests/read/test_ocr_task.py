"""The OCR task: `TableRecognizer.predict(task="ocr")` and `tabvlm predict --task ocr` give the
reader's text, one line per visual line, without running the model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tabvlm.commands import predict as predict_cmd
from tabvlm.recognizer import TableRecognizer

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "examples" / "en-span.png"
FIRST_LINES = ["Region Mean Region", "Lewis, Smith and Young"]


def test_recognizer_ocr_task_returns_the_readers_text_without_the_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rec = TableRecognizer.from_pretrained(ROOT / "configs" / "tiny.yaml", reader_options={"threads": 1})

    def no_model(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the model ran for the ocr task")

    monkeypatch.setattr("tabvlm.recognizer.generate", no_model)
    pred = rec.predict(IMAGE, task="ocr")
    assert pred.text.splitlines()[:2] == FIRST_LINES and pred.raw == pred.text
    assert pred.table is None and pred.html == "" and pred.tokens == 0
    many = rec.predict_many([IMAGE, IMAGE.read_bytes()], task="ocr")
    assert [p.text for p in many] == [pred.text, pred.text]


def test_cli_predict_task_ocr_prints_and_writes_text(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_model(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a model was loaded for --task ocr")

    monkeypatch.setattr(TableRecognizer, "from_pretrained", no_model)
    assert predict_cmd.main(["--task", "ocr", "--reader-threads", "1", str(IMAGE)]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == FIRST_LINES

    assert predict_cmd.main(["--task", "ocr", "--out", str(tmp_path / "txt"), str(IMAGE)]) == 0
    assert (tmp_path / "txt" / "en-span.txt").read_text().splitlines()[:2] == FIRST_LINES

    out = tmp_path / "ocr.jsonl"
    assert predict_cmd.main(["--task", "ocr", "--out", str(out), str(IMAGE)]) == 0
    rec = json.loads(out.read_text())
    assert rec["id"] == "en-span" and rec["text"].splitlines()[:2] == FIRST_LINES and rec["html"] == ""


def test_cli_ocr_of_an_image_without_text_still_has_a_text_field_and_headers_say_reader_time(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re
    import time

    from PIL import Image

    import tabvlm.read
    from tabvlm.recognizer import read_predictions

    def blank_page(image, **options) -> str:  # noqa: ANN001, ANN003
        time.sleep(0.01)
        return ""  # what the reader reads on a page with no text

    monkeypatch.setattr(tabvlm.read, "read_text", blank_page)
    blank = [tmp_path / "a.png", tmp_path / "b.png"]
    for path in blank:
        Image.new("RGB", (80, 40), "white").save(path)
    [pred] = read_predictions([blank[0]])
    assert pred.text == "" and pred.model_seconds == 0 and pred.reader_seconds >= 0.01

    out = tmp_path / "ocr.jsonl"
    assert predict_cmd.main(["--task", "ocr", "--out", str(out), *map(str, blank)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["text"], r["html"], r["model_seconds"]) for r in records] == [("", "", 0)] * 2
    assert all(r["reader_seconds"] >= 0.01 for r in records)

    assert predict_cmd.main(["--task", "ocr", *map(str, blank)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[1::2] == ["", ""]  # each header, then the (empty) text
    for line, path in zip(lines[::2], blank, strict=True):
        assert re.fullmatch(rf"== {re.escape(str(path))} \| reader \d+\.\d\d s", line), line
