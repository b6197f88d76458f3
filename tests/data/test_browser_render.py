"""The browser renderer draws faithfully, in every style family, and its shards round-trip.

Needs Debian's Chromium at /usr/bin/chromium (`apt-get install chromium`; CI installs it in
scripts/test.sh); without it the tests that draw FAIL on purpose, as tests/test_webui_browser.py
does. One browser serves the whole module.
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tabvlm.data import synth as synth_module
from tabvlm.data.browser import CHROMIUM, BrowserConfig, BrowserRenderer, family_synth, make_browser_sample
from tabvlm.data.dataset import DataConfig
from tabvlm.data.families import FAMILIES
from tabvlm.data.fonts import discover_fonts
from tabvlm.data.render import RenderConfig, make_sample
from tabvlm.data.shards import ShardReader, expand_shards, shard_path, write_shard
from tabvlm.data.synth import SynthConfig, synthesize
from tabvlm.errors import ConfigError, DataError
from tabvlm.tables.grid import Table
from tabvlm.tables.html import to_html

ROOT = Path(__file__).resolve().parents[2]
FLAT = ("science", "government", "zh_financial", "web")  # families drawn at page scale (no crop)


@pytest.fixture(scope="module")
def fonts():
    return discover_fonts(need_cjk=True)


@pytest.fixture(scope="module")
def renderer(fonts):
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install it with `apt-get install -y chromium`")
    with BrowserRenderer(BrowserConfig(), fonts) as r:
        yield r


def _table(lang: str, seed: int, family: str) -> Table:
    """A grid in `lang` with at least one span and one blank cell, drawn under `family`'s rates."""
    cfg = family_synth(SynthConfig(zh_rate=float(lang == "zh"), span_rate=1.0, blank_rate=1.0,
                                   rows=(4, 12), cols=(3, 6)), family)  # fmt: skip
    for k in range(200):
        t = synthesize(random.Random(f"{seed}:{k}"), cfg)
        if t.has_span and t.has_blank:
            return t
    raise AssertionError("no table with spans and blanks drawn")


def _check_boxes(table: Table, out, slack: int = 0) -> None:
    """Cell boxes tile the table on one set of grid lines; text boxes lie in their cells."""
    w, h = out.image.size
    col_x: dict[int, int] = {}
    row_y: dict[int, int] = {}
    for c, (x0, y0, x1, y1) in zip(table.cells, out.cell_boxes):
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, (c, (x0, y0, x1, y1), (w, h))
        for key, val in ((c.col, x0), (c.end_col, x1)):
            assert col_x.setdefault(key, val) == val
        for key, val in ((c.row, y0), (c.end_row, y1)):
            assert row_y.setdefault(key, val) == val
    for c, cb, tb in zip(table.cells, out.cell_boxes, out.text_boxes):
        assert (tb is None) == (c.text.strip() == "")
        if tb is not None:
            assert cb[0] - slack <= tb[0] < tb[2] <= cb[2] + slack, (c, cb, tb)
            assert cb[1] - slack <= tb[1] < tb[3] <= cb[3] + slack, (c, cb, tb)
    # The characters drawn are the cell texts, nothing else (no caption, note or paragraph).
    assert "".join(ch for ch, _ in out.glyph_boxes) == "".join("".join(c.text.split()) for c in table.cells)


def test_every_family_draws_zh_and_en_with_spans_and_blanks(renderer):
    for family in FAMILIES:
        for lang in ("zh", "en"):
            table = _table(lang, 1, family)
            out = renderer.render(table, random.Random(7), family)
            assert (
                out.style["family"] == family
                and out.style["lang"] == lang
                and out.style["renderer"] == "browser"
            )
            assert out.image.mode == "RGB" and out.image.height <= BrowserConfig().max_height
            _check_boxes(table, out, slack=1 if family == "page_crop" else 0)
            if family == "page_crop":
                assert [d.split(":")[0] for d in out.style["degradations"]] == ["crop", "downscale", "jpeg"]


