"""Style families for the browser renderer: one small CSS template each, with random parameters.

`build_page(family, table, rng, fonts) -> Page` turns a grid into the HTML of one page (the
table, each cell tagged `data-i` with its index in `table.cells`, and around it whatever the
family draws that is not cell text: captions, units lines, notes, neighbouring paragraphs) plus
its CSS. The browser renderer (`tabvlm.data.browser`) lays the page out, measures it and takes
the picture. What is drawn inside a cell is exactly the cell's text (sub/superscripts are markup
around some of its characters, never added characters), so `to_html(table)` stays the target;
text outside the table never is.

Families, modelled on the real documents in ../shared/realtables:
- science: three-line (booktabs) rules, cmidrules under grouped headers, Times/Arial-like faces,
  small sizes, ± values, unit exponents and footnote marks as superscripts, decimal alignment.
- government: statistical tables: title above, heavy top/bottom rules, ruled headers, optional
  vertical rules, bold heading rows with indented children, bold totals, notes and source below.
- zh_financial: statements as Chinese companies file them: title and a units line above, a full
  grid, Song (serif) or Hei (sans) faces with Latin digits, indented "其中：" rows.
- web: slide/web tables: coloured header band, banded rows, generous padding, sans faces.
- page_crop: one of the document families set in a page column between paragraphs, cropped with
  part of the caption or neighbouring text, then downscaled and JPEG-compressed (a PDF page
  rasterised at low dpi).
Each family also sets the document-content rates of `SynthConfig` it needs (`FAMILY_SYNTH`).
"""

from __future__ import annotations

import html
import random
import re
from dataclasses import dataclass, field

from tabvlm.data.fonts import FontFace, FontSet, draws_text
from tabvlm.data.synth import CHILD_PREFIX, TOTAL, has_cjk, make_pools
from tabvlm.errors import ConfigError, DataError
from tabvlm.tables.grid import Table

FAMILIES = ("science", "government", "zh_financial", "web", "page_crop")
DOCUMENT_FAMILIES = ("science", "government", "zh_financial")  # what page_crop sets in a page
# SynthConfig rates each family sets (over the run's synth config) when its grid is drawn.
FAMILY_SYNTH: dict[str, dict[str, float]] = {
    "science": {"unit_rate": 0.6, "footnote_rate": 0.5, "pm_rate": 0.5, "long_header_rate": 0.2},
    "government": {"unit_rate": 0.5, "footnote_rate": 0.5, "hierarchy_rate": 0.6, "long_header_rate": 0.3},
    "zh_financial": {"unit_rate": 0.5, "hierarchy_rate": 0.6, "long_header_rate": 0.3, "footnote_rate": 0.2},
    "web": {"long_header_rate": 0.1},
    "page_crop": {"unit_rate": 0.5, "footnote_rate": 0.4, "pm_rate": 0.2, "hierarchy_rate": 0.3},
}
_SERIF_CJK = ("serif", "song", "ming", "sung", "kai", "fang")
_NUMBER = re.compile(r"^([^\d]*[\d,]*\d)((?:\.\d+)?.*)$")  # (integer part, the rest)
_NUMERIC_TEXT = re.compile(r"^[-+(<>=\s$€£¥￥]*[\d.,]+[%)]?\s*(±\s*[\d.,]+)?\s*(元|USD|万元)?\)?[a-d*†‡]*$")
_MARK = re.compile(r"(\*{1,3}|[†‡§])$|(?<=[\d%)])([a-d])$")
_HEAD_SUP = re.compile(r"(?<=[a-zμ])(-?[123])(?=[)）])|(?<=^R)2(?!\d)")
_HEAD_SUB = re.compile(r"(?<=CO|NO|SO|CH|PM)(\d(?:\.\d)?)")


@dataclass
class Page:
    """One page to draw: its CSS and HTML, and what the renderer does around them."""

    css: str
    html: str  # the content of #page
    font_size: int  # px before the renderer shrinks a page that does not fit
    width: int | None  # fixed page width (px); None: the page shrinks around the table
    text: str  # every character the page draws (cells and the rest): the fonts must draw them
    crop: dict | None = None  # page_crop: margins around the table, downscale, JPEG quality
    info: dict = field(default_factory=dict)  # style description (Rendered.style)


def is_numeric(text: str) -> bool:
    """True for cell text that reads as a number (aligned right or on the decimal point)."""
    return bool(_NUMERIC_TEXT.match(text))


