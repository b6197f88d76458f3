"""Metrics (ED, TEDS, TEDS-struct), the per-category report, and `tabvlm eval`.

The agreement tests score seeded (GT, perturbed prediction) pairs with tabvlm.evaluate and with the
independent scorer ../shared/tools/tabmetrics.py (env TABVLM_SHARED names another shared folder);
without that folder they skip, with the reason in the summary (`-rs`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
from pathlib import Path
from types import ModuleType

import pytest

from tabvlm import cli
from tabvlm.commands import eval as eval_cmd
from tabvlm.errors import DataError
from tabvlm.evaluate import (
    CATEGORIES,
    GTItem,
    canonical_html,
    edit_distance,
    evaluate,
    format_report,
    load_gt,
    load_predictions,
    score_sample,
    teds,
)

SHARED = Path(os.environ.get("TABVLM_SHARED") or Path(__file__).parents[1].parent / "shared")
REAL_GT = SHARED / "realtables" / "gt.jsonl"

HANDMADE = [
    # thead + th + spans, entity, padded cell, empty cell
    '<table><thead><tr><th rowspan="2">Name</th><th colspan="2">Score</th></tr><tr><th>A</th>'
    "<th>B</th></tr></thead><tbody><tr><td>x &amp; y</td><td> 1 </td><td></td></tr></tbody></table>",
    # layout whitespace, caption, colgroup, inline tags, nbsp, odd span values, text after the table
    '\n<table border="1">\n <caption>T</caption><colgroup><col><col></colgroup>\n  <tr>\n'
    "    <td><b>Bold</b> text&nbsp;here </td>\n    <td>a<sup>2</sup>  +  b<sub>i</sub></td>\n  </tr>\n"
    '  <tr><td colspan="2px">  spanned&lt;cell&gt;  </td></tr>\n</table> trailing text',
    # Chinese, full-width characters and spaces, a span written with spaces
    '<table><tr><td>项目</td><td>金额（元）</td></tr><tr><td rowspan=" 2 ">合计</td><td>１２３</td></tr>'
    "<tr><td>\u3000</td></tr></table>",
    # text before the table, comments, tfoot, numeric entity, a second table
    "<p>Table 1</p><!-- c --><table><tr><td>a<!-- x -->b</td><td>&#x4e2d;</td></tr><tfoot><tr>"
    "<td>foot</td><td><i> it </i></td></tr></tfoot></table><table><tr><td>second</td></tr></table>",
    # a table nested in a cell, rowspan 0
    '<table><tr><td>outer<table><tr><td>inner</td></tr></table></td><td rowspan="0">z</td></tr></table>',
]

_CELL = re.compile(r"<t[dh]\b[^>]*>.*?</t[dh]>", re.S)
_ROW = re.compile(r"<tr\b[^>]*>.*?</tr>", re.S)
_SPAN = re.compile(r'(colspan|rowspan)="\s*(\d+)')


@pytest.fixture(scope="module")
def tabmetrics() -> ModuleType:
    """The independent scorer, loaded by path; without the shared folder its tests skip, saying so."""
    path = SHARED / "tools" / "tabmetrics.py"
    if not path.is_file():
        pytest.skip(
            f"independent scorer not found at {path}: clone the shared folder beside the repo "
            "or set TABVLM_SHARED to it"
        )
    spec = importlib.util.spec_from_file_location("tabmetrics", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def real_records() -> list[dict]:
    if not REAL_GT.is_file():
        pytest.skip(
            f"real dev set not found at {REAL_GT}: clone the shared folder beside the repo "
            "or set TABVLM_SHARED to it"
        )
    return [json.loads(line) for line in REAL_GT.read_text(encoding="utf-8").splitlines() if line.strip()]


# ----------------------------------------------------------------------------- perturbations
def _pick(rng: random.Random, pattern: re.Pattern, html: str) -> re.Match | None:
    matches = list(pattern.finditer(html))
    return rng.choice(matches) if matches else None


def _replace(html: str, m: re.Match | None, new: str) -> str:
    return html if m is None else html[: m.start()] + new + html[m.end() :]


def perturb(rng: random.Random, html: str, kind: str) -> str:
    """A prediction derived from `html` by one seeded edit of the given kind."""
    if kind == "identity":
        return html
    if kind == "reformat":  # same table, other markup: th for td, layout whitespace
        return html.replace("<td", "<th").replace("</td>", "</th>").replace("><", ">\n  <")
    if kind == "plain_text":  # inline tags lost: cell tokens differ
        return re.sub(r"</?(b|i|sup|sub)>", "", html)
    if kind == "drop_cell":
        return _replace(html, _pick(rng, _CELL, html), "")
    if kind == "dup_cell":
        m = _pick(rng, _CELL, html)
        return _replace(html, m, m.group(0) * 2 if m else "")
    if kind == "change_text":
        m = _pick(rng, _CELL, html)
        return _replace(
            html,
            m,
            m and re.sub(r">[^<]*<", f">{rng.choice(['x', 'Total', '12.5', '合'])}<", m.group(0), count=1),
        )
    if kind == "change_span":
        m = _pick(rng, _SPAN, html)
        if m:
            return _replace(html, m, f'{m.group(1)}="{int(m.group(2)) + rng.choice([-1, 1])}')
        cell = _pick(rng, _CELL, html)
        return _replace(
            html, cell, cell and cell.group(0).replace(">", f' {rng.choice(["colspan", "rowspan"])}="2">', 1)
        )
    if kind == "delete_row":
        return _replace(html, _pick(rng, _ROW, html), "")
    if kind == "garbage":
        prefix = rng.choice(["", "<table>", "<table><tr><td>"])  # lxml repairs the table-like ones
        return prefix + "".join(rng.choice('<>/tdrh ab&;"=\n表') for _ in range(rng.randrange(1, 80)))
    if kind == "empty":
        return rng.choice(["", "   \n"])
    if kind == "no_table":
        return rng.choice(["<p>no table here</p>", "just text", "<div><tr><td>cell</td></tr></div>"])
    if kind == "truncated":
        return html[: rng.randrange(1, max(2, len(html)))]
    raise ValueError(kind)


KINDS = [
    "identity",
    "reformat",
    "plain_text",
    "drop_cell",
    "dup_cell",
    "change_text",
    "change_span",
    "delete_row",
    "garbage",
    "empty",
    "no_table",
    "truncated",
]


def _pairs(real_records: list[dict], n: int, seed: int) -> list[tuple[str, str, str]]:
    """n seeded (kind, GT, prediction) pairs over the real GT plus the handmade tables."""
    rng = random.Random(seed)
    rich = [r["html_rich"] for r in real_records if "<b>" in r.get("html_rich", "")][:3] + HANDMADE[1:2]
    # the one 4.5k-character table alone would cost seconds of APTED per scorer
    pool = [r["html"] for r in real_records if len(r["html"]) < 2500] + rich + HANDMADE
    rng.shuffle(pool)
    out = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        gt = rng.choice(rich) if kind == "plain_text" else pool[i % len(pool)]
        pred = perturb(rng, gt, kind)
        if i % 7 == 3:  # a second edit now and then
            pred = perturb(rng, pred, rng.choice(["drop_cell", "dup_cell", "change_text", "change_span"]))
        out.append((kind, gt, pred))
    return out


# ----------------------------------------------------------------------------- agreement
def test_metrics_agree_with_independent_scorer(tabmetrics: ModuleType, real_records: list[dict]) -> None:
    pairs = _pairs(real_records, 50, seed=0)
    assert {kind for kind, _, _ in pairs} == set(KINDS)
    for kind, gt, pred in pairs:
        ours = score_sample(pred, gt)
        assert canonical_html(pred) == tabmetrics.canonical_html(pred), kind
        assert ours["ed"] == pytest.approx(tabmetrics.edit_distance(pred, gt), abs=1e-6), (kind, pred)
        assert ours["teds"] == pytest.approx(tabmetrics.teds(pred, gt), abs=1e-6), (kind, pred)
        assert ours["teds_struct"] == pytest.approx(tabmetrics.teds(pred, gt, True), abs=1e-6), (kind, pred)


def test_pubtabnet_mode_agrees_with_independent_scorer(
    tabmetrics: ModuleType, real_records: list[dict]
) -> None:
    small = [r for r in real_records if len(r["html"]) < 1200]
    for kind, gt, pred in _pairs(small, 12, seed=1):
        assert canonical_html(pred, pubtabnet=True) == tabmetrics.canonical_html(pred, pubtabnet=True), kind
        assert edit_distance(pred, gt, pubtabnet=True) == pytest.approx(
            tabmetrics.edit_distance(pred, gt, pubtabnet=True), abs=1e-6
        ), kind
        for struct in (False, True):
            assert teds(pred, gt, struct, pubtabnet=True) == pytest.approx(
                tabmetrics.teds(pred, gt, struct, pubtabnet=True), abs=1e-6
            ), (kind, struct)


def test_summary_and_categories_agree_with_independent_scorer(
    tabmetrics: ModuleType, real_records: list[dict], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # without lang/span/blank fields both scorers infer the categories from the HTML
    for with_fields in (True, False):
        keep = ("id", "html", "lang", "span", "blank") if with_fields else ("id", "html")
        gt_path = tmp_path / f"gt{with_fields}.jsonl"
        gt_path.write_text("".join(json.dumps({k: r[k] for k in keep}) + "\n" for r in real_records), "utf-8")
        # small tables predicted right or with a row lost, big ones missing or empty: keeps APTED cheap
        preds = {}
        for j, r in enumerate(real_records):
            if len(r["html"]) < 600:
                preds[r["id"]] = r["html"] if j % 2 else _ROW.sub("", r["html"], count=1)
            elif j % 3:
                preds[r["id"]] = ""
        pred_path = tmp_path / "pred.jsonl"
        pred_path.write_text(
            "".join(json.dumps({"id": k, "html": v}) + "\n" for k, v in preds.items()), "utf-8"
        )
        theirs = tabmetrics.main(["--gt", str(gt_path), "--pred", str(pred_path)])
        ours = evaluate(load_gt(gt_path), load_predictions(pred_path)).to_dict()
        assert [c for c in theirs if c in CATEGORIES] == list(CATEGORIES)
        for category in CATEGORIES:
            assert ours[category]["n"] == theirs[category]["n"], category
            for metric in ("ed", "teds", "teds_struct"):
                assert ours[category][metric] == pytest.approx(theirs[category][metric], abs=1e-6)
    capsys.readouterr()
    assert ours["all"]["n"] == 38 and ours["zh"]["n"] == 2 and ours["en"]["n"] == 36


# ----------------------------------------------------------------------------- behaviour
def load_gt_lines(tmp_path: Path, records: list[dict]) -> list[GTItem]:
    """load_gt over records written to a jsonl in tmp_path."""
    return load_gt(_write(tmp_path / "gt.jsonl", records))


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), "utf-8")
    return path


def test_canonical_form() -> None:
    html = (
        '<p>x</p><table class="t"><caption>c</caption><thead><tr><th colspan="1" style="a">'
        ' A\u00a0 B </th><td rowspan="2px"><b>x</b> &amp; </td></tr></thead></table> tail'
    )
    assert canonical_html(html) == '<table><tr><td>A B</td><td rowspan="2"><b>x</b> &</td></tr></table>'
    # text stays unescaped and raw: the non-breaking space and the cell's padding survive
    assert canonical_html(html, pubtabnet=True) == (
        '<table><thead><tr><th> A\u00a0 B </th><td rowspan="2"><b>x</b> & </td></tr></thead></table>'
    )
    assert canonical_html("no table") == canonical_html("") == ""


@pytest.mark.parametrize(
    "pred", ["", "   ", "garbage <<<", "</table>", "<p>text</p>", "\x00\x01", "<tr><td>a"]
)
def test_malformed_prediction_scores_zero(pred: str) -> None:
    gt = "<table><tr><td>a</td><td>b</td></tr></table>"
    assert score_sample(pred, gt) == {"ed": 1.0, "teds": 0.0, "teds_struct": 0.0}


def test_perfect_and_partial_scores() -> None:
    gt = "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>"
    assert score_sample(gt.replace("td>", "th>"), gt) == {"ed": 0.0, "teds": 1.0, "teds_struct": 1.0}
    s = score_sample(gt.replace(">d<", ">e<"), gt)
    # one cell's content renamed at cost 1 over 6 descendant elements; structure untouched
    assert s["teds"] == pytest.approx(1 - 1 / 6) and s["teds_struct"] == 1.0
    assert 0 < s["ed"] < 0.05
    assert score_sample("", "") == {"ed": 0.0, "teds": 1.0, "teds_struct": 1.0}


def test_missing_predictions_score_as_empty_and_categories(tmp_path: Path) -> None:
    items = load_gt_lines(
        tmp_path,
        [
            {"id": "a", "html": "<table><tr><td>中文</td></tr></table>"},
            {"id": "b", "html": '<table><tr><td colspan="2">x</td></tr><tr><td></td><td>y</td></tr></table>'},
            {
                "id": "c",
                "html": "<table><tr><td>z</td></tr></table>",
                "lang": "zh",
                "span": True,
                "blank": False,
            },
        ],
    )
    assert [(i.lang, i.span, i.blank) for i in items] == [
        ("zh", False, False),
        ("en", True, True),
        ("zh", True, False),
    ]
    report = evaluate(items, {"b": items[1].html, "extra": "<table></table>"})
    assert (report.missing, report.extra) == (2, 1)
    summary = report.to_dict()
    assert summary["zh"] == {"n": 2, "ed": 1.0, "teds": 0.0, "teds_struct": 0.0}
    assert summary["en"] == {"n": 1, "ed": 0.0, "teds": 1.0, "teds_struct": 1.0}
    assert summary["span"]["n"] == 2 and summary["span"]["teds"] == pytest.approx(0.5)
    assert summary["all"]["ed"] == pytest.approx(2 / 3)
    assert summary["blank"] == {"n": 1, "ed": 0.0, "teds": 1.0, "teds_struct": 1.0}
    empty = evaluate(items[:1], {}).to_dict()
    assert empty["en"] == {"n": 0, "ed": None, "teds": None, "teds_struct": None}


def test_jobs_give_the_same_report(tmp_path: Path) -> None:
    items = load_gt_lines(tmp_path, [{"id": str(i), "html": h} for i, h in enumerate(HANDMADE)])
    preds = {str(i): h.replace("a", "b") for i, h in enumerate(HANDMADE)}
    assert evaluate(items, preds, jobs=2).to_dict() == evaluate(items, preds).to_dict()


def test_canonical_records_as_gt(tmp_path: Path) -> None:
    table = "<table><tr><td>a</td></tr></table>"
    records = [
        {
            "image": "img/t1.png",
            "conversations": [
                {"role": "user", "content": "<image>\nHTML"},
                {"role": "assistant", "content": table},
            ],
            "meta": {},
        },
        {
            "image": "img/t2.png",
            "conversations": [
                {"role": "user", "content": "<image>\nHTML"},
                {"role": "assistant", "content": "<table></table>"},
            ],
            "meta": {"id": "named", "lang": "zh", "span": True, "blank": True},
        },
    ]
    (tmp_path / "gt.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), "utf-8")
    items = load_gt(tmp_path / "gt.jsonl")
    assert [(i.id, i.html, i.image) for i in items] == [
        ("t1", table, tmp_path / "img/t1.png"),
        ("named", "<table></table>", tmp_path / "img/t2.png"),
    ]
    assert (items[1].lang, items[1].span, items[1].blank) == ("zh", True, True)


@pytest.mark.parametrize("loader", [load_gt, load_predictions])
@pytest.mark.parametrize(
    "bad", ["{not json", "[1, 2]", '{"html": "<table></table>"}', '{"id": "a", "html": 3}']
)
def test_bad_jsonl_line_names_file_and_line(tmp_path: Path, loader, bad: str) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": "a", "html": "<table></table>"}\n\n' + bad + "\n", "utf-8")
    with pytest.raises(DataError, match=re.escape(f"{path}:3: ")) as e:
        loader(path)
    assert e.value.line == 3


def test_duplicate_id_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "html": ""}\n{"id": "a", "html": ""}\n', "utf-8")
    with pytest.raises(DataError, match="p.jsonl:2: duplicate id 'a'"):
        load_predictions(path)


# ----------------------------------------------------------------------------- CLI
def test_cli_two_systems_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gt = [
        {"id": "a", "html": "<table><tr><td>中</td></tr></table>"},
        {"id": "b", "html": '<table><tr><td colspan="2">x</td></tr><tr><td>1</td><td></td></tr></table>'},
    ]
    gt_path = _write(tmp_path / "gt.jsonl", gt)
    good = _write(tmp_path / "good.jsonl", [{"id": g["id"], "html": g["html"], "ms": 3} for g in gt])
    bad = _write(tmp_path / "bad.jsonl", [{"id": "a", "html": "<table"}])
    out = tmp_path / "scores.json"
    rc = eval_cmd.main(
        ["--data", str(gt_path), "--pred", str(good), "--pred", f"peer={bad}", "--json", str(out)]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    for text in (
        "ED (lower is better)",
        "TEDS",
        "TEDS-struct",
        "all (n=2)",
        "zh (n=1)",
        "en (n=1)",
        "span (n=1)",
        "blank (n=1)",
        "| good ",
        "| peer ",
        "peer: 1 without prediction",
    ):
        assert text in printed, text
    scores = json.loads(out.read_text("utf-8"))
    assert list(scores) == ["systems"] and list(scores["systems"]) == ["good", "peer"]
    for system in scores["systems"].values():
        assert list(system) == list(CATEGORIES)
        assert all(set(s) == {"n", "ed", "teds", "teds_struct"} for s in system.values())
    assert scores["systems"]["good"]["all"] == {"n": 2, "ed": 0.0, "teds": 1.0, "teds_struct": 1.0}
    assert scores["systems"]["peer"]["all"] == {"n": 2, "ed": 1.0, "teds": 0.0, "teds_struct": 0.0}


def test_cli_bad_line_is_reported_with_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gt_path = _write(tmp_path / "gt.jsonl", [{"id": "a", "html": "<table></table>"}])
    pred = tmp_path / "pred.jsonl"
    pred.write_text('{"id": "a", "html": ""}\n{"id": \n', "utf-8")
    assert cli.main(["eval", "--data", str(gt_path), "--pred", str(pred)]) == 1
    assert f"{pred}:2: bad JSON" in capsys.readouterr().err


def test_cli_reports_deep_and_non_utf8_lines_and_scores_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    table = "<table><tr><td>x</td></tr></table>"
    gt_path = _write(tmp_path / "gt.jsonl", [{"id": "a", "html": table}, {"id": "b", "html": table}])
    with gt_path.open("a", encoding="utf-8") as f:
        f.write("[" * 100_000 + "]" * 100_000 + "\n")  # line 3: deeper than Python's parser goes
    pred = tmp_path / "pred.jsonl"
    pred.write_bytes(
        json.dumps({"id": "a", "html": table}).encode() + b"\n"
        + b'{"id": "c", "html": "caf\xe9"}\n'  # line 2: Latin-1, not UTF-8
        + json.dumps({"id": "b", "html": table}).encode() + b"\n"
    )  # fmt: skip
    scores = tmp_path / "scores.json"
    assert cli.main(["eval", "--data", str(gt_path), "--pred", str(pred), "--json", str(scores)]) == 1
    captured = capsys.readouterr()
    assert f"{gt_path}:3: JSON nested too deeply to parse" in captured.err
    assert f"{pred}:2: not UTF-8 text (byte 25 of the line)" in captured.err
    assert "Traceback" not in captured.err and "all (n=2)" in captured.out
    assert json.loads(scores.read_text())["systems"]["pred"]["all"]["ed"] == 0.0
    with pytest.raises(DataError, match=re.escape(f"{pred}:2: not UTF-8")):
        load_predictions(pred)


def test_cli_model_predicts_gt_images(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`tabvlm eval --model` reads the GT's images with the real recognizer (the tiny config's
    random model), saves what it predicted and scores exactly that."""
    from PIL import Image

    from tabvlm.recognizer import TableRecognizer

    (tmp_path / "img").mkdir()
    for key, width in (("t", 90), ("u", 60)):
        Image.new("RGB", (width, 40), "white").save(tmp_path / "img" / f"{key}.png")
    lines = [{"id": k, "image": f"img/{k}.png", "html": "<table><tr><td>a</td></tr></table>"} for k in "tu"]
    gt_path = _write(tmp_path / "gt.jsonl", lines)
    saved = tmp_path / "out" / "pred.jsonl"
    scores = tmp_path / "s.json"
    args = ["--data", str(gt_path), "--model", "configs/tiny.yaml", "--save-pred", str(saved)]
    rc = eval_cmd.main([*args, "--batch-size", "2", "--json", str(scores)])
    assert rc == 0 and "| tiny.yaml " in capsys.readouterr().out
    rec = TableRecognizer.from_pretrained("configs/tiny.yaml")
    expected = {
        k: p.html for k, p in zip("tu", rec.predict_many([tmp_path / "img" / f"{k}.png" for k in "tu"]))
    }
    assert load_predictions(saved) == expected
    report = evaluate(load_gt(gt_path), expected)
    assert json.loads(scores.read_text())["systems"]["tiny.yaml"]["all"]["teds"] == pytest.approx(
        report.summaries["all"].teds
    )