def test_characters_lie_under_their_boxes(renderer):
    # Inside each cell (its border band aside), every pixel unlike the cell's background lies in
    # a glyph box of that cell, and every glyph box holds some of them: ink and boxes agree.
    for family in FLAT:
        for lang in ("zh", "en"):
            table = _table(lang, 2, family)
            out = renderer.render(table, random.Random(3), family)
            img = np.asarray(out.image).astype(int)
            glyphs = np.zeros(img.shape[:2], bool)
            for _, (x0, y0, x1, y1) in out.glyph_boxes:
                glyphs[max(0, y0 - 1) : y1 + 1, max(0, x0 - 1) : x1 + 1] = True
            for ch, (x0, y0, x1, y1) in out.glyph_boxes:
                patch = img[y0:y1, x0:x1]
                assert (np.abs(patch - np.median(patch.reshape(-1, 3), axis=0)).max(axis=2) > 60).any(), (
                    family, ch, (x0, y0, x1, y1)
                )  # fmt: skip
            for c, (x0, y0, x1, y1) in zip(table.cells, out.cell_boxes):
                inner = img[y0 + 3 : y1 - 3, x0 + 3 : x1 - 3]
                if inner.size == 0:
                    continue
                bg = np.median(inner.reshape(-1, 3), axis=0)
                ink = np.abs(inner - bg).max(axis=2) > 60
                stray = ink & ~glyphs[y0 + 3 : y1 - 3, x0 + 3 : x1 - 3]
                assert not stray.any(), (family, lang, c, int(stray.sum()))


def test_sample_is_deterministic_and_superscripts_keep_the_cell_text(renderer):
    a = make_browser_sample(5, 11, SynthConfig(), renderer)
    b = make_browser_sample(5, 11, SynthConfig(), renderer)
    assert a[0] == b[0] and a[1].cell_boxes == b[1].cell_boxes and a[1].glyph_boxes == b[1].glyph_boxes
    assert np.array_equal(np.asarray(a[1].image), np.asarray(b[1].image))
    # A footnote mark drawn as a superscript is part of the cell's text and of its glyphs.
    table = Table(2, 2, [synth_module.Cell("Area (m2)", 0, 0), synth_module.Cell("R2", 0, 1),
                         synth_module.Cell("12.5a", 1, 0), synth_module.Cell("Total*", 1, 1)], 1)  # fmt: skip
    out = renderer.render(table, random.Random(0), "science")
    assert "".join(ch for ch, _ in out.glyph_boxes) == "Area(m2)R212.5aTotal*"
    width = [b[2] - b[0] for _, b in out.glyph_boxes]
    assert width[14] < width[18]  # the mark "a" of 12.5a is drawn smaller (<sup>) than Total's "a"


def test_missing_chromium_is_a_clear_error(fonts):
    with pytest.raises(DataError, match="Chromium not found at /nonexistent/chromium"):
        BrowserRenderer(BrowserConfig(chromium="/nonexistent/chromium"), fonts)
    with pytest.raises(ConfigError, match="browser.families"):
        BrowserConfig(families={"fancy": 1.0})


def test_default_synth_config_draws_no_document_content(monkeypatch):
    # The document-content pass draws nothing at its default rates: the PIL stream's sample i of a
    # seed is the same grid, and its generator is left in the same state for the drawing.
    cfg = SynthConfig()
    before = []
    for i in range(40):
        rng = random.Random(f"synth:0:{i}")
        before.append((to_html(synthesize(rng, cfg)), rng.random()))
    monkeypatch.setattr(synth_module, "_document_content", lambda *a, **k: None)
    for i in range(40):
        rng = random.Random(f"synth:0:{i}")
        assert (to_html(synthesize(rng, cfg)), rng.random()) == before[i]


def test_document_content_options():
    cfg = SynthConfig(unit_rate=1, footnote_rate=1, pm_rate=1, hierarchy_rate=1, long_header_rate=1,
                      row_label_rate=1, cols=(3, 6), rows=(6, 12))  # fmt: skip
    texts = " ".join(c.text for i in range(30) for c in synthesize(random.Random(i), cfg).cells)
    for piece in (" ± ", "(", "*", "其中", "Of which"):
        assert piece in texts, piece
    with pytest.raises(ConfigError, match="footnote_rate"):
        SynthConfig(footnote_rate=2.0)