def _cjk_serif(face: FontFace) -> bool:
    return any(w in face.family.lower() for w in _SERIF_CJK)


def pick_fonts(
    rng: random.Random,
    text: str,
    fonts: FontSet,
    latin: list[str],
    cjk_serif: bool | None,
    latin_first: float,
) -> list[FontFace]:
    """A font stack that draws every character of `text`: for Chinese text a CJK face (serif
    when `cjk_serif`, sans when False, either when None), after a Latin face of the `latin`
    kinds with probability `latin_first`; else a Latin face of the first `latin` kind present.
    Raises DataError when no stack of the found faces draws all of `text`."""
    cjk = fonts.of_kind("cjk")
    latin_faces = [f for k in latin for f in fonts.of_kind(k)] or [f for f in fonts.faces if f.kind != "cjk"]
    if has_cjk(text):
        if not cjk:
            raise DataError("the table holds Chinese text but no CJK font was found; see tabvlm.data.fonts")
        styled = [f for f in cjk if cjk_serif is None or _cjk_serif(f) == cjk_serif] or cjk
        firsts = [rng.choice(latin_faces)] if latin_faces and rng.random() < latin_first else []
        candidates = [firsts + [f] for f in rng.sample(styled, len(styled))] + [[f] for f in cjk]
    else:
        kind = next((k for k in latin if fonts.of_kind(k)), None)
        pool = fonts.of_kind(kind) if kind else latin_faces
        candidates = [[f] for f in rng.sample(pool, len(pool))] + [[f] for f in fonts.faces]
    chars = set(text) - {" "}
    for stack in candidates:
        if all(any(draws_text(f, ch) for f in stack) for ch in chars):
            return stack
    missing = sorted(ch for ch in chars if not any(draws_text(f, ch) for f in fonts.faces))
    raise DataError(f"no font found draws the characters {''.join(missing)!r}")


def _stack_css(stack: list[FontFace]) -> str:
    return ", ".join(f'"{f.family}"' for f in stack)


# ---------------------------------------------------------------------------------------------
# The table's HTML: cells tagged with their index, inline markup, row and cell classes
# ---------------------------------------------------------------------------------------------
def _inline(text: str, head: bool, marks: bool) -> str:
    """The cell's text as HTML: footnote marks (and, in headers, unit exponents and formula
    digits) as <sup>/<sub> around the cell's own characters; nothing added, nothing dropped."""
    spans: list[tuple[int, int, str]] = []
    if marks and (m := _MARK.search(text)):
        spans.append((m.start(), m.end(), "sup"))
    if head and marks:
        spans += [(m.start(), m.end(), "sup") for m in _HEAD_SUP.finditer(text)]
        spans += [(m.start(), m.end(), "sub") for m in _HEAD_SUB.finditer(text)]
    out, pos = [], 0
    for start, end, tag in sorted(spans):
        if start < pos:
            continue  # overlapping matches: the first wins
        out.append(html.escape(text[pos:start], quote=False))
        out.append(f"<{tag}>{html.escape(text[start:end], quote=False)}</{tag}>")
        pos = end
    out.append(html.escape(text[pos:], quote=False))
    return "".join(out)


def _decimal_widths(table: Table) -> dict[int, tuple[int, int]]:
    """Per mostly-numeric body column: (longest integer part, longest rest) in characters."""
    out: dict[int, tuple[int, int]] = {}
    for col in range(table.n_cols):
        body = [c for c in table.cells if c.col == col and c.colspan == 1 and c.row >= table.header_rows]
        nums = [m for c in body if c.text and (m := _NUMBER.match(c.text)) and is_numeric(c.text)]
        filled = [c for c in body if c.text]
        if filled and len(nums) >= 0.6 * len(filled):
            out[col] = (max(len(m.group(1)) for m in nums), max(len(m.group(2)) for m in nums))
    return out


