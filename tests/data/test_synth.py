"""The grid generator (determinism, validity, the controls of SynthConfig) and `tabvlm synth`."""

from __future__ import annotations

import json
import random

import pytest
from PIL import Image

from tabvlm import config as config_io
from tabvlm.cli import main as cli_main
from tabvlm.data.synth import HEADERS, STATUS, SynthConfig, has_cjk, make_pools, normalise_text, synthesize
from tabvlm.errors import ConfigError
from tabvlm.tables.html import parse_html, to_html
from tabvlm.tasks import user_prompt

N = 60


def tables(cfg: SynthConfig, n: int = N, seed: int = 0):
    return [synthesize(random.Random(seed * 100_000 + i), cfg) for i in range(n)]


def test_same_seed_same_table_and_every_grid_is_valid():
    cfg = SynthConfig()
    for i in range(N):
        a, b = synthesize(random.Random(i), cfg), synthesize(random.Random(i), cfg)
        assert a == b
        a.validate()
    assert synthesize(random.Random(1), cfg) != synthesize(random.Random(2), cfg)


def test_text_is_normalised_and_headers_stay_in_the_header():
    for t in tables(SynthConfig(span_rate=1.0, long_text_rate=1.0)):
        for c in t.cells:
            assert c.text == normalise_text(c.text)
            assert "\n" not in c.text
            if c.row < t.header_rows:
                assert c.end_row <= t.header_rows, "a header cell spans into the body"
            else:
                assert c.row >= t.header_rows


def test_escapable_characters_appear_when_asked():
    ts = tables(SynthConfig(escape_rate=1.0, rows=(10, 20)), n=10)
    assert any(ch in c.text for t in ts for c in t.cells for ch in "&<>")
    assert not any(
        ch in c.text for t in tables(SynthConfig(escape_rate=0.0)) for c in t.cells for ch in "&<>"
    )


def test_sizes_respect_the_ranges():
    cfg = SynthConfig(rows=(5, 9), cols=(2, 4), header_rows=(2, 3))
    for t in tables(cfg):
        assert 5 <= t.n_rows <= 9 and 2 <= t.n_cols <= 4
        assert t.header_rows == 0 or 2 <= t.header_rows <= 3
    big = tables(SynthConfig(rows=(40, 40), cols=(15, 15)), n=3)
    assert all((t.n_rows, t.n_cols) == (40, 15) for t in big)


def test_zero_rates_switch_spans_and_blanks_off():
    for t in tables(SynthConfig(span_rate=0.0, blank_rate=0.0)):
        assert not t.has_span and not t.has_blank


def test_full_rates_give_spans_blanks_and_multilevel_headers():
    ts = tables(SynthConfig(span_rate=1.0, blank_rate=1.0, rows=(8, 40), cols=(4, 15), header_rows=(2, 3)))
    assert sum(t.has_span for t in ts) > 0.8 * N
    assert sum(t.has_blank for t in ts) > 0.8 * N
    # Multi-level headers: a header cell with colspan above the last header row.
    assert any(c.colspan > 1 and c.end_row < t.header_rows for t in ts for c in t.cells)
    assert any(c.rowspan > 1 and c.row >= t.header_rows for t in ts for c in t.cells)


def test_language_mix_follows_zh_rate():
    def zh_share(rate: float) -> float:
        ts = tables(SynthConfig(zh_rate=rate, mix_rate=0.0))
        return sum(any(has_cjk(c.text) for c in t.cells) for t in ts) / len(ts)

    assert zh_share(0.0) == 0.0
    assert zh_share(1.0) == 1.0
    assert 0.25 < zh_share(0.5) < 0.75


def test_numeric_columns_stay_numeric():
    # A column whose header names money/percent holds only numbers in its body (or blanks).
    cfg = SynthConfig(span_rate=0.0, escape_rate=0.0, zh_rate=0.0, blank_rate=0.0)
    seen = 0
    for t in tables(cfg):
        if t.header_rows != 1:
            continue
        for head in t.row_cells(0):
            if head.text in ("Growth", "Share", "Rate", "Margin", "Change", "YoY", "Accuracy"):
                body = [c.text for c in t.cells if c.col == head.col and c.row >= 1]
                assert all(any(ch.isdigit() for ch in x) for x in body), body
                seen += 1
    assert seen > 0


