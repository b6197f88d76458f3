"""Table-recognition metrics and the per-category report: ED, TEDS and TEDS-struct.

Both metrics compare a *canonical form* of the first `<table>` in each HTML string, so that markup
which renders the same table scores the same:

* the first `<table>` (text around it ignored); no table, or an empty string, scores ED 1 and
  TEDS 0 against a non-empty ground truth;
* comments, `<caption>`, `<colgroup>`, `<col>` dropped; tags lower-case; of the attributes only
  `colspan` / `rowspan` kept, and only when > 1; serialised as
  `<table><tr><td colspan="2">a&b</td>...` (text unescaped);
* default (OmniDocBench) mode: `<th>` -> `<td>`; `<thead>` / `<tbody>` / `<tfoot>` unwrapped; text
  NFKC-normalised, whitespace runs -> one space, cells stripped, whitespace between tags dropped;
* `pubtabnet=True` keeps the sections, `<th>` and the raw text: TEDS then equals PubTabNet's
  metric.py.

ED is the Levenshtein distance of the two canonical strings over the longer length (0 is perfect;
OmniDocBench's "Table Edit", the metric of the NanoTabVLM model card). TEDS is
`1 - TED(Tp, Tg) / max(|Tp|, |Tg|)` (Zhong et al. 2020): an APTED tree edit distance with
insert/delete cost 1 and rename cost 1 when tag, colspan or rowspan differ, else, for two cells, the
normalised Levenshtein distance of their token lists (characters, plus `<b>` / `</b>` for inline
tags). |T| counts the descendant elements of `<table>`. TEDS-struct ignores cell content.

This module is the product's own implementation; `../shared/tools/tabmetrics.py`, an independent
scorer, agrees with it to 1e-6 (tests/test_evaluate.py checks it).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apted import APTED, Config
from lxml import etree
from lxml.html import HtmlElement
from rapidfuzz.distance import Levenshtein

from tabvlm.errors import DataError, TableError
from tabvlm.read.words import Word, split_text
from tabvlm.tables.grid import Table
from tabvlm.tables.html import find_table, parse_html, to_html
from tabvlm.tasks import TASKS, task_of_prompt

log = logging.getLogger(__name__)

CELL_TAGS = ("td", "th")
SECTION_TAGS = ("thead", "tbody", "tfoot")
DROPPED_TAGS = ("caption", "colgroup", "col")
SPAN_ATTRS = ("colspan", "rowspan")
METRICS = ("ed", "teds", "teds_struct")
CATEGORIES = ("all", "zh", "en", "span", "blank")

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_WHITESPACE = re.compile(r"\s+")
_LEADING_INT = re.compile(r"\s*(\d+)")


# ----------------------------------------------------------------------------- canonical form
def span_value(value: str | None) -> int:
    """A colspan/rowspan attribute as an int >= 1: '2', ' 3 ', '2px' -> 2, 3, 2; missing or junk -> 1."""
    m = _LEADING_INT.match(value or "")
    return max(1, int(m.group(1))) if m else 1


def _normalise_text(text: str | None) -> str | None:
    """NFKC, then every whitespace run -> one space (full-width and non-breaking spaces included)."""
    return None if text is None else _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text))


def _strip_layout_whitespace(el: HtmlElement, is_root: bool = True) -> None:
    """Drop whitespace-only text between structural tags; strip each cell's text at both ends.

    Text inside a cell is content: only its two ends are touched, never the whitespace between
    inline tags.
    """
    if not is_root and el.tail is not None and not el.tail.strip():
        el.tail = None
    if el.tag in CELL_TAGS:
        el.text = (el.text or "").lstrip() or None
        if len(el):  # the cell's text ends in its last child's tail
            last = el[-1]
            last.tail = (last.tail or "").rstrip() or None
        else:
            el.text = (el.text or "").rstrip() or None
        return
    if el.text is not None and not el.text.strip():
        el.text = None
    for child in el.iterchildren(etree.Element):
        _strip_layout_whitespace(child, is_root=False)


def canonical_table(text: str, pubtabnet: bool = False) -> HtmlElement | None:
    """Parse `text` and return its first `<table>` in canonical form, or None when there is none."""
    table = find_table(text)
    if table is None:
        return None
    table.tail = None  # text after the table is not part of it
    for el in list(table.iter(*DROPPED_TAGS)):
        el.drop_tree()  # lxml keeps the dropped element's tail text
    if not pubtabnet:
        etree.strip_tags(table, *SECTION_TAGS)  # OmniDocBench scores rows, not sections
        for cell in table.iter("th"):
            cell.tag = "td"
    for el in table.iter(etree.Element):  # elements only
        spans = {name: span_value(el.get(name)) for name in SPAN_ATTRS}
        el.attrib.clear()
        for name, value in spans.items():
            if value > 1:
                el.set(name, str(value))
        if not pubtabnet:
            el.text, el.tail = _normalise_text(el.text), _normalise_text(el.tail)
    if not pubtabnet:
        _strip_layout_whitespace(table)
    return table


def serialise(el: HtmlElement | None) -> str:
    """The canonical string of an element: tags, span attributes, unescaped text ('' for None)."""
    if el is None:
        return ""
    attrs = "".join(f' {name}="{el.get(name)}"' for name in SPAN_ATTRS if el.get(name))
    inner = [el.text or ""]
    for child in el:
        inner += [serialise(child), child.tail or ""]
    return f"<{el.tag}{attrs}>{''.join(inner)}</{el.tag}>"


def canonical_html(text: str, pubtabnet: bool = False) -> str:
    """The canonical HTML string of the first table in `text` ('' when there is none)."""
    return serialise(canonical_table(text, pubtabnet))


# ----------------------------------------------------------------------------- ED
def _normalised_levenshtein(p: str, g: str) -> float:
    return Levenshtein.distance(p, g) / max(len(p), len(g)) if p or g else 0.0


def edit_distance(pred: str, gt: str, pubtabnet: bool = False) -> float:
    """Normalised Levenshtein distance of the canonical strings: 0 identical, 1 nothing shared."""
    return _normalised_levenshtein(canonical_html(pred, pubtabnet), canonical_html(gt, pubtabnet))


# ----------------------------------------------------------------------------- TEDS
@dataclass(frozen=True)
class Node:
    """An APTED tree node: tag, spans and content tokens (cells only; None for other elements).

    Frozen, so two equal trees compare equal and skip the (slow) APTED run.
    """

    tag: str
    colspan: int | None = None
    rowspan: int | None = None
    content: tuple[str, ...] | None = None
    children: tuple[Node, ...] = ()


class _TedsCosts(Config):
    """PubTabNet's costs: insert/delete 1 (APTED's default); rename as `rename` says."""

    def rename(self, a: Node, b: Node) -> float:
        if a.tag != b.tag or a.colspan != b.colspan or a.rowspan != b.rowspan:
            return 1.0
        if a.content or b.content:  # two cells, not both empty
            return Levenshtein.distance(a.content, b.content) / max(len(a.content), len(b.content))
        return 0.0

    def children(self, node: Node) -> tuple[Node, ...]:
        return node.children


def _cell_tokens(el: HtmlElement) -> list[str]:
    """PubTabNet's tokens of a cell: its characters, and '<b>', '</b>' around inline elements."""
    tokens = list(el.text or "")
    for child in el:
        tokens += [f"<{child.tag}>", *_cell_tokens(child), f"</{child.tag}>", *(child.tail or "")]
    return tokens