def row_roles(table: Table) -> tuple[set[int], set[int], dict[int, int]]:
    """(heading rows, total rows, indent level by cell index) read from the grid: a body row
    whose first cell is its only text is a heading, its followers are indented (twice after a
    child prefix such as "其中："); rows labelled Total / 合计 are totals."""
    headings, totals, indent = set(), set(), {}
    by_row: dict[int, list[int]] = {}
    for i, c in enumerate(table.cells):
        by_row.setdefault(c.row, []).append(i)
    totals_words = tuple(TOTAL["en"] + TOTAL["zh"])
    prefixes = tuple(CHILD_PREFIX["en"] + CHILD_PREFIX["zh"])
    in_group = False
    for r in range(table.header_rows, table.n_rows):
        idx = by_row.get(r, [])
        cells = [table.cells[i] for i in idx]
        if not cells or cells[0].col != 0:
            in_group = False
            continue
        first = cells[0]
        if first.text.startswith(totals_words):
            totals.add(r)
            in_group = False
        elif (
            table.n_cols > 1
            and len(cells) == table.n_cols
            and first.text
            and all(c.rowspan == c.colspan == 1 and not c.text for c in cells[1:])
        ):
            headings.add(r)
            in_group = True
        elif in_group and first.rowspan == first.colspan == 1:
            indent[idx[0]] = 2 if first.text.startswith(prefixes) else 1
        elif first.text.startswith(prefixes):
            indent[idx[0]] = 1
    return headings, totals, indent


def table_html(table: Table, marks: bool, decimal: bool) -> str:
    """The grid as <table>: <th> in header rows, classes num / lab / grp / ind1 / ind2 on cells
    and heading / total on rows, `data-i` = the cell's index in table.cells."""
    headings, totals, indent = row_roles(table)
    widths = _decimal_widths(table) if decimal else {}
    rows: dict[int, list[str]] = {}
    for i, c in enumerate(table.cells):
        head = c.row < table.header_rows
        cls = []
        if head and c.colspan > 1:
            cls.append("grp")
        if not head and c.col == 0:
            cls.append("lab")
        if not head and is_numeric(c.text):
            cls.append("num")
        if i in indent:
            cls.append(f"ind{indent[i]}")
        inner = _inline(c.text, head, marks)
        m = _NUMBER.match(c.text)
        if not head and c.colspan == 1 and c.col in widths and m and is_numeric(c.text):
            ip, fr = widths[c.col]
            inner = (
                f'<span class="ip" style="min-width:{ip * 0.6:.1f}em">{html.escape(m.group(1), quote=False)}'
                f'</span><span class="fr" style="min-width:{fr * 0.6:.1f}em">{_inline(m.group(2), False, marks)}</span>'
            )
        tag = "th" if head else "td"
        span = (f' rowspan="{c.rowspan}"' if c.rowspan > 1 else "") + (
            f' colspan="{c.colspan}"' if c.colspan > 1 else ""
        )
        attr = f' class="{" ".join(cls)}"' if cls else ""
        rows.setdefault(c.row, []).append(f'<{tag} data-i="{i}"{span}{attr}>{inner}</{tag}>')

    def tr(r: int) -> str:
        cls = "heading" if r in headings else "total" if r in totals else ""
        return f"<tr{f' class={cls!r}' if cls else ''}>{''.join(rows.get(r, []))}</tr>"

    head = "".join(tr(r) for r in range(table.header_rows))
    body = "".join(tr(r) for r in range(table.header_rows, table.n_rows))
    return f"<table>{f'<thead>{head}</thead>' if head else ''}<tbody>{body}</tbody></table>"


# ---------------------------------------------------------------------------------------------
# Families
# ---------------------------------------------------------------------------------------------
def _ink(rng: random.Random, lo: int, hi: int) -> str:
    v = rng.randint(lo, hi)
    return f"rgb({v},{v},{v})"


def _words(rng: random.Random, lang: str, n: int) -> str:
    pools = make_pools(lang, 0, 300)
    sep = "" if lang == "zh" else " "
    return sep.join(rng.choice(pools.sentences) for _ in range(n))


def _caption(rng: random.Random, lang: str, prefix: str = "Table") -> str:
    n = rng.randint(1, 12)
    pools = make_pools(lang, 0, 300)
    title = rng.choice(pools.phrases)
    if lang == "zh":
        return f"表{n} {title}" if rng.random() < 0.7 else f"表 {n}：{title}情况"
    return (
        f"{prefix} {n}. {title[:1].upper() + title[1:]}" if rng.random() < 0.7 else f"{prefix} {n}: {title}"
    )


