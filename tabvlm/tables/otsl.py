"""OTSL <-> grid, the compact table language PaddleOCR-VL emits.

One token per grid slot, row by row, each row ended by `<nl>`, no separators:
`<fcel>` a cell with text (the text follows the token), `<ecel>` an empty cell, `<lcel>` merged
with the cell to the left, `<ucel>` merged with the cell above, `<xcel>` merged both up and left
(inside a cell spanning rows and columns). Example: `<fcel>Name<fcel>Age<nl><fcel>Bob<ecel><nl>`.

Text inside OTSL has `& < >` escaped as `&amp; &lt; &gt;` (as in HTML), so a cell whose text is
`<nl>` cannot be read as a token. `parse_otsl` decodes every HTML entity and normalises the text
like `parse_html` does. OTSL carries no header information: `parse_otsl` returns header_rows 0.

Repairs in `parse_otsl` (`strict=True` raises TableError instead, naming row and column):
- Tokens after the last `<nl>` form a last row; empty rows (`<nl><nl>`) are skipped.
- Ragged rows: short rows are padded with `<ecel>` to the widest row.
- Text before the first token or right after `<nl>` is read as if an `<fcel>` preceded it; text
  after `<ecel>` makes that cell a text cell; text after `<lcel>`/`<ucel>`/`<xcel>` is appended
  (after a space) to the text of the cell that covers the slot.
- Spans are read from each anchor (`<fcel>`/`<ecel>`): its colspan is the run of `<lcel>` to its
  right, its rowspan the run of rows below whose slot under it is `<ucel>` and whose other slots
  in its columns are `<xcel>`. A merge token no anchor claims this way (an `<lcel>` at a row
  start, a `<ucel>` under nothing, a rectangle that is not one) becomes an empty 1x1 cell.
Errors in either mode: a grid of more than MAX_SLOTS slots.
"""

from __future__ import annotations

import html
import re

from tabvlm.errors import TableError
from tabvlm.tables.grid import MAX_SLOTS, Cell, Table, normalize_text

TOKENS = ("<fcel>", "<ecel>", "<lcel>", "<ucel>", "<xcel>", "<nl>")
_TOKEN_RE = re.compile(r"<(fcel|ecel|lcel|ucel|xcel|nl)>")
_ANCHORS = ("fcel", "ecel")


def to_otsl(table: Table) -> str:
    """OTSL of a valid grid (TableError if it is not valid); "" for the empty grid."""
    table.validate()
    parts: list[str] = []
    for r, line in enumerate(table.slots()):
        for k, cell in enumerate(line):
            assert cell is not None  # validate() guarantees every slot has an owner
            if (cell.row, cell.col) == (r, k):
                parts.append(f"<fcel>{html.escape(cell.text, quote=False)}" if cell.text else "<ecel>")
            elif cell.row == r:
                parts.append("<lcel>")
            elif cell.col == k:
                parts.append("<ucel>")
            else:
                parts.append("<xcel>")
        parts.append("<nl>")
    return "".join(parts)


def otsl_tags(table: Table) -> list[str]:
    """The OTSL tags of a valid grid, without the cells' text: ["fcel", "lcel", ..., "nl"]."""
    return _TOKEN_RE.findall(to_otsl(table))


def _split_rows(text: str, strict: bool) -> list[list[tuple[str, str]]]:
    """Rows of (token name, raw text after it); stray text repaired as the module docstring says."""
    pieces = _TOKEN_RE.split(text)  # [text, name, text, name, text, ...]
    rows: list[list[tuple[str, str]]] = []
    row: list[tuple[str, str]] = []

    def stray(raw: str) -> None:
        if strict:
            raise TableError(
                f"row {len(rows)}, col {len(row)}: text {raw.strip()[:30]!r} outside a cell "
                f"(expected a token {'/'.join(TOKENS)})"
            )
        row.append(("fcel", raw))

    if pieces[0].strip():
        stray(pieces[0])
    for i in range(1, len(pieces), 2):
        name, raw = pieces[i], pieces[i + 1]
        if name == "nl":
            if not row and strict:
                raise TableError(f"row {len(rows)} is empty (<nl> with no cell before it)")
            if row:
                rows.append(row)
            row = []
            if raw.strip():
                stray(raw)
            continue
        if raw.strip() and name != "fcel" and strict:
            raise TableError(f"row {len(rows)}, col {len(row)}: text {raw.strip()[:30]!r} after <{name}>")
        row.append((name, raw))
    if row:
        if strict:
            raise TableError(f"row {len(rows)}: the last row does not end with <nl>")
        rows.append(row)
    return rows


def parse_otsl(text: str, strict: bool = False) -> Table:
    """Read OTSL into a grid (header_rows 0); see the module docstring for the repairs."""
    rows = _split_rows(text, strict)
    n_rows = len(rows)
    n_cols = max((len(row) for row in rows), default=0)
    if n_rows * n_cols > MAX_SLOTS:
        raise TableError(f"table too large: {n_rows} x {n_cols} slots > {MAX_SLOTS}")
    for r, row in enumerate(rows):
        if len(row) < n_cols:
            if strict:
                raise TableError(f"row {r} is ragged: {len(row)} slots, the widest row has {n_cols}")
            row.extend([("ecel", "")] * (n_cols - len(row)))
    names = [[name for name, _ in row] for row in rows]
    owner: list[list[Cell | None]] = [[None] * n_cols for _ in range(n_rows)]
    cells: list[Cell] = []
    for r in range(n_rows):
        for k in range(n_cols):
            if names[r][k] not in _ANCHORS:
                continue
            colspan = 1
            while k + colspan < n_cols and names[r][k + colspan] == "lcel":
                colspan += 1
            rowspan = 1
            while (
                r + rowspan < n_rows
                and names[r + rowspan][k] == "ucel"
                and all(name == "xcel" for name in names[r + rowspan][k + 1 : k + colspan])
            ):
                rowspan += 1
            # No overlap check needed: a slot one anchor claims has a token no other anchor accepts
            # (lcel runs stop at anchors; a ucel column below an anchor is xcel for any wider cell).
            cell = Cell("", r, k, rowspan, colspan)
            for rr in range(r, r + rowspan):
                owner[rr][k : k + colspan] = [cell] * colspan
            cells.append(cell)
    texts: dict[int, list[str]] = {}  # id(cell) -> raw texts in slot order
    for r in range(n_rows):
        for k in range(n_cols):
            cell = owner[r][k]
            if cell is None:
                if strict:
                    raise TableError(f"row {r}, col {k}: <{names[r][k]}> merges with no cell")
                cell = owner[r][k] = Cell("", r, k)
                cells.append(cell)
            raw = rows[r][k][1]
            if raw.strip():
                texts.setdefault(id(cell), []).append(raw)
    for cell in cells:
        if id(cell) in texts:
            cell.text = normalize_text(" ".join(html.unescape(raw) for raw in texts[id(cell)]))
    return Table(n_rows, n_cols, cells, 0)