def _to_tree(el: HtmlElement, structure_only: bool) -> Node:
    """The APTED tree of a canonical element; a cell is a leaf that carries its tokens."""
    if el.tag in CELL_TAGS:
        content = () if structure_only else tuple(_cell_tokens(el))
        return Node(el.tag, span_value(el.get("colspan")), span_value(el.get("rowspan")), content)
    return Node(el.tag, children=tuple(_to_tree(c, structure_only) for c in el.iterchildren(etree.Element)))


def _teds_of_tables(tp: HtmlElement | None, tg: HtmlElement | None, structure_only: bool) -> float:
    if tp is None or tg is None:
        return 1.0 if tp is None and tg is None else 0.0
    # |T| as PubTabNet's metric.py: every descendant element, those inside cells included
    n = max(len(tp.xpath(".//*")), len(tg.xpath(".//*")))
    if n == 0:
        return 1.0
    a, b = _to_tree(tp, structure_only), _to_tree(tg, structure_only)
    if a == b:
        return 1.0
    return 1.0 - APTED(a, b, _TedsCosts()).compute_edit_distance() / n


def teds(pred: str, gt: str, structure_only: bool = False, pubtabnet: bool = False) -> float:
    """TEDS in [0, 1] (1 is perfect); `structure_only=True` gives TEDS-struct."""
    return _teds_of_tables(canonical_table(pred, pubtabnet), canonical_table(gt, pubtabnet), structure_only)


def score_sample(pred: str, gt: str, pubtabnet: bool = False) -> dict[str, float]:
    """ED, TEDS and TEDS-struct of one prediction, parsing each string once.

    Never raises on a malformed prediction: a string without a table scores like an empty one.
    """
    tp, tg = canonical_table(pred, pubtabnet), canonical_table(gt, pubtabnet)
    return {
        "ed": _normalised_levenshtein(serialise(tp), serialise(tg)),
        "teds": _teds_of_tables(tp, tg, structure_only=False),
        "teds_struct": _teds_of_tables(tp, tg, structure_only=True),
    }


# ----------------------------------------------------------------------------- reader text quality
def text_tokens(text: str) -> list[str]:
    """The tokens the reader's text quality counts: `text` NFKC-normalised (as the TEDS text is),
    split on whitespace, each CJK character a token of its own (`tabvlm.read.split_text`)."""
    return split_text(unicodedata.normalize("NFKC", text))


def token_f1(pred_tokens: Sequence[str], gt_tokens: Sequence[str]) -> tuple[float, float, float]:
    """(precision, recall, F1) of two token multisets: the overlap counts each token as often as
    it occurs in both. Nothing predicted against nothing true is perfect (1, 1, 1); otherwise an
    empty side scores 0 where it is the denominator."""
    overlap = sum((Counter(pred_tokens) & Counter(gt_tokens)).values())
    if not pred_tokens and not gt_tokens:
        return 1.0, 1.0, 1.0
    precision = overlap / len(pred_tokens) if pred_tokens else 0.0
    recall = overlap / len(gt_tokens) if gt_tokens else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def reader_f1(words: Sequence[Word], table: Table | str) -> tuple[float, float, float]:
    """(precision, recall, F1) of a reader's words against every cell of the ground-truth table
    (a `Table`, or HTML read by `parse_html`): how well the text was read, wherever it sits."""
    grid = parse_html(table) if isinstance(table, str) else table
    pred = [tok for w in words for tok in text_tokens(w.text)]
    gt = [tok for cell in grid.cells for tok in text_tokens(cell.text)]
    return token_f1(pred, gt)


# ----------------------------------------------------------------------------- data
@dataclass
class GTItem:
    """One ground-truth table with its categories (given by the record or inferred from its HTML)."""

    id: str
    html: str
    lang: str
    span: bool
    blank: bool
    image: Path | None = None  # resolved against the GT file's folder
    line: int = 0  # 1-based line in the GT file, for error messages
    # The renderer's true words (`meta.words` of `tabvlm synth` records: [text, x0, y0, x1, y1]),
    # for scoring the layout model with the truth reader; None when the record has none.
    words: list[Word] | None = None


def infer_categories(html: str, fields: Mapping[str, Any] | None = None) -> tuple[str, bool, bool]:
    """(lang, span, blank) of a GT table: values in `fields` win, the rest come from the HTML.

    lang is 'zh' when the table has any CJK character, else 'en'; span is True when a cell spans
    more than one row or column; blank is True when a cell is empty.
    """
    fields = fields or {}
    table = canonical_table(html)
    cells = [] if table is None else list(table.iter(*CELL_TAGS))
    text = "" if table is None else "".join(table.itertext())
    lang = fields.get("lang") or ("zh" if _CJK.search(text) else "en")
    if "span" in fields:
        span = bool(fields["span"])
    else:
        span = any(span_value(c.get("colspan")) > 1 or span_value(c.get("rowspan")) > 1 for c in cells)
    blank = (
        bool(fields["blank"]) if "blank" in fields else any(not "".join(c.itertext()).strip() for c in cells)
    )
    return str(lang), span, blank