def _notes(rng: random.Random, lang: str, table: Table) -> list[str]:
    marks = "".join(m.group(0) for c in table.cells if (m := _MARK.search(c.text)))
    out = []
    if "*" in marks:
        out.append(
            "* p < 0.05; ** p < 0.01; *** p < 0.001."
            if lang == "en"
            else "注：*、**、*** 分别表示在10%、5%、1%水平上显著。"
        )
    if any(m in marks for m in "abcd†‡"):
        out.append("a Provisional figures. † Revised. " if lang == "en" else "a 为初步统计数。† 为修订数。")
    if rng.random() < 0.6:
        src = make_pools(lang, 0, 300).companies
        out.append(f"Source: {rng.choice(src)}." if lang == "en" else f"资料来源：{rng.choice(src)}。")
    return out


def _science(table: Table, rng: random.Random, fonts: FontSet, lang: str) -> Page:
    fs = rng.randint(10, 15)
    heavy, light = rng.choice([1, 2, 2]), 1
    ink = _ink(rng, 0, 40)
    cap = _caption(rng, lang) if rng.random() < 0.6 else ""
    notes = _notes(rng, lang, table) if rng.random() < 0.7 else []
    stack = pick_fonts(
        rng, _all_text(table, cap, notes), fonts, rng.choice([["latin-serif"], ["latin-sans"]]), None, 0.6
    )
    head_bold = rng.random() < 0.4
    num_align = rng.choice(["right", "center"])
    css = f"""
#page {{ padding: {rng.randint(6, 30)}px; background: #fff; color: {ink}; font-family: {_stack_css(stack)};
  line-height: {rng.uniform(1.1, 1.4):.2f}; }}
#page table {{ border-top: {heavy}px solid {ink}; border-bottom: {heavy}px solid {ink}; }}
#page thead {{ border-bottom: {light}px solid {ink}; }}
#page th, #page td {{ padding: {rng.uniform(0.12, 0.35):.2f}em {rng.uniform(0.35, 0.9):.2f}em; }}
#page th {{ font-weight: {"bold" if head_bold else "normal"}; text-align: {rng.choice(["center", "center", "left"])}; }}
#page th.grp {{ text-align: center; background: linear-gradient({ink}, {ink}) no-repeat center bottom / calc(100% - 0.8em) 1px; }}
#page td.num {{ text-align: {num_align}; }}
#page td.lab {{ text-align: left; }}
#page .cap {{ margin-bottom: 0.4em; {"font-weight: bold;" if rng.random() < 0.4 else ""} }}
#page .note {{ font-size: 0.85em; margin-top: 0.3em; }}
"""
    body = (f'<div class="cap">{html.escape(cap)}</div>' if cap else "") + table_html(table, True, True)
    body += "".join(f'<div class="note">{html.escape(n)}</div>' for n in notes)
    return Page(css, body, fs, None, _all_text(table, cap, notes), info={"fonts": [f.family for f in stack]})


def _government(table: Table, rng: random.Random, fonts: FontSet, lang: str) -> Page:
    fs = rng.randint(11, 15)
    ink = _ink(rng, 0, 50)
    rule = _ink(rng, 60, 170)
    title = _caption(rng, lang) if rng.random() < 0.8 else ""
    unit = (("Unit: " + rng.choice(["thousands", "USD million", "persons", "%"])) if lang == "en"
            else "单位：" + rng.choice(["万元", "人", "%", "亿元"])) if rng.random() < 0.4 else ""  # fmt: skip
    notes = _notes(rng, lang, table)
    stack = pick_fonts(
        rng, _all_text(table, title, [unit] + notes), fonts, rng.choice([["latin-sans"], ["latin-serif"]]),
        rng.random() < 0.3, 0.5,
    )  # fmt: skip
    full = rng.random() < 0.5
    head_grid = rng.random() < 0.5
    vrules = rng.random() < 0.4
    shade = rng.choice(
        ["none", "none", f"rgb({rng.randint(225, 245)},{rng.randint(225, 245)},{rng.randint(225, 245)})"]
    )
    css = f"""
#page {{ padding: {rng.randint(8, 36)}px; background: #fff; color: {ink}; font-family: {_stack_css(stack)};
  line-height: {rng.uniform(1.15, 1.4):.2f}; }}
#page table {{ border-top: 2px solid {ink}; border-bottom: 2px solid {ink}; {"width: 100%;" if full else ""} }}
#page thead {{ border-bottom: 1px solid {ink}; }}
#page th {{ font-weight: {rng.choice(["bold", "normal"])}; text-align: center; background: {shade};
  {f"border: 1px solid {rule};" if head_grid else ""} }}
#page th, #page td {{ padding: {rng.uniform(0.1, 0.35):.2f}em {rng.uniform(0.4, 0.8):.2f}em; }}
{f"#page td + td {{ border-left: 1px solid {rule}; }}" if vrules else ""}
#page td.num {{ text-align: right; }}
#page tr.heading td {{ font-weight: bold; }}
#page tr.total td {{ font-weight: bold; border-top: 1px solid {ink}; }}
#page td.ind1 {{ padding-left: 1.6em; }}
#page td.ind2 {{ padding-left: 2.6em; }}
#page .title {{ font-weight: bold; margin-bottom: 0.3em; text-align: {rng.choice(["left", "center"])}; }}
#page .unit {{ text-align: right; font-size: 0.9em; }}
#page .note {{ font-size: 0.85em; margin-top: 0.25em; }}
"""
    body = (f'<div class="title">{html.escape(title)}</div>' if title else "") + (
        f'<div class="unit">{html.escape(unit)}</div>' if unit else ""
    )
    body += table_html(table, True, rng.random() < 0.5)
    body += "".join(f'<div class="note">{html.escape(n)}</div>' for n in notes)
    width = rng.randint(500, 1100) if full else None
    return Page(
        css,
        body,
        fs,
        width,
        _all_text(table, title, [unit] + notes),
        info={"fonts": [f.family for f in stack]},
    )


