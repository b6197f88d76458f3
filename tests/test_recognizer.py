"""TableRecognizer and `tabvlm predict`: loading, predictions, bad images, output files."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from images import bomb_png
from PIL import Image

from tabvlm.commands import predict as predict_cmd
from tabvlm.errors import ConfigError, DataError, TabVLMError
from tabvlm.generate import image_prompt
from tabvlm.model import TabVLM, load_model_config
from tabvlm.recognizer import TableRecognizer
from tabvlm.tables.html import parse_html, to_html
from tabvlm.tables.views import to_csv, to_markdown
from tabvlm.tokenizer import load_tokenizer

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
    assert (pred.markdown, pred.csv) == (to_markdown(pred.table), to_csv(pred.table)) and pred.markdown
    assert 0 < pred.tokens <= 24 and pred.image_seconds > 0
    assert (pred.batch_size, pred.model_seconds) == (1, pred.batch_seconds) and pred.batch_seconds > 0


def test_predict_many_matches_predict(rec: TableRecognizer, image_dir: Path) -> None:
    paths = [image_dir / "t0.png", image_dir / "t1.png", image_dir / "t0.png"]
    many = rec.predict_many(paths, batch_size=2)
    assert [p.raw for p in many] == [rec.predict(p).raw for p in paths]


def test_times_say_what_was_measured_per_image_and_what_per_batch(
    rec: TableRecognizer, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tabvlm.recognizer as recognizer

    real = recognizer.load_image

    def slow_for_t1(image, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if Path(image).name == "t1.png":
            time.sleep(0.2)
        return real(image, *args, **kwargs)

    monkeypatch.setattr(recognizer, "load_image", slow_for_t1)
    paths = [image_dir / "t0.png", image_dir / "t1.png", image_dir / "t0.png"]
    preds = rec.predict_many(paths, batch_size=2)
    assert [p.batch_size for p in preds] == [2, 2, 1]
    assert preds[0].batch_seconds == preds[1].batch_seconds != preds[2].batch_seconds
    assert all(p.model_seconds == p.batch_seconds / p.batch_size for p in preds)
    # the image's own time is its own: only t1 waited 0.2 s
    assert preds[1].image_seconds >= 0.2 > max(preds[0].image_seconds, preds[2].image_seconds)


def test_unreadable_image_names_path(rec: TableRecognizer, image_dir: Path) -> None:
    with pytest.raises(DataError, match="broken.png.*cannot read"):
        rec.predict(image_dir / "broken.png")
    with pytest.raises(DataError, match="missing.png: no such image file"):
        rec.predict(image_dir / "missing.png")


def test_model_folder_round_trip(rec: TableRecognizer, image_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TabVLMError, match="decode transform"):  # rec's model is inference-only
        rec.model.save_pretrained(tmp_path / "m", tokenizer=rec.tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # rec's weights, as loaded before the transform
        TabVLM(load_model_config(TINY)).save_pretrained(tmp_path / "m", tokenizer=rec.tokenizer)
    again = TableRecognizer.from_pretrained(tmp_path / "m", max_new_tokens=24)
    assert again.predict(image_dir / "t1.png").raw == rec.predict(image_dir / "t1.png").raw


def test_cli_jsonl_and_bad_images(image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "preds.jsonl"
    rc = predict_cmd.main(["--model", TINY, "--max-new-tokens", "16", "--out", str(out), str(image_dir)])
    assert rc == 1  # broken.png was skipped
    assert "broken.png" in capsys.readouterr().err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == ["t0", "t1"]
    assert all(x["html"].startswith("<table>") and x["image_seconds"] > 0 and x["tokens"] > 0 for x in lines)
    # one batch of two: its time, and each image's equal share of it
    assert [x["batch_size"] for x in lines] == [2, 2] and lines[0]["batch_seconds"] == lines[1][
        "batch_seconds"
    ]
    assert lines[0]["model_seconds"] == pytest.approx(lines[0]["batch_seconds"] / 2, abs=1e-4)
    assert "seconds" not in lines[0]


def test_cli_stdout_names_each_table_and_logs_plain_progress(
    image_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    images = [str(image_dir / "t0.png"), str(image_dir / "t1.png")]
    assert predict_cmd.main(["--model", TINY, "--max-new-tokens", "16", *images]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 4 and lines[1].startswith("<table>") and lines[3].startswith("<table>")
    for line, image in zip(lines[::2], images):
        assert re.fullmatch(
            rf"== {re.escape(image)} \| \d+ tokens \| model \d+\.\d\d s \(1/2 of a \d+\.\d\d s batch\)"
            r" \| load \d\.\d{3} s",
            line,
        ), line
    # stderr is not a terminal here (as in a log file): a plain line, no carriage returns
    assert "\r" not in captured.err and re.search(r"^predict: 2/2 img \(100%\)", captured.err, re.M)
    assert predict_cmd.main(["--model", TINY, "--max-new-tokens", "16", "--format", "json", *images]) == 0
    assert [json.loads(line)["image"] for line in capsys.readouterr().out.splitlines()] == images


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
    from tabvlm.image import preprocess_images

    low_rec = TableRecognizer.from_pretrained(TINY, dtype=dtype, max_new_tokens=24)
    # bf16 parameters; int8 keeps float32 parameters (vision, embeddings, norms) and holds the
    # LM's linears and head as int8 buffers (tabvlm.model.decode)
    assert {p.dtype for p in low_rec.model.parameters()} == {getattr(torch, held_in)}
    assert any(b.dtype == torch.int8 for b in low_rec.model.buffers()) == (dtype == "int8")
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
    with pytest.raises(ConfigError, match="dtype.*float16"):
        TableRecognizer.from_pretrained(TINY, dtype="float16")


@pytest.fixture(scope="module")
def short_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model folder whose LM holds 64 positions (the prompt takes most of them)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TabVLM(load_model_config(TINY, ["lm.max_position_embeddings=64"]))
    folder = tmp_path_factory.mktemp("short") / "model"
    model.save_pretrained(folder, tokenizer=load_tokenizer())
    return folder


def test_cli_reports_a_decompression_bomb_and_predicts_the_rest(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("t0.png", "t1.png"):
        shutil.copy(image_dir / name, inputs / name)
    (inputs / "bomb.png").write_bytes(bomb_png(30000, 30000))
    out = tmp_path / "preds.jsonl"
    rc = predict_cmd.main(["--model", TINY, "--max-new-tokens", "16", "--out", str(out), str(inputs)])
    err = capsys.readouterr().err
    assert rc == 1 and "bomb.png" in err and "decompression bomb" in err and "Traceback" not in err
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["t0", "t1"]


def test_cli_an_image_whose_recognition_fails_takes_no_other_with_it(
    image_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    Image.new("RGB", (77, 40), "white").save(tmp_path / "odd.png")
    real = TableRecognizer.predict_many

    def fragile(self, images, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if any(im.size[0] == 77 for im in images):
            raise RuntimeError("boom")
        return real(self, images, *args, **kwargs)

    monkeypatch.setattr(TableRecognizer, "predict_many", fragile)
    out = tmp_path / "preds.jsonl"
    paths = [str(image_dir / "t0.png"), str(tmp_path / "odd.png"), str(image_dir / "t1.png")]
    rc = predict_cmd.main(["--model", TINY, "--max-new-tokens", "16", "--out", str(out), *paths])
    err = capsys.readouterr().err
    assert rc == 1 and "failed" in err and "odd.png: RuntimeError: boom" in err
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["t0", "t1"]


def test_generating_past_the_models_positions_is_capped_and_says_so(
    short_model: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rec = TableRecognizer.from_pretrained(short_model)  # max_new_tokens 2048, 64 positions
    pred = rec.predict(image_dir / "t0.png")
    assert pred.finish_reason == "length" and pred.truncated and pred.html.startswith("<table>")
    assert pred.tokens <= 64 - len(rec.tokenizer.encode(image_prompt(rec.tokenizer, rec.model.image_tokens)))
    out = tmp_path / "preds.jsonl"
    rc = predict_cmd.main(["--model", str(short_model), "--out", str(out), str(image_dir)])
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == ["t0", "t1"] and all(x["truncated"] for x in lines)
    assert rc == 1  # broken.png
    assert "t0.png: output cut short" in capsys.readouterr().err


def test_cli_gives_images_that_share_a_stem_distinct_files(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(image_dir / "t0.png", tmp_path / folder / "t.png")
    Image.open(image_dir / "t1.png").save(tmp_path / "a" / "t.jpg")
    images = [str(tmp_path / "a" / "t.png"), str(tmp_path / "a" / "t.jpg"), str(tmp_path / "b" / "t.png")]
    out = tmp_path / "out"
    assert predict_cmd.main(["--model", TINY, "--max-new-tokens", "16", "--out", str(out), *images]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["t.jpg.html", "t.png-2.html", "t.png.html"]
    err = capsys.readouterr().err
    assert f"{tmp_path / 'b' / 't.png'} -> t.png-2.html" in err


def test_cli_finds_the_images_of_a_synth_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tabvlm.commands import synth

    assert synth.main(["--n", "2", "--seed", "1", "--out", str(tmp_path / "s"), "synth.zh_rate=0.0"]) == 0
    out = tmp_path / "preds.jsonl"
    rc = predict_cmd.main(["--model", TINY, "--max-new-tokens", "8", "--out", str(out), str(tmp_path / "s")])
    assert rc == 0
    gt = [json.loads(x)["meta"]["id"] for x in (tmp_path / "s" / "gt.jsonl").read_text().splitlines()]
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == gt == ["000000", "000001"]


def test_model_folder_without_a_tokenizer_is_an_error(tmp_path: Path) -> None:
    TabVLM(load_model_config(TINY)).save_pretrained(tmp_path / "m")  # no tokenizer given
    with pytest.raises(ConfigError, match=f"{tmp_path / 'm'}: no tokenizer.json in the model folder"):
        TableRecognizer.from_pretrained(tmp_path / "m")


def test_cli_out_is_prepared_before_the_model_loads(
    image_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "new" / "deeper" / "preds.jsonl"  # missing folders are created
    args = ["--model", TINY, "--max-new-tokens", "8", "--out", str(out), str(image_dir / "t0.png")]
    assert predict_cmd.main(args) == 0 and len(out.read_text().splitlines()) == 1

    def no_model(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(TableRecognizer, "from_pretrained", no_model)
    (tmp_path / "file").write_text("a file, not a folder")
    bad = tmp_path / "file" / "preds.jsonl"
    with pytest.raises(DataError, match=f"{bad}: cannot write the output here"):
        predict_cmd.main(["--model", TINY, "--out", str(bad), str(image_dir / "t0.png")])


def test_cli_interrupted_leaves_no_half_written_jsonl(
    image_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = TableRecognizer.predict_many

    def interrupted(self, images, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(len(images))
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(self, images, *args, **kwargs)

    monkeypatch.setattr(TableRecognizer, "predict_many", interrupted)
    out = tmp_path / "preds.jsonl"
    paths = [str(image_dir / "t0.png"), str(image_dir / "t1.png")]
    with pytest.raises(KeyboardInterrupt):
        predict_cmd.main(
            ["--model", TINY, "--max-new-tokens", "8", "--batch-size", "1", "--out", str(out), *paths]
        )
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary
