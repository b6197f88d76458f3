"""HTML <-> grid: the one HTML parser of tabvlm, and the canonical HTML it emits.

`find_table(text)` is the single parse entry point (the metrics use it too): lxml's HTML parser
with comments removed, then the first `<table>` in document order.

`parse_html(text)` reads that table into a `Table`:
- Rows are the `<tr>` elements of the table in document order, whether inside `<thead>`,
  `<tbody>`, `<tfoot>` or directly under `<table>`; `<caption>`, `<colgroup>`/`<col>`,
  `<script>`/`<style>` are ignored. Cells are the `<td>`/`<th>` children of a row.
- Cell text: the text of everything inside the cell (inline tags such as b, i, sup, sub, span
  are dropped, their text kept); `<br>` and block elements (p, div, li, nested table cells...)
  separate words by a space; then NFC and whitespace runs -> one space, stripped
  (`grid.normalize_text`). Entities are decoded (`&amp;` -> `&`).
- header_rows: the leading rows that come from `<thead>`; with no `<thead>`, the leading rows
  that hold `<th>` cells and no `<td>` (a row with no cells of its own continues that run).
  Rowspans are not clipped at `<thead>`/`<tbody>` boundaries (browsers do clip them).

Repairs (never a traceback; `strict=True` raises TableError instead, naming row and column):
- Unclosed or misnested tags: lxml's own repair (e.g. `<td>a<td>b` closes the first cell).
- Cells directly under `<table>`/`<tbody>`/... without a `<tr>`: each run of them forms one row.
- Text inside a `<tr>` but outside any cell, and tables nested outside any cell: dropped.
- Span attributes: missing -> 1; leading digits are read (`"2px"` -> 2, `" 3 "` -> 3); no
  digits (`"x"`), 0 or negative -> 1 (HTML's `rowspan="0"`, "to the end", is not supported);
  more than MAX_SPAN (1000) -> MAX_SPAN.
- A rowspan past the last row is clipped to the last row.
- Overlapping spans: cells are placed in document order, each at the first free slot of its row;
  a later cell whose colspan runs into a slot already taken (by a rowspan from above) is clipped
  to end just before that slot.
- Ragged rows and holes: every free slot of the grid (as wide as the widest row) gets an empty
  1x1 cell.
- Nested tables: only the outermost table is the grid; an inner table's text is flattened into
  the text of the outer cell that holds it.
- A table with no cells parses as the empty 0 x 0 grid.
Errors in either mode: no `<table>` at all, or a grid of more than MAX_SLOTS slots
(TableError).

`to_html(table)` is the canonical form: `<table>`, then `<thead>` with the first header_rows rows
(only when header_rows > 0), then `<tbody>` with the rest (always present, even when empty, so
the shape never varies), `<tr>` and `<td>` only (no `<th>`), ` colspan="N"` before
` rowspan="N"`, each only when N > 1, text with `& < >` escaped, no whitespace between tags, no
newline. `parse_html(to_html(t)) == t` for every valid grid of normalised text.
"""

from __future__ import annotations

import html
import re

import lxml.html
from lxml import etree

from tabvlm.errors import TableError
from tabvlm.tables.grid import MAX_SLOTS, MAX_SPAN, Cell, Table, normalize_text

_SPAN_RE = re.compile(r"\s*\+?(\d+)")
_STRICT_SPAN_RE = re.compile(r"\s*(\d+)\s*")
_SKIPPED = frozenset({"caption", "colgroup", "col", "table", "script", "style"})
# Elements whose boundaries separate words in a cell's text.
_BREAKS = frozenset(
    {"br", "hr", "p", "div", "li", "ul", "ol", "dl", "dt", "dd", "table", "caption", "tr", "td", "th"}
    | {f"h{i}" for i in range(1, 7)}
)


def find_table(text: str) -> lxml.html.HtmlElement | None:
    """The first `<table>` element (document order) of `text` parsed by lxml, or None when the
    text is empty/whitespace, cannot be parsed, or holds no table."""
    if not text or not text.strip():
        return None
    try:
        # A fresh parser each call: lxml parsers must not be shared between threads (the server).
        doc = lxml.html.document_fromstring(text, parser=lxml.html.HTMLParser(remove_comments=True))
    except (etree.ParserError, ValueError):
        return None
    return next(doc.iter("table"), None)


def _tag(el: etree._Element) -> str:
    """Lower-case tag name; "" for comments and processing instructions."""
    return el.tag.lower() if isinstance(el.tag, str) else ""


def _cell_text(cell: etree._Element) -> str:
    """All text inside a cell, with a space at <br> and block boundaries, normalised."""
    if len(cell) == 0:  # the common case: plain text, no child elements
        return normalize_text(cell.text or "")
    parts: list[str] = []
    for event, el in etree.iterwalk(cell, events=("start", "end")):
        tag = _tag(el)
        if event == "start":
            if tag in _BREAKS:
                parts.append(" ")
            if el.text and tag and tag not in ("script", "style"):
                parts.append(el.text)
        else:
            if tag in _BREAKS:
                parts.append(" ")
            if el.tail and el is not cell:
                parts.append(el.tail)
    return normalize_text("".join(parts))


def _collect_rows(table: etree._Element) -> list[tuple[list[etree._Element], bool]]:
    """(cells, from_thead) for each row of the outermost table, in document order."""
    rows: list[tuple[list[etree._Element], bool]] = []

    def walk(parent: etree._Element, in_thead: bool) -> None:
        stray: list[etree._Element] = []  # cells outside any <tr>: one implicit row
        for child in parent:
            tag = _tag(child)
            if tag in ("td", "th"):
                stray.append(child)
                continue
            if stray:
                rows.append((stray, in_thead))
                stray = []
            if tag == "tr":
                rows.append(([c for c in child if _tag(c) in ("td", "th")], in_thead))
            elif tag and tag not in _SKIPPED:
                walk(child, in_thead or tag == "thead")
        if stray:
            rows.append((stray, in_thead))

    walk(table, False)
    return rows


def _header_rows(rows: list[tuple[list[etree._Element], bool]]) -> int:
    if any(in_thead for _, in_thead in rows):
        n = 0
        while n < len(rows) and rows[n][1]:
            n += 1
        return n
    n = 0
    for cells, _ in rows:
        tags = {_tag(c) for c in cells}
        if "td" in tags or (not tags and n == 0):
            break
        n += 1
    return n


def _span(cell: etree._Element, name: str, row: int, col: int, strict: bool) -> int:
    value = cell.get(name)
    if value is None:
        return 1
    if strict:
        m = _STRICT_SPAN_RE.fullmatch(value)
        digits = m.group(1).lstrip("0") if m else ""
        if not digits or len(digits) > 7 or int(digits) > MAX_SPAN:
            raise TableError(
                f'cell at row {row}, col {col}: {name}="{value}" is not an integer in 1..{MAX_SPAN}'
            )
        return int(digits)
    m = _SPAN_RE.match(value)
    if not m:
        return 1
    digits = m.group(1).lstrip("0")
    if len(digits) > 7:  # int() of a huge digit string is slow (and limited): it is capped anyway
        return MAX_SPAN
    return min(max(int(digits or "0"), 1), MAX_SPAN)


def parse_html(text: str, strict: bool = False) -> Table:
    """Read the first `<table>` of `text` into a grid (see the module docstring for the repairs).

    With strict=True, anything that would need a repair of the grid (bad span value, overlap,
    rowspan past the end, ragged row) raises TableError naming the row and column instead.
    """
    table_el = find_table(text)
    if table_el is None:
        raise TableError(f"no <table> element found in the text ({len(text or '')} characters)")
    rows = _collect_rows(table_el)
    n_rows = len(rows)
    taken = [bytearray() for _ in range(n_rows)]  # taken[r][k] == 1: slot (r, k) has an owner
    cells: list[Cell] = []
    area = 0
    for r, (row_cells, _) in enumerate(rows):
        occ = taken[r]
        k = 0
        for el in row_cells:
            while k < len(occ) and occ[k]:
                k += 1
            colspan = _span(el, "colspan", r, k, strict)
            rowspan = _span(el, "rowspan", r, k, strict)
            if r + rowspan > n_rows:
                if strict:
                    raise TableError(
                        f"cell at row {r}, col {k}: rowspan={rowspan} goes past the last row ({n_rows - 1})"
                    )
                rowspan = n_rows - r
            clash = occ.find(1, k, k + colspan)
            if clash != -1:
                if strict:
                    raise TableError(
                        f"cell at row {r}, col {k}: colspan={colspan} overlaps slot ({r}, {clash})"
                    )
                colspan = clash - k
            # The rows below need no check: every cell placed so far starts in a row <= r, so a
            # slot it takes below row r in these columns would also be taken in row r.
            area += rowspan * colspan
            if area > MAX_SLOTS:
                raise TableError(f"table too large: its cells cover more than {MAX_SLOTS} slots")
            for rr in range(r, r + rowspan):
                line = taken[rr]
                if len(line) < k + colspan:
                    line.extend(bytes(k + colspan - len(line)))
                line[k : k + colspan] = b"\x01" * colspan
            cells.append(Cell(_cell_text(el), r, k, rowspan, colspan))
            k += colspan
    n_cols = max((len(line) for line in taken), default=0)
    if n_cols == 0:
        return Table(0, 0, [], 0)
    if n_rows * n_cols > MAX_SLOTS:
        raise TableError(f"table too large: {n_rows} x {n_cols} slots > {MAX_SLOTS}")
    for r, line in enumerate(taken):
        line.extend(bytes(n_cols - len(line)))
        k = line.find(0)
        if k != -1 and strict:
            raise TableError(
                f"row {r} is ragged: no cell covers col {k} (the table is {n_cols} columns wide)"
            )
        while k != -1:
            cells.append(Cell("", r, k))
            k = line.find(0, k + 1)
    return Table(n_rows, n_cols, cells, _header_rows(rows))


def _td(cell: Cell) -> str:
    attrs = (f' colspan="{cell.colspan}"' if cell.colspan > 1 else "") + (
        f' rowspan="{cell.rowspan}"' if cell.rowspan > 1 else ""
    )
    return f"<td{attrs}>{html.escape(cell.text, quote=False)}</td>"


def to_html(table: Table) -> str:
    """Canonical HTML of a valid grid (see the module docstring); TableError if it is not valid."""
    table.validate()
    by_row: list[list[Cell]] = [[] for _ in range(table.n_rows)]
    for cell in sorted(table.cells, key=lambda c: (c.row, c.col)):
        by_row[cell.row].append(cell)
    rows = ["<tr>" + "".join(_td(c) for c in line) + "</tr>" for line in by_row]
    h = table.header_rows
    head = "<thead>" + "".join(rows[:h]) + "</thead>" if h > 0 else ""
    return "<table>" + head + "<tbody>" + "".join(rows[h:]) + "</tbody></table>"