def test_shard_round_trips_exactly(renderer, fonts, tmp_path):
    samples = [(*make_browser_sample(0, i, SynthConfig(), renderer), 0, i) for i in range(3)]
    samples.append((*make_sample(0, 3, SynthConfig(), RenderConfig(), fonts), 0, 3))  # PIL ones too
    path = shard_path(tmp_path, 0)
    assert write_shard(path, samples) == 4 and not list(tmp_path.glob("*.tmp"))
    reader = ShardReader(expand_shards([str(tmp_path / "shard-*.tar")]))
    assert len(reader) == 4
    for k, (table, rendered, seed, index) in enumerate(samples):
        got = reader[k]
        assert got.key == f"{index:09d}" and got.meta == {"seed": seed, "index": index}
        assert got.table == table and got.rendered.style == rendered.style
        assert (
            got.rendered.cell_boxes == rendered.cell_boxes and got.rendered.text_boxes == rendered.text_boxes
        )
        assert got.rendered.glyph_boxes == rendered.glyph_boxes
        assert np.array_equal(np.asarray(got.rendered.image), np.asarray(rendered.image))
    with pytest.raises(DataError, match="matches no .tar file"):
        expand_shards([str(tmp_path / "nothing-*.tar")])


def test_killed_writer_leaves_no_partial_shard(tmp_path):
    # Kill a shard writer mid-run: every file under a final name is whole; a rerun completes the set
    # and rewrites nothing that was whole. (PIL samples: the writer is the same for both renderers.)
    out = tmp_path / "shards"
    cmd = [sys.executable, "-m", "tabvlm.cli", "synth", "--n", "120", "--shard-size", "10", "--seed", "2",
           "--out", str(out), "synth.rows=[2,8]", "synth.cols=[2,5]"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not shard_path(out, 2).exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the writer ended or stalled"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finals = sorted(out.glob("shard-*.tar"))
    assert 3 <= len(finals) < 12
    before = {p.name: p.read_bytes() for p in finals}
    for p in finals:
        assert len(ShardReader([p])) == 10
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    reader = ShardReader(sorted(out.glob("shard-*.tar")))
    assert [reader.index[k][1] for k in range(len(reader))] == [f"{i:09d}" for i in range(120)]
    assert all((out / name).read_bytes() == data for name, data in before.items())
    assert not list(out.glob("*.tmp"))


def test_shard_stream_mixes_by_ratio_and_resumes_exactly(renderer, tmp_path):
    from tabvlm.data.dataset import SynthSamples
    from tabvlm.model.config import load_model_config
    from tabvlm.tokenizer import load_tokenizer
    from tabvlm.train.data import SampleSource, ShardSamples, SynthMix, TrainStream

    write_shard(shard_path(tmp_path, 0), ((*make_browser_sample(0, i, SynthConfig(rows=(2, 5), cols=(2, 4)),
                                                                renderer), 0, i) for i in range(4)))  # fmt: skip
    tok, mcfg = load_tokenizer(), load_model_config(ROOT / "configs" / "tiny.yaml")
    data = DataConfig(synth=SynthConfig(rows=(2, 5), cols=(2, 4)), image_size=mcfg.vision.image_size,
                      max_len=1024, shards=[str(tmp_path / "*.tar")], shard_ratio=0.25)  # fmt: skip
    shards = ShardSamples(data, tok, mcfg.image_tokens, reading=True)
    pil = SynthSamples(data, tok, mcfg.image_tokens, reading=True)
    mix = SynthMix(pil, shards, data.shard_ratio)
    got = [mix(s) for s in range(12)]
    from_shards = [s for s in got if "shard_key" in s]
    assert len(from_shards) == 3 and [s["index"] for s in from_shards] == [0, 1, 2]
    assert sorted(s["shard_key"] for s in got if "shard_key" in s) != [] and len(shards) == 4
    # Every key once per epoch (4 positions), in a shuffle that depends on the data seed only.
    assert sorted(shards.reader.index[shards.position(k)][1] for k in range(4)) == [
        f"{i:09d}" for i in range(4)
    ]
    for s in got:
        assert s["pixel_values"].shape == (1, 3, data.image_size, data.image_size) and "reading" in s
    # Through the trainer's source: a stream started after c consumed samples is the continuation.
    source = SampleSource(1.0, mix, [], 0)
    full = TrainStream(source, 0, 1, 0, 2)
    resumed = TrainStream(source, 0, 1, 6, 2)
    a = [s for _, s in zip(range(10), iter(full))][6:]
    b = [s for _, s in zip(range(4), iter(resumed))]
    for x, y in zip(a, b):
        assert x.get("shard_key") == y.get("shard_key") and torch.equal(x["input_ids"], y["input_ids"])
        assert torch.equal(x["pixel_values"], y["pixel_values"])
    with pytest.raises(ConfigError, match="shard_ratio"):
        dataclasses.replace(data, shards=[])
