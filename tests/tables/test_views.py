"""Markdown and CSV views: expected strings for spans, headers and escaping; Markdown read back."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given, settings
from strategies import tables

from tabvlm.errors import TableError
from tabvlm.tables import Cell, Table, parse_html, parse_markdown, to_csv, to_markdown

SPANNED = parse_html(
    "<table><thead><tr><td rowspan=2>Item</td><td colspan=2>2023</td></tr><tr><td>Q1</td><td>Q2</td></tr>"
    '</thead><tbody><tr><td>a|b</td><td colspan=2>1,5</td></tr><tr><td>say "hi"</td><td></td><td>表</td></tr>'
    "</tbody></table>"
)


def test_markdown_multi_row_header_is_stacked() -> None:
    assert to_markdown(SPANNED) == (
        '| Item | 2023 / Q1 | 2023 / Q2 |\n| --- | --- | --- |\n| a\\|b | 1,5 |  |\n| say "hi" |  | 表 |\n'
    )


def test_markdown_one_or_no_header_row() -> None:
    table = Table(2, 2, [Cell("h", 0, 0, colspan=2), Cell("x", 1, 0), Cell("y", 1, 1)], header_rows=1)
    expected = "| h |  |\n| --- | --- |\n| x | y |\n"
    assert to_markdown(table) == expected
    table.header_rows = 0  # the first row still heads the GFM table
    assert to_markdown(table) == expected
    assert to_markdown(Table(0, 0)) == ""


def test_csv_spans_empty_or_repeated() -> None:
    assert to_csv(SPANNED) == 'Item,2023,\n,Q1,Q2\na|b,"1,5",\n"say ""hi""",,表\n'
    assert to_csv(SPANNED, repeat_spans=True) == (
        'Item,2023,2023\nItem,Q1,Q2\na|b,"1,5","1,5"\n"say ""hi""",,表\n'
    )
    assert to_csv(Table(0, 0)) == ""


@settings(max_examples=60, deadline=None)
@given(tables())
def test_csv_reads_back_the_top_left_texts(table: Table) -> None:
    rows = list(csv.reader(io.StringIO(to_csv(table))))
    assert [len(row) for row in rows] == [table.n_cols] * table.n_rows
    assert all(rows[c.row][c.col] == c.text for c in table.cells)
    assert sum(1 for row in rows for text in row if text) == sum(1 for c in table.cells if c.text)


@settings(max_examples=60, deadline=None)
@given(tables())
def test_markdown_shape(table: Table) -> None:
    lines = to_markdown(table).split("\n")
    assert lines[-1] == ""
    body_rows = table.n_rows - max(table.header_rows, 1)
    assert len(lines) == 2 + body_rows + 1
    assert lines[1] == "|" + " --- |" * table.n_cols
    # Each line has n_cols + 1 unescaped pipes.
    assert all(line.replace("\\|", "").count("|") == table.n_cols + 1 for line in lines[:-1])


@settings(max_examples=80, deadline=None)
@given(tables())
def test_parse_markdown_reads_back_the_markdown(table: Table) -> None:
    written = to_markdown(table)
    read = parse_markdown(written)
    header_lines = max(table.header_rows, 1)  # stacked into the one header line GFM allows
    assert (read.n_rows, read.n_cols, read.header_rows) == (table.n_rows - header_lines + 1, table.n_cols, 1)
    assert to_markdown(read) == written


def test_parse_markdown_in_prose_with_ragged_rows() -> None:
    text = "Here you go:\n\n| a | b \\| c |\n|:--|--:|\n| 1 |\n| 2 | 3 | 4 |\n\nDone | not a row"
    table = parse_markdown(text)
    assert (table.n_rows, table.n_cols, table.header_rows) == (3, 3, 1)
    assert [c.text for c in table.cells] == ["a", "b | c", "", "1", "", "", "2", "3", "4"]


def test_parse_markdown_needs_a_separator() -> None:
    with pytest.raises(TableError, match="no Markdown table"):
        parse_markdown("| a | b |\n| 1 | 2 |\n")
