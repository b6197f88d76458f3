"""OTSL view: exact round trip, escaping, the documented repairs and strict errors."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import tables

from tabvlm.errors import TableError
from tabvlm.tables import Cell, Table, parse_otsl, to_otsl
from tabvlm.tables.otsl import TOKENS


def grid(table: Table) -> list[tuple[str, int, int, int, int]]:
    return [(c.text, c.row, c.col, c.rowspan, c.colspan) for c in table.cells]


@settings(max_examples=150, deadline=None)
@given(tables())
def test_otsl_round_trip_is_exact(table: Table) -> None:
    assert parse_otsl(to_otsl(table)) == dataclasses.replace(table, header_rows=0)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from([*TOKENS, "<fcel>a", "b"]), max_size=40))
def test_any_token_soup_parses_to_a_valid_grid(pieces: list[str]) -> None:
    parse_otsl("".join(pieces)).validate()


def test_to_otsl_tokens_and_escaping() -> None:
    table = Table(
        3,
        3,
        [Cell("Name", 0, 0), Cell("<nl> & more", 0, 1, colspan=2), Cell("", 1, 0)]
        + [Cell("big", 1, 1, rowspan=2, colspan=2), Cell("z", 2, 0)],
        header_rows=1,
    )
    otsl = to_otsl(table)
    assert (
        otsl
        == "<fcel>Name<fcel>&lt;nl&gt; &amp; more<lcel><nl><ecel><fcel>big<lcel><nl><fcel>z<ucel><xcel><nl>"
    )
    assert parse_otsl(otsl).cells == table.cells
    assert to_otsl(Table(0, 0)) == ""
    assert parse_otsl("") == Table(0, 0)


def test_example_from_paddleocr_vl() -> None:
    table = parse_otsl("<fcel>Name<fcel>Age<nl><fcel>Bob<ecel><nl>")
    assert grid(table) == [("Name", 0, 0, 1, 1), ("Age", 0, 1, 1, 1), ("Bob", 1, 0, 1, 1), ("", 1, 1, 1, 1)]
    assert table.header_rows == 0


def test_text_is_unescaped_and_normalised() -> None:
    table = parse_otsl("<fcel>  a&lt;b&gt;\n c &amp;amp; <fcel>&#20013;文<nl>")
    assert [c.text for c in table.cells] == ["a<b> c &amp;", "中文"]


def test_ragged_rows_are_padded() -> None:
    table = parse_otsl("<fcel>a<fcel>b<fcel>c<nl><fcel>d<nl>")
    assert grid(table)[3:] == [("d", 1, 0, 1, 1), ("", 1, 1, 1, 1), ("", 1, 2, 1, 1)]
    with pytest.raises(TableError, match="row 1 is ragged: 1 slots, the widest row has 3"):
        parse_otsl("<fcel>a<fcel>b<fcel>c<nl><fcel>d<nl>", strict=True)


def test_unclaimed_merge_tokens_become_empty_cells() -> None:
    # lcel at a row start, ucel under nothing (row 0), a 2x2 block whose bottom right is lcel.
    table = parse_otsl("<ucel><fcel>a<lcel><nl><lcel><ucel><lcel><nl>")
    assert grid(table) == [
        ("", 0, 0, 1, 1),
        ("a", 0, 1, 1, 2),
        ("", 1, 0, 1, 1),
        ("", 1, 1, 1, 1),
        ("", 1, 2, 1, 1),
    ]
    with pytest.raises(TableError, match=r"row 0, col 0: <ucel> merges with no cell"):
        parse_otsl("<ucel><fcel>a<nl>", strict=True)
    with pytest.raises(TableError, match=r"row 1, col 0: <lcel> merges with no cell"):
        parse_otsl("<fcel>a<nl><lcel><nl>", strict=True)


def test_stray_text_repairs() -> None:
    # Leading text and text after <nl> read as <fcel>; text after <ecel> fills it; text after a
    # merge token joins the covering cell's text.
    table = parse_otsl("lead<fcel>x<nl>next<ecel>more<nl><fcel>p<lcel>q<nl>")
    assert grid(table) == [
        ("lead", 0, 0, 1, 1),
        ("x", 0, 1, 1, 1),
        ("next", 1, 0, 1, 1),
        ("more", 1, 1, 1, 1),
        ("p q", 2, 0, 1, 2),
    ]


def test_missing_final_nl_and_empty_rows() -> None:
    assert grid(parse_otsl("<fcel>a<nl><nl><fcel>b")) == [("a", 0, 0, 1, 1), ("b", 1, 0, 1, 1)]
    with pytest.raises(TableError, match="row 1: the last row does not end with <nl>"):
        parse_otsl("<fcel>a<nl><fcel>b", strict=True)
    with pytest.raises(TableError, match=r"row 1 is empty"):
        parse_otsl("<fcel>a<nl><nl><fcel>b<nl>", strict=True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lead<fcel>a<nl>", r"row 0, col 0: text 'lead' outside a cell"),
        ("<fcel>a<nl>x<fcel>b<nl>", r"row 1, col 0: text 'x' outside a cell"),
        ("<fcel>a<ecel>b<nl>", r"row 0, col 1: text 'b' after <ecel>"),
    ],
)
def test_strict_stray_text(text: str, message: str) -> None:
    with pytest.raises(TableError, match=message):
        parse_otsl(text, strict=True)


def test_to_otsl_rejects_invalid_grid() -> None:
    with pytest.raises(TableError, match="overlap"):
        to_otsl(Table(1, 2, [Cell("a", 0, 0, colspan=2), Cell("b", 0, 1)]))
