"""HTML view: find_table's contract, parse_html's repairs and strict errors, canonical to_html."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import tables

from tabvlm.errors import TableError
from tabvlm.tables import MAX_SPAN, Cell, Table, find_table, parse_html, to_html


def grid(table: Table) -> list[tuple[str, int, int, int, int]]:
    """Cells as (text, row, col, rowspan, colspan) tuples, for compact expectations."""
    return [(c.text, c.row, c.col, c.rowspan, c.colspan) for c in table.cells]


@settings(max_examples=150, deadline=None)
@given(tables())
def test_html_round_trip_is_exact(table: Table) -> None:
    text = to_html(table)
    assert parse_html(text) == table
    assert parse_html(text, strict=True) == table  # canonical HTML needs no repair


_SOUP = ["<table>", "</table>", "<tr>", "</tr>", "<td>", "</td>", "<th>", "<thead>", "</thead>", "<tbody>"]
_SOUP += [
    '<td colspan="3">',
    '<td rowspan="4">',
    '<td colspan="x" rowspan="-1">',
    "<br>",
    "<b>",
    "a",
    "表 ",
    "&amp;",
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(_SOUP), max_size=30))
def test_any_tag_soup_gives_a_valid_grid_or_table_error(pieces: list[str]) -> None:
    try:
        table = parse_html("".join(pieces))
    except TableError as e:
        assert "no <table> element" in str(e)
        return
    table.validate()
    assert parse_html(to_html(table)) == table


def test_find_table_contract() -> None:
    assert find_table("") is None
    assert find_table("  \n\t") is None
    assert find_table("<p>no table here</p>") is None
    # An encoding declaration in a str makes lxml raise ValueError: None, not a traceback.
    assert find_table('<?xml version="1.0" encoding="utf-8"?><table><tr><td>a</td></tr></table>') is None
    outer = find_table("<div><table id='a'><tr><td><table id='b'></table></td></tr></table></div>")
    assert outer is not None and outer.get("id") == "a"
    second = find_table("<p>x</p><!-- <table id='c'> --><table id='d'></table><table id='e'></table>")
    assert second is not None and second.get("id") == "d"


def test_to_html_canonical_form() -> None:
    table = Table(
        3,
        2,
        [Cell("Name", 0, 0, colspan=2), Cell("a<b & c>d", 1, 0, rowspan=2, colspan=1), Cell('"x"', 1, 1)]
        + [Cell("", 2, 1)],
        header_rows=1,
    )
    assert to_html(table) == (
        '<table><thead><tr><td colspan="2">Name</td></tr></thead><tbody>'
        '<tr><td rowspan="2">a&lt;b &amp; c&gt;d</td><td>"x"</td></tr><tr><td></td></tr></tbody></table>'
    )
    both = Table(2, 2, [Cell("s", 0, 0, rowspan=2, colspan=2)])
    assert (
        to_html(both) == '<table><tbody><tr><td colspan="2" rowspan="2">s</td></tr><tr></tr></tbody></table>'
    )
    assert to_html(Table(0, 0)) == "<table><tbody></tbody></table>"
    all_header = Table(1, 1, [Cell("h", 0, 0)], header_rows=1)
    assert to_html(all_header) == "<table><thead><tr><td>h</td></tr></thead><tbody></tbody></table>"
    assert parse_html(to_html(all_header)) == all_header


def test_to_html_rejects_invalid_grid() -> None:
    with pytest.raises(TableError, match=r"slot \(0, 1\) is covered by no cell"):
        to_html(Table(1, 2, [Cell("a", 0, 0)]))


def test_parse_cells_text_and_structure() -> None:
    text = (
        "<html><body><p>before</p><table border=1><caption>Cap</caption><colgroup><col></colgroup>"
        "<thead><tr><th>A &amp; B</th><th>x<sup>2</sup> <i>and</i>\n  H<sub>2</sub>O</th></tr></thead>"
        "<tbody><tr><td>line1<br>line2</td><td><span> 表格 </span>  数据</td></tr></tbody>"
        "<tfoot><tr><td>sum</td><td>&lt;tag&gt;</td></tr></tfoot></table></body></html>"
    )
    table = parse_html(text)
    assert (table.n_rows, table.n_cols, table.header_rows) == (3, 2, 1)
    assert [c.text for c in table.cells] == [
        "A & B",
        "x2 and H2O",
        "line1 line2",
        "表格 数据",
        "sum",
        "<tag>",
    ]


def test_header_rows_from_th_without_thead() -> None:
    table = parse_html(
        "<table><tr><th rowspan=2>k</th><th>v</th></tr><tr><th>w</th></tr><tr><td>1</td><td>2</td></tr></table>"
    )
    assert table.header_rows == 2
    assert parse_html("<table><tr><th>a</th><td>b</td></tr></table>").header_rows == 0
    # A row with no cells of its own continues the header run.
    covered = parse_html("<table><tr><th rowspan=2>a</th></tr><tr></tr><tr><td>b</td></tr></table>")
    assert covered.header_rows == 2


def test_rowspan_crosses_thead_tbody_boundary() -> None:
    table = parse_html(
        "<table><thead><tr><td rowspan=2>a</td><td>b</td></tr></thead><tbody><tr><td>c</td></tr></tbody></table>"
    )
    assert grid(table) == [("a", 0, 0, 2, 1), ("b", 0, 1, 1, 1), ("c", 1, 1, 1, 1)]
    assert table.header_rows == 1


def test_unclosed_tags_are_repaired_by_lxml() -> None:
    table = parse_html("<table><tr><td>a<td><b>b</tr><tr><td>c")
    assert grid(table) == [("a", 0, 0, 1, 1), ("b", 0, 1, 1, 1), ("c", 1, 0, 1, 1), ("", 1, 1, 1, 1)]


def test_cells_outside_tr_form_one_row() -> None:
    table = parse_html("<table><td>a</td><td>b</td><tr><td>c</td><td>d</td></tr></table>")
    assert grid(table) == [("a", 0, 0, 1, 1), ("b", 0, 1, 1, 1), ("c", 1, 0, 1, 1), ("d", 1, 1, 1, 1)]


def test_overlapping_spans_clip_the_later_cell() -> None:
    # b (row 0, col 1) spans 2 rows; c in row 1 asks colspan 3 from col 0: clipped to col 0 only.
    table = parse_html(
        "<table><tr><td>a</td><td rowspan=2>b</td><td>x</td></tr><tr><td colspan=3>c</td><td>d</td></tr></table>"
    )
    assert grid(table) == [
        ("a", 0, 0, 1, 1),
        ("b", 0, 1, 2, 1),
        ("x", 0, 2, 1, 1),
        ("c", 1, 0, 1, 1),
        ("d", 1, 2, 1, 1),
    ]
    # a rowspan running into a later row's colspan: the later colspan is clipped in its own row.
    table = parse_html(
        "<table><tr><td rowspan=3>a</td><td colspan=2 rowspan=2>b</td></tr><tr></tr><tr><td colspan=2>c</td></tr></table>"
    )
    assert grid(table) == [("a", 0, 0, 3, 1), ("b", 0, 1, 2, 2), ("c", 2, 1, 1, 2)]


def test_rowspan_past_last_row_is_clipped() -> None:
    table = parse_html("<table><tr><td rowspan=9>a</td><td>b</td></tr><tr><td>c</td></tr></table>")
    assert grid(table) == [("a", 0, 0, 2, 1), ("b", 0, 1, 1, 1), ("c", 1, 1, 1, 1)]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("x", 1),
        ("0", 1),
        ("-2", 1),
        ("2px", 2),
        (" 3 ", 3),
        ("", 1),
        ("100000", MAX_SPAN),
        ("9" * 5000, MAX_SPAN),
    ],
)
def test_bad_span_values_are_repaired(value: str, expected: int) -> None:
    table = parse_html(f'<table><tr><td colspan="{value}">a</td></tr></table>')
    assert (table.n_cols, table.cells[0].colspan) == (expected, expected)


def test_ragged_rows_are_padded() -> None:
    table = parse_html("<table><tr><td>a</td></tr><tr><td>b</td><td>c</td><td>d</td></tr><tr></tr></table>")
    assert (table.n_rows, table.n_cols) == (3, 3)
    assert grid(table)[:3] == [("a", 0, 0, 1, 1), ("", 0, 1, 1, 1), ("", 0, 2, 1, 1)]
    assert [c.text for c in table.row_cells(2)] == ["", "", ""]
    table.validate()


def test_nested_table_text_is_flattened() -> None:
    table = parse_html(
        "<table><tr><td>outer <table><tr><td>in1</td><td>in2</td></tr><tr><td>in3</td></tr></table> tail</td>"
        "<td>b</td></tr></table>"
    )
    assert grid(table) == [("outer in1 in2 in3 tail", 0, 0, 1, 1), ("b", 0, 1, 1, 1)]


@pytest.mark.parametrize("text", ["", "   ", "<p>just text</p>", "plain words", "<td>a</td>"])
def test_no_table_is_an_error(text: str) -> None:
    with pytest.raises(TableError, match="no <table> element"):
        parse_html(text)


def test_empty_table_is_empty_grid() -> None:
    assert parse_html("<table><tr></tr></table>") == Table(0, 0)


def test_huge_grid_is_refused() -> None:
    rows = "".join(f'<tr><td colspan="{MAX_SPAN}">x</td></tr>' for _ in range(1100))
    with pytest.raises(TableError, match="table too large"):
        parse_html(f"<table>{rows}</table>")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '<table><tr><td colspan="2px">a</td></tr></table>',
            r'row 0, col 0: colspan="2px" is not an integer',
        ),
        ('<table><tr><td>a</td><td rowspan="0">b</td></tr></table>', r'row 0, col 1: rowspan="0"'),
        ('<table><tr><td colspan="5000">a</td></tr></table>', r"not an integer in 1\.\.1000"),
        (
            "<table><tr><td rowspan=3>a</td></tr><tr></tr></table>",
            r"row 0, col 0: rowspan=3 goes past the last row \(1\)",
        ),
        (
            "<table><tr><td>a</td><td rowspan=2>b</td></tr><tr><td colspan=2>c</td></tr></table>",
            r"row 1, col 0: colspan=2 overlaps slot \(1, 1\)",
        ),
        (
            "<table><tr><td>a</td><td rowspan=2>b</td></tr><tr><td rowspan=2>c</td></tr><tr><td>d</td><td>e</td></tr></table>",
            r"row 0 is ragged: no cell covers col 2 \(the table is 3 columns wide\)",
        ),
        (
            "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>",
            r"row 1 is ragged: no cell covers col 1",
        ),
    ],
)
def test_strict_mode_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(TableError, match=message):
        parse_html(text, strict=True)
    parse_html(text)  # the same input is repaired without strict