def _zh_financial(table: Table, rng: random.Random, fonts: FontSet, lang: str) -> Page:
    fs = rng.randint(11, 16)
    ink = _ink(rng, 0, 40)
    grid = rng.choice([ink, _ink(rng, 80, 140)])
    pools = make_pools(lang, 0, 300)
    if lang == "zh":
        title = rng.choice(
            ["合并资产负债表", "合并利润表", "母公司现金流量表", "主要会计数据和财务指标", "分行业经营情况"]
        )
        line = (
            f"编制单位：{rng.choice(pools.companies)}　　单位：{rng.choice(['万元', '元', '千元', '亿元'])}"
        )
    else:
        title = rng.choice(
            ["Consolidated balance sheet", "Income statement", "Key financial data", "Segment results"]
        )
        line = f"Prepared by: {rng.choice(pools.companies)}    Unit: {rng.choice(['RMB 10,000', 'RMB', 'USD thousands'])}"
    title = title if rng.random() < 0.7 else ""
    line = line if rng.random() < 0.6 else ""
    stack = pick_fonts(
        rng, _all_text(table, title, [line]), fonts, ["latin-serif", "latin-sans"], rng.random() < 0.6, 0.5
    )
    shade = rng.random() < 0.5
    css = f"""
#page {{ padding: {rng.randint(8, 30)}px; background: #fff; color: {ink}; font-family: {_stack_css(stack)};
  line-height: {rng.uniform(1.2, 1.5):.2f}; }}
#page table {{ width: 100%; }}
#page th, #page td {{ border: 1px solid {grid}; padding: {rng.uniform(0.15, 0.4):.2f}em {rng.uniform(0.3, 0.7):.2f}em; }}
#page th {{ text-align: center; font-weight: {rng.choice(["bold", "normal"])};
  {f"background: rgb({rng.randint(225, 242)},{rng.randint(225, 242)},{rng.randint(225, 242)});" if shade else ""} }}
#page td.num {{ text-align: right; }}
#page tr.heading td {{ font-weight: bold; }}
#page tr.total td {{ font-weight: bold; }}
#page td.ind1 {{ padding-left: 2em; }}
#page td.ind2 {{ padding-left: 3em; }}
#page .title {{ text-align: center; font-weight: bold; font-size: 1.25em; margin-bottom: 0.3em; }}
#page .line {{ font-size: 0.9em; margin-bottom: 0.3em; white-space: pre; }}
"""
    body = (f'<div class="title">{html.escape(title)}</div>' if title else "") + (
        f'<div class="line">{html.escape(line)}</div>' if line else ""
    )
    body += table_html(table, False, False)
    width = rng.randint(480, 1100)
    return Page(
        css, body, fs, width, _all_text(table, title, [line]), info={"fonts": [f.family for f in stack]}
    )


