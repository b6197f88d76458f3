"""Grid -> Markdown and CSV, the files a person opens after `tabvlm predict`.

Neither format has spans. Both show a spanning cell's text in its top-left slot and leave the
slots it covers empty (`to_csv(..., repeat_spans=True)` repeats the text into every covered slot
instead, handy for spreadsheets and pandas).

Markdown is GitHub-flavoured: one header line, the `| --- |` separator, then the body. The header
line is the header row when header_rows == 1, the first row when header_rows == 0 (GFM needs
one). With header_rows > 1 the header rows are stacked into the one header line GFM allows: each
column shows its header texts top to bottom joined by " / " (a spanning header cell counts in
every column it covers; empty texts and repeats are skipped), so "2023" spanning "Q1" and "Q2"
gives the header cells "2023 / Q1" and "2023 / Q2". `|` in text is escaped as `\\|`. Both views end
with a newline; the empty grid gives "".

`parse_markdown` reads a GFM table back (a model's Markdown output): the line before the
`| --- |` separator is one header row, each later `|` line a body row; text around the table is
ignored, short rows are padded with empty cells, and there are no spans to recover.
"""

from __future__ import annotations

import csv
import io
import re

from tabvlm.errors import TableError
from tabvlm.tables.grid import MAX_SLOTS, Cell, Table, normalize_text


def _text_grid(table: Table, repeat_spans: bool) -> list[list[str]]:
    """(n_rows, n_cols) texts: each cell's text at its top-left slot (or everywhere it covers)."""
    table.validate()
    grid = [[""] * table.n_cols for _ in range(table.n_rows)]
    for cell in table.cells:
        if repeat_spans:
            for r in range(cell.row, cell.end_row):
                grid[r][cell.col : cell.end_col] = [cell.text] * cell.colspan
        else:
            grid[cell.row][cell.col] = cell.text
    return grid


def _md_row(texts: list[str]) -> str:
    return "| " + " | ".join(t.replace("|", "\\|") for t in texts) + " |"


def to_markdown(table: Table) -> str:
    """GitHub-flavoured Markdown table of a valid grid (see the module docstring for spans)."""
    if table.n_rows == 0:
        return ""
    grid = _text_grid(table, repeat_spans=False)
    if table.header_rows > 1:
        spread = _text_grid(table, repeat_spans=True)[: table.header_rows]
        header = []
        for k in range(table.n_cols):
            parts: list[str] = []
            for line in spread:
                if line[k] and (not parts or parts[-1] != line[k]):
                    parts.append(line[k])
            header.append(" / ".join(parts))
        body = grid[table.header_rows :]
    else:
        header, body = grid[0], grid[1:]
    lines = [_md_row(header), "|" + " --- |" * table.n_cols] + [_md_row(line) for line in body]
    return "\n".join(lines) + "\n"


def to_csv(table: Table, repeat_spans: bool = False) -> str:
    """CSV (RFC 4180 quoting, "\\n" line ends) of a valid grid, header rows first like any row."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(_text_grid(table, repeat_spans))
    return out.getvalue()


_SEPARATOR_CELL = re.compile(r"^\s*:?-{1,}:?\s*$")
_UNESCAPED_BAR = re.compile(r"(?<!\\)\|")


def _md_cells(line: str) -> list[str]:
    """The cell texts of one `| a | b |` line (outer bars optional, `\\|` unescaped)."""
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [normalize_text(t.replace("\\|", "|")) for t in _UNESCAPED_BAR.split(line)]


def _is_separator(line: str) -> bool:
    return "-" in line and all(_SEPARATOR_CELL.match(c) for c in _md_cells(line))


def parse_markdown(text: str) -> Table:
    """The grid of the first GFM table in `text` (see the module docstring); TableError when
    there is none (no header line followed by a `| --- |` separator) or it is too large."""
    lines = text.splitlines()
    start = next(
        (i for i in range(len(lines) - 1) if "|" in lines[i] and _is_separator(lines[i + 1])),
        None,
    )
    if start is None:
        raise TableError("no Markdown table (a header line followed by a | --- | separator)")
    rows = [_md_cells(lines[start])]
    for line in lines[start + 2 :]:
        if "|" not in line:
            break
        rows.append(_md_cells(line))
    n_cols = max(len(r) for r in rows)
    if len(rows) * n_cols > MAX_SLOTS:
        raise TableError(f"Markdown table of {len(rows)}x{n_cols} slots is over MAX_SLOTS={MAX_SLOTS}")
    cells = [Cell(row[k] if k < len(row) else "", r, k) for r, row in enumerate(rows) for k in range(n_cols)]
    return Table(len(rows), n_cols, cells, header_rows=1)
