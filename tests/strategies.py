"""Hypothesis strategies shared by the test suite: random valid table grids.

`tables()` draws grids whose cells tile the grid exactly, with random row and column spans;
spans stay inside the header rows or inside the body (as in real tables). Cell text is already
normalised (`tabvlm.tables.normalize_text`): mixed ASCII, digits, punctuation including
`& < > " '`, Chinese characters and single inner spaces, often empty.
"""

from __future__ import annotations

import string

from hypothesis import strategies as st

from tabvlm.tables import Cell, Table, normalize_text

_CJK = "表格数据中文名称年龄合计收入支出项目单位日期备注增长率第一季度金额万元"
_ALPHABET = string.ascii_letters + string.digits + string.punctuation + _CJK + "  "
# Strings that look like markup in one of the views: they must survive as plain text.
_TRICKY = ["&amp;", "<td>", "</table>", "<fcel>", "<nl>", "a & b", "x<y>z", '"q"', "it's", "|", "1,2"]


@st.composite
def cell_texts(draw: st.DrawFn) -> str:
    """One normalised cell text (empty about a quarter of the time)."""
    kind = draw(st.integers(0, 7))
    if kind < 2:
        return ""
    if kind == 2:
        return draw(st.sampled_from(_TRICKY))
    return normalize_text(draw(st.text(_ALPHABET, max_size=12)))


@st.composite
def tables(draw: st.DrawFn, max_rows: int = 6, max_cols: int = 6, max_header_rows: int = 3) -> Table:
    """A random valid `Table` (1..max_rows x 1..max_cols, header_rows 0..max_header_rows)."""
    n_rows = draw(st.integers(1, max_rows))
    n_cols = draw(st.integers(1, max_cols))
    header_rows = draw(st.integers(0, min(max_header_rows, n_rows)))
    taken = [[False] * n_cols for _ in range(n_rows)]
    cells = []
    for r in range(n_rows):
        section_end = header_rows if r < header_rows else n_rows
        for k in range(n_cols):
            if taken[r][k]:
                continue
            max_colspan = 1
            while k + max_colspan < n_cols and not taken[r][k + max_colspan]:
                max_colspan += 1
            # Spans are drawn rarely, so most cells stay 1x1 as in real tables.
            spanning = draw(st.integers(0, 3)) == 0
            colspan = draw(st.integers(1, max_colspan)) if spanning else 1
            rowspan = draw(st.integers(1, section_end - r)) if spanning else 1
            for rr in range(r + 1, r + rowspan):
                if any(taken[rr][k : k + colspan]):
                    rowspan = rr - r
                    break
            for rr in range(r, r + rowspan):
                taken[rr][k : k + colspan] = [True] * colspan
            cells.append(Cell(draw(cell_texts()), r, k, rowspan, colspan))
    table = Table(n_rows, n_cols, cells, header_rows)
    table.validate()
    return table