def _web(table: Table, rng: random.Random, fonts: FontSet, lang: str) -> Page:
    fs = rng.randint(13, 18)
    hue = rng.randint(0, 359)
    dark = rng.random() < 0.6
    head_bg = f"hsl({hue},{rng.randint(35, 70)}%,{rng.randint(25, 45) if dark else rng.randint(82, 92)}%)"
    head_ink = "#fff" if dark else _ink(rng, 10, 50)
    band = f"hsl({hue},{rng.randint(20, 50)}%,{rng.randint(94, 97)}%)" if rng.random() < 0.5 else "#f3f4f6"
    page_bg = rng.choice(["#fff", "#fff", "#f8fafc", "#fbfbf8"])
    stack = pick_fonts(rng, _all_text(table, "", []), fonts, ["latin-sans"], False, 0.3)
    full = rng.random() < 0.4
    css = f"""
#page {{ padding: {rng.randint(10, 40)}px; background: {page_bg}; color: {_ink(rng, 20, 70)};
  font-family: {_stack_css(stack)}; line-height: {rng.uniform(1.2, 1.5):.2f}; }}
#page table {{ background: #fff; {"width: 100%;" if full else ""} }}
#page th {{ background: {head_bg}; color: {head_ink}; font-weight: bold; text-align: {rng.choice(["left", "center"])};
  padding: {rng.uniform(0.45, 0.8):.2f}em {rng.uniform(0.7, 1.2):.2f}em; }}
#page td {{ padding: {rng.uniform(0.35, 0.7):.2f}em {rng.uniform(0.7, 1.2):.2f}em;
  {"border-bottom: 1px solid #e5e7eb;" if rng.random() < 0.6 else ""} }}
#page tbody tr:nth-child(even) td {{ background: {band}; }}
#page td.num {{ text-align: {rng.choice(["right", "center"])}; }}
#page th.grp {{ text-align: center; border-bottom: 1px solid {head_ink}; }}
"""
    return Page(
        css, table_html(table, False, False), fs, rng.randint(500, 1200) if full else None,
        _all_text(table, "", []), info={"fonts": [f.family for f in stack], "header": head_bg},
    )  # fmt: skip


def _page_crop(table: Table, rng: random.Random, fonts: FontSet, lang: str) -> Page:
    inner_name = rng.choice(DOCUMENT_FAMILIES)
    inner = FAMILY_BUILDERS[inner_name](table, rng, fonts, lang)
    before = _words(rng, lang, rng.randint(1, 4))
    after = _words(rng, lang, rng.randint(1, 4))
    stack = pick_fonts(rng, inner.text + before + after, fonts, ["latin-serif", "latin-sans"], True, 0.5)
    css = (
        inner.css
        + f"""
#page {{ font-family: {_stack_css(stack)}; }}
#page p {{ margin: 0.6em 0; text-align: justify; }}
"""
    )
    body = f"<p>{html.escape(before)}</p>{inner.html}<p>{html.escape(after)}</p>"
    crop = {
        "margin": [rng.randint(0, 70) for _ in range(4)],  # left, top, right, bottom (px)
        "scale": rng.uniform(0.45, 0.9),  # 150-300 dpi pages shown at ~70-130 dpi
        "quality": rng.randint(35, 85),
    }
    info = {**inner.info, "inner": inner_name, "fonts": [f.family for f in stack]}
    return Page(
        css, body, max(9, inner.font_size - 1), rng.randint(560, 900), inner.text + before + after, crop, info
    )


def _all_text(table: Table, caption: str, notes: list[str]) -> str:
    return "".join(c.text for c in table.cells) + caption + "".join(notes)


FAMILY_BUILDERS = {
    "science": _science,
    "government": _government,
    "zh_financial": _zh_financial,
    "web": _web,
    "page_crop": _page_crop,
}


def build_page(family: str, table: Table, rng: random.Random, fonts: FontSet) -> Page:
    """The page of `table` in style `family` (one of FAMILIES), drawn with `rng`."""
    if family not in FAMILY_BUILDERS:
        raise ConfigError(f"unknown style family {family!r}; known: {', '.join(FAMILIES)}")
    lang = "zh" if has_cjk("".join(c.text for c in table.cells)) else "en"
    page = FAMILY_BUILDERS[family](table, rng, fonts, lang)
    page.info = {"family": family, "lang": lang, "font_size": page.font_size, **page.info}
    return page
