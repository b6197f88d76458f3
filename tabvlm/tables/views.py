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
"""

from __future__ import annotations

import csv
import io

from tabvlm.tables.grid import Table


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