def test_content_controls_narrow_the_cell_text():
    # The quickstart's task: row labels from the word pool, integers below 1000, statuses, years.
    cfg = SynthConfig(
        rows=(2, 4), cols=(2, 3), header_rows=(1, 1), zh_rate=0.0, span_rate=0.0, blank_rate=0.0, long_text_rate=0.0,
        escape_rate=0.0, pool_size=20, column_types={"label": 3, "int": 5, "status": 1, "year": 1},
        label_sources=("words",), number_magnitudes=(10, 100, 1000),
    )  # fmt: skip
    words = {w.capitalize() for w in make_pools("en", 0, 20).words}
    statuses = set(STATUS["en"])
    headers = {h for kind in ("label", "int", "status", "year") for h in HEADERS["en"][kind]}
    kinds_seen = set()
    for t in tables(cfg, 200):
        for c in t.cells:
            if c.row < t.header_rows:
                assert c.text in headers, c.text
            elif c.text in words:
                kinds_seen.add("label")
            elif c.text in statuses:
                kinds_seen.add("status")
            else:  # an integer below 1000 (negatives as -8 or (8)) or a year
                digits = c.text.strip("-()")
                assert digits.isdigit() and (int(digits) < 1000 or 1990 <= int(digits) <= 2025), c.text
                kinds_seen.add("number")
    assert kinds_seen == {"label", "status", "number"}


def test_content_controls_reject_unknown_values():
    with pytest.raises(ConfigError, match="column_types.*'money2'"):
        SynthConfig(column_types={"money2": 1.0})
    with pytest.raises(ConfigError, match="column_types"):
        SynthConfig(column_types={"int": 0.0})
    with pytest.raises(ConfigError, match="label_sources"):
        SynthConfig(label_sources=("verbs",))
    with pytest.raises(ConfigError, match="number_magnitudes"):
        SynthConfig(number_magnitudes=(0,))


def test_config_from_yaml_and_bad_values(tmp_path):
    path = tmp_path / "synth.yaml"
    path.write_text("rows: [2, 5]\nzh_rate: 0.25\n")
    cfg = config_io.load(SynthConfig, path, ["span_rate=0"])
    assert cfg.rows == (2, 5) and cfg.zh_rate == 0.25 and cfg.span_rate == 0.0
    with pytest.raises(ConfigError, match="zh_rate"):
        SynthConfig(zh_rate=1.5)
    with pytest.raises(ConfigError, match="cols"):
        SynthConfig(cols=(5, 2))


# ----- the synth command -----
SMALL = ["synth.rows=[2,8]", "synth.cols=[1,5]"]


def test_synth_writes_images_and_canonical_records(tmp_path, capsys):
    out = tmp_path / "set"
    sheet = tmp_path / "sheet.png"
    assert (
        cli_main(["synth", "--n", "5", "--seed", "3", "--out", str(out), "--preview", str(sheet), *SMALL])
        == 0
    )
    assert "wrote 5 samples" in capsys.readouterr().out
    lines = (out / "gt.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5 and sorted(p.name for p in (out / "images").iterdir()) == [
        f"{i:06d}.png" for i in range(5)
    ]
    for i, line in enumerate(lines):
        rec = json.loads(line)
        assert rec["image"] == f"images/{i:06d}.png"
        user, assistant = rec["conversations"]
        assert user == {"role": "user", "content": user_prompt("html")}
        assert assistant["role"] == "assistant"
        table = parse_html(assistant["content"])
        assert to_html(table) == assistant["content"]  # canonical
        meta = rec["meta"]
        assert meta["id"] == f"{i:06d}" and meta["seed"] == 3
        assert (
            meta["lang"] in ("zh", "en")
            and meta["span"] == table.has_span
            and meta["blank"] == table.has_blank
        )
        assert {"style", "font", "font_size", "degradations"} <= set(meta["style"])
        with Image.open(out / rec["image"]) as im:
            assert im.mode == "RGB"
    with Image.open(sheet) as im:
        assert im.width == 4 * 360


def test_workers_give_identical_output(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli_main(["synth", "--n", "6", "--seed", "9", "--out", str(one), *SMALL]) == 0
    assert cli_main(["synth", "--n", "6", "--seed", "9", "--out", str(two), "--workers", "2", *SMALL]) == 0
    assert (one / "gt.jsonl").read_bytes() == (two / "gt.jsonl").read_bytes()
    for i in range(6):
        name = f"images/{i:06d}.png"
        assert (one / name).read_bytes() == (two / name).read_bytes()


def test_unknown_override_is_an_error(tmp_path, capsys):
    assert cli_main(["synth", "--n", "1", "--out", str(tmp_path), "synth.colour=red"]) == 1
    assert "colour" in capsys.readouterr().err