def _read_jsonl(path: Path, errors: list[DataError] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each non-blank line. A line that is not UTF-8, not JSON (or
    nested too deeply to parse) or not an object is a DataError naming file:line: raised, or,
    with an `errors` list, appended to it and the line skipped."""
    try:
        f = path.open("rb")  # bytes: a bad byte is one line's problem, not the file's
    except OSError as e:
        raise DataError(f"cannot read: {e.strerror}", file=str(path)) from e
    with f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"bad JSON ({e.msg} at column {e.colno})", str(path), n) from e
                except RecursionError as e:  # Python's parser recurses once per [ or {
                    raise DataError("JSON nested too deeply to parse", str(path), n) from e
                if not isinstance(rec, dict):
                    raise DataError(f"expected a JSON object, found {type(rec).__name__}", str(path), n)
            except UnicodeDecodeError as e:
                _problem(DataError(f"not UTF-8 text (byte {e.start + 1} of the line)", str(path), n), errors)
                continue
            except DataError as e:
                _problem(e, errors)
                continue
            yield n, rec


def _problem(error: DataError, errors: list[DataError] | None) -> None:
    """Raise `error`, or collect it when the caller gave a list."""
    if errors is None:
        raise error
    errors.append(error)


def _last_assistant_turn(rec: dict[str, Any]) -> str | None:
    """The answer of a canonical record as HTML: the last assistant turn, read by the table task
    its user turn asks for (an OTSL or Markdown answer becomes the HTML of its table)."""
    turns = rec.get("conversations")
    if not isinstance(turns, list):
        return None
    answers = [t.get("content") for t in turns if isinstance(t, dict) and t.get("role") == "assistant"]
    if not answers or not isinstance(answers[-1], str):
        return None
    questions = [t.get("content") for t in turns if isinstance(t, dict) and t.get("role") == "user"]
    task = task_of_prompt(questions[-1]) if questions and isinstance(questions[-1], str) else None
    read = TASKS[task].read if task and task != "html" else None
    return to_html(read(answers[-1])) if read else answers[-1]


def load_gt(path: str | Path, errors: list[DataError] | None = None) -> list[GTItem]:
    """Read a GT jsonl: `{"id", "html", ...}` lines (lang/span/blank optional) or canonical records
    (`{"image", "conversations", "meta"}`: id = meta.id or the image's file stem, HTML = the last
    assistant turn, categories from meta). Bad lines and duplicate ids -> DataError naming
    file:line, raised, or with an `errors` list collected there (the line is skipped).
    """
    path = Path(path)
    items: list[GTItem] = []
    seen: set[str] = set()
    for n, rec in _read_jsonl(path, errors):
        try:
            items.append(_gt_item(path, n, rec, seen))
        except DataError as e:
            _problem(e, errors)
    return items


def _gt_item(path: Path, n: int, rec: dict[str, Any], seen: set[str]) -> GTItem:
    """One GT line as a GTItem (its id added to `seen`); DataError naming file:line."""
    meta = rec.get("meta") if isinstance(rec.get("meta"), dict) else {}
    image = rec.get("image")
    if image is not None and not isinstance(image, str):
        raise DataError(f"'image' must be a path string, found {type(image).__name__}", str(path), n)
    if "html" in rec:
        html, key = rec["html"], rec.get("id")
    elif "conversations" in rec:
        try:
            html = _last_assistant_turn(rec)
        except TableError as e:
            raise DataError(f"the answer does not parse as its task's table: {e}", str(path), n) from e
        if html is None:
            raise DataError("canonical record has no assistant turn with string content", str(path), n)
        key = meta.get("id") or (Path(image).stem if image else None)
    else:
        raise DataError(
            'expected {"id": ..., "html": ...} or a canonical record {"image", "conversations", '
            f'"meta"}}; found keys {sorted(rec)}',
            str(path),
            n,
        )
    if key is None or key == "":
        raise DataError("record has no id (nor meta.id, nor an image to name it after)", str(path), n)
    if html is not None and not isinstance(html, str):
        raise DataError(f"'html' must be a string, found {type(html).__name__}", str(path), n)
    key = str(key)
    if key in seen:
        raise DataError(f"duplicate id {key!r}", str(path), n)
    seen.add(key)
    fields = {k: v for src in (meta, rec) for k, v in src.items() if k in ("lang", "span", "blank")}
    lang, span, blank = infer_categories(html or "", fields)
    words = None
    if isinstance(meta.get("words"), list):
        try:
            words = [
                Word(str(w[0]), (float(w[1]), float(w[2]), float(w[3]), float(w[4]))) for w in meta["words"]
            ]
        except (TypeError, ValueError, IndexError) as e:
            raise DataError(f"meta.words: expected [text, x0, y0, x1, y1] items ({e})", str(path), n) from e
    return GTItem(
        key, html or "", lang, span, blank, image=path.parent / image if image else None, line=n, words=words
    )


def load_predictions(path: str | Path, errors: list[DataError] | None = None) -> dict[str, str]:
    """Read prediction lines `{"id", "html"}` (extra fields ignored) into id -> HTML.

    A null or missing html is an empty prediction; bad lines and duplicate ids -> DataError,
    raised, or with an `errors` list collected there (the line is skipped).
    """
    path = Path(path)
    preds: dict[str, str] = {}
    for n, rec in _read_jsonl(path, errors):
        if "id" not in rec:
            _problem(
                DataError(f'expected {{"id": ..., "html": ...}}; found keys {sorted(rec)}', str(path), n),
                errors,
            )
            continue
        key, html = str(rec["id"]), rec.get("html")
        if html is not None and not isinstance(html, str):
            _problem(DataError(f"'html' must be a string, found {type(html).__name__}", str(path), n), errors)
        elif key in preds:
            _problem(DataError(f"duplicate id {key!r}", str(path), n), errors)
        else:
            preds[key] = html or ""
    return preds


# ----------------------------------------------------------------------------- report
@dataclass
class Summary:
    """Mean metrics over one category; the metrics are None when the category is empty."""

    n: int
    ed: float | None
    teds: float | None
    teds_struct: float | None


@dataclass
class Report:
    """One system's scores: per-category summaries, per-sample scores, and prediction coverage."""

    summaries: dict[str, Summary]
    samples: list[dict[str, Any]] = field(default_factory=list)  # {"id", "ed", "teds", "teds_struct"}
    missing: int = 0  # GT ids without a prediction (scored as empty)
    extra: int = 0  # predictions without GT (ignored)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Category -> {"n", "ed", "teds", "teds_struct"} (None for an empty category)."""
        return {name: vars(s).copy() for name, s in self.summaries.items()}


def _in_category(item: GTItem, category: str) -> bool:
    if category in ("zh", "en"):
        return item.lang == category
    return category == "all" or getattr(item, category)


def _score_args(args: tuple[str, str, bool]) -> dict[str, float]:
    return score_sample(*args)


def evaluate(
    gt_items: Sequence[GTItem], preds: Mapping[str, str], jobs: int = 1, pubtabnet: bool = False
) -> Report:
    """Score `preds` (id -> HTML) against the GT; a missing prediction scores as empty.

    `jobs` > 1 scores in that many processes (APTED on big tables takes seconds each).
    """
    work = [(preds.get(item.id, ""), item.html, pubtabnet) for item in gt_items]
    if jobs > 1 and len(work) > 1:
        # spawn, not fork: the caller may hold torch's threads, which do not survive a fork
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            scores = list(pool.map(_score_args, work, chunksize=4))
    else:
        scores = [_score_args(w) for w in work]
    summaries = {}
    for category in CATEGORIES:
        idx = [j for j, item in enumerate(gt_items) if _in_category(item, category)]
        means = {m: sum(scores[j][m] for j in idx) / len(idx) if idx else None for m in METRICS}
        summaries[category] = Summary(n=len(idx), **means)
    gt_ids = {item.id for item in gt_items}
    return Report(
        summaries=summaries,
        samples=[{"id": item.id, **s} for item, s in zip(gt_items, scores)],
        missing=sum(item.id not in preds for item in gt_items),
        extra=sum(key not in gt_ids for key in preds),
    )


def reports_to_dict(systems: Mapping[str, Report]) -> dict[str, Any]:
    """The `--json` layout: {"systems": {name: {category: {"n", "ed", "teds", "teds_struct"}}}}."""
    return {"systems": {name: report.to_dict() for name, report in systems.items()}}


def format_report(systems: Mapping[str, Report]) -> str:
    """Markdown tables, one a metric (ED, TEDS, TEDS-struct): rows = systems, columns = categories.

    The header carries each category's n; when systems were scored on different GT, every cell
    carries its own n instead.
    """
    if not systems:
        return ""
    reports = list(systems.values())
    counts = [tuple(r.summaries[c].n for c in CATEGORIES) for r in reports]
    same_n = len(set(counts)) == 1
    header = [f"{c} (n={n})" if same_n else c for c, n in zip(CATEGORIES, counts[0])]
    width = max(len("system"), *(len(name) for name in systems))
    blocks = []
    for metric, label in (("ed", "ED (lower is better)"), ("teds", "TEDS"), ("teds_struct", "TEDS-struct")):
        lines = [
            f"{label}",
            f"| {'system':<{width}} | " + " | ".join(header) + " |",
            "|" + "---|" * (len(CATEGORIES) + 1),
        ]
        for name, report in systems.items():
            cells = []
            for c in CATEGORIES:
                s = report.summaries[c]
                value = getattr(s, metric)
                cell = "-" if value is None else f"{value:.4f}"
                cells.append(cell if same_n else f"{cell} (n={s.n})")
            lines.append(f"| {name:<{width}} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