def test_format_report_marks_differing_counts(tmp_path: Path) -> None:
    en = evaluate(load_gt_lines(tmp_path, [{"id": "a", "html": "<table><tr><td>a</td></tr></table>"}]), {})
    zh = evaluate(load_gt_lines(tmp_path, [{"id": "b", "html": "<table><tr><td>中</td></tr></table>"}]), {})
    same = format_report({"x": en, "y": en}).splitlines()
    assert same[1] == "| system | all (n=1) | zh (n=0) | en (n=1) | span (n=0) | blank (n=0) |"
    assert same[3:5] == [
        "| x      | 1.0000 | - | 1.0000 | - | - |",
        "| y      | 1.0000 | - | 1.0000 | - | - |",
    ]
    differing = format_report({"x": en, "z": zh}).splitlines()
    assert differing[1].startswith("| system | all | zh |")
    assert differing[4] == "| z      | 1.0000 (n=1) | 1.0000 (n=1) | - (n=0) | - (n=0) | - (n=0) |"


def test_cli_data_folder_reads_its_gt_jsonl(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`--data DIR` takes the folder `tabvlm synth` writes (and `tabvlm predict DIR` reads)."""
    table = "<table><tr><td>x</td></tr></table>"
    (tmp_path / "set").mkdir()
    gt_path = _write(tmp_path / "set" / "gt.jsonl", [{"id": "a", "html": table}])
    pred = _write(tmp_path / "pred.jsonl", [{"id": "a", "html": table}])
    assert cli.main(["eval", "--data", str(tmp_path / "set"), "--pred", str(pred)]) == 0
    assert f"1 GT tables in {gt_path};" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    _write(tmp_path / "empty" / "other.jsonl", [])
    assert cli.main(["eval", "--data", str(tmp_path / "empty"), "--pred", str(pred)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'empty'}: expected a GT jsonl file, or a folder holding gt.jsonl" in err
    assert "its jsonl files: other.jsonl" in err and "Traceback" not in err
