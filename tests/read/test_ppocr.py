"""The PP-OCRv6 reader on drawn images: offline, reading order, CJK, empty, huge, failures."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tabvlm.errors import ConfigError, DataError
from tabvlm.read import get_reader, ppocr, read_text, read_words
from tabvlm.read.ppocr import PPOCRConfig, PPOCRReader

ROOT = Path(__file__).resolve().parents[2]

OFFLINE = """
import json, socket, sys

def refuse(self, *args, **kwargs):
    raise OSError("the network is off in this test")

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
try:
    socket.create_connection(("127.0.0.1", 9), timeout=1)
    sys.exit("the network patch is not in force")
except OSError as e:
    assert "network is off" in str(e), e

from tabvlm.read import read_words

print(json.dumps([w.text for w in read_words(sys.argv[1], cache=False)]))
"""


def test_reads_offline_from_the_wheels_model_files() -> None:
    # a fresh process whose every socket connect raises: importing rapidocr, building the engine
    # and reading all work from the files inside the wheel
    image = ROOT / "examples" / "en-span.png"
    run = subprocess.run(
        [sys.executable, "-c", OFFLINE, str(image)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    texts = json.loads(run.stdout.strip().splitlines()[-1])
    assert texts[:3] == ["Region", "Mean", "Region"]
    assert "Lewis," in texts and "Bradford-Sanchez" in texts


def test_two_rows_come_back_row_by_row_left_to_right(draw) -> None:
    img = draw(
        (420, 130),
        [
            ("Apple", (20, 20), 28),
            ("Berry", (230, 24), 28),
            ("Cherry", (20, 80), 28),
            ("42.5", (230, 78), 28),
        ],
    )
    words = read_words(img, cache=False)
    assert [w.text for w in words] == ["Apple", "Berry", "Cherry", "42.5"]
    (a, b, c, d) = (w.box for w in words)
    assert a[0] < b[0] and c[0] < d[0]  # left to right
    assert max(a[3], b[3]) <= min(c[1], d[1]) + 5  # the first row above the second
    assert a[0] == pytest.approx(20, abs=8) and c[1] == pytest.approx(80, abs=10)  # boxes in pixels
    assert all(0.5 <= w.score <= 1.0 for w in words)
    assert read_text(img, cache=False) == "Apple Berry\nCherry 42.5"


def test_a_chinese_line_gives_one_word_per_character(draw) -> None:
    line = "我们的数据表格"
    words = read_words(draw((360, 70), [(line, (20, 15), 32)], cjk_font=True), cache=False)
    assert [w.text for w in words] == list(line)
    lefts = [w.box[0] for w in words]
    assert lefts == sorted(lefts) and words[0].box[0] == pytest.approx(20, abs=10)
    assert all(w.box[2] - w.box[0] < 40 for w in words)  # a character's box, not the line's


def test_an_image_without_text_gives_no_words(draw) -> None:
    assert read_words(draw((200, 100), []), cache=False) == []
    assert read_text(draw((200, 100), []), cache=False) == ""


def test_a_huge_image_is_downscaled_with_a_warning_and_boxes_stay_in_its_pixels(draw, caplog) -> None:
    img = draw((9000, 1200), [("2024", (450, 400), 120), ("Total", (7000, 400), 120)])
    with caplog.at_level(logging.WARNING, logger="tabvlm.read.ppocr"):
        words = read_words(img, name="huge.png", cache=False)
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("huge.png" in m and "9000x1200" in m and "max_side 2000" in m for m in warning), warning
    assert [w.text for w in words] == ["2024", "Total"]
    assert words[1].box[0] == pytest.approx(7000, abs=60) and words[1].box[1] == pytest.approx(420, abs=60)
    assert words[1].box[2] - words[1].box[0] > 200  # the original's size, not the downscaled one's


def test_a_corrupt_image_is_a_data_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(DataError, match="broken.png"):
        read_words(bad, cache=False)
    with pytest.raises(DataError, match="missing.png.*no such image"):
        read_words(tmp_path / "missing.png", cache=False)
    with pytest.raises(DataError, match="upload.png"):
        read_words(b"junk", name="upload.png", cache=False)


def test_a_failure_inside_rapidocr_is_a_data_error_naming_the_image(draw, monkeypatch) -> None:
    cfg = PPOCRConfig(min_score=0.42)  # an engine of its own, so the others stay real

    def broken(image):  # noqa: ANN001, ANN202
        raise ValueError("cv2 said no")

    monkeypatch.setitem(ppocr._ENGINES, cfg, (broken, threading.Lock()))
    with pytest.raises(
        DataError, match=r"scan-7\.png: the reader \(PP-OCRv6\) failed: ValueError: cv2 said no"
    ):
        PPOCRReader(cfg).read(draw((50, 20), []), name="scan-7.png")


def test_one_engine_per_config_is_built_once_and_reused(draw) -> None:
    img = draw((120, 40), [("Hi", (10, 5), 20)])
    read_words(img, cache=False, rec_batch_num=7)
    engine = ppocr._ENGINES[PPOCRConfig(rec_batch_num=7)][0]
    read_words(img, cache=False, rec_batch_num=7)
    assert ppocr._ENGINES[PPOCRConfig(rec_batch_num=7)][0] is engine
    assert engine.cfg.Rec.rec_batch_num == 7 and engine.cfg.EngineConfig.onnxruntime.intra_op_num_threads == 1
    assert Path(engine.cfg.Det.model_path).name == "PP-OCRv6_det_small.onnx"


def test_bad_options_and_readers_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="thredas"):
        get_reader("ppocr", thredas=2)
    with pytest.raises(ConfigError, match="threads must be an int >= 1"):
        get_reader("ppocr", threads=0)
    with pytest.raises(ConfigError, match="min_score"):
        PPOCRConfig(min_score=1.5)
    with pytest.raises(ConfigError, match=r"tabvlm\.read\.truth"):
        get_reader("truth")
    with pytest.raises(ConfigError, match="unknown reader 'tesseract'; known: ppocr, truth"):
        read_words(b"", reader="tesseract")


def test_cache_id_names_what_changes_the_words() -> None:
    base = PPOCRReader().cache_id
    assert base.startswith("ppocr/rapidocr-3.10")
    assert PPOCRReader(PPOCRConfig(threads=2)).cache_id == base  # threads change speed, not words
    assert PPOCRReader(PPOCRConfig(use_cls=True)).cache_id != base
