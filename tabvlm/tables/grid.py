"""The table grid: the one type every part of tabvlm speaks.

A table is `n_rows x n_cols` slots. Each `Cell` covers the rectangle starting at (row, col) and
spanning rowspan x colspan slots; cells never overlap and together cover every slot (a valid grid
has no holes: an absent cell is an empty `Cell` with text ""). Header rows are the first
`header_rows` rows (HTML <thead>). HTML, OTSL, Markdown and CSV are views of this type.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from tabvlm.errors import TableError


@dataclass
class Cell:
    text: str
    row: int
    col: int
    rowspan: int = 1
    colspan: int = 1

    @property
    def end_row(self) -> int:  # exclusive
        return self.row + self.rowspan

    @property
    def end_col(self) -> int:  # exclusive
        return self.col + self.colspan


@dataclass
class Table:
    n_rows: int
    n_cols: int
    cells: list[Cell] = field(default_factory=list)  # sorted by (row, col)
    header_rows: int = 0

    def __post_init__(self) -> None:
        self.cells.sort(key=lambda c: (c.row, c.col))

    def slots(self) -> list[list[Cell | None]]:
        """(n_rows, n_cols) owner map: slot -> the cell covering it (None for a hole).
        Raises TableError on overlap or a cell outside the grid."""
        grid: list[list[Cell | None]] = [[None] * self.n_cols for _ in range(self.n_rows)]
        for c in self.cells:
            if c.rowspan < 1 or c.colspan < 1:
                raise TableError(
                    f"cell at ({c.row}, {c.col}) has span {c.rowspan}x{c.colspan}; spans are >= 1"
                )
            if c.row < 0 or c.col < 0 or c.end_row > self.n_rows or c.end_col > self.n_cols:
                raise TableError(
                    f"cell at ({c.row}, {c.col}) spanning {c.rowspan}x{c.colspan} leaves the "
                    f"{self.n_rows}x{self.n_cols} grid"
                )
            for r in range(c.row, c.end_row):
                for k in range(c.col, c.end_col):
                    if grid[r][k] is not None:
                        o = grid[r][k]
                        raise TableError(
                            f"cells at ({o.row}, {o.col}) and ({c.row}, {c.col}) overlap at ({r}, {k})"
                        )
                    grid[r][k] = c
        return grid

    def validate(self) -> None:
        """Raise TableError unless the cells tile the grid exactly."""
        for r, line in enumerate(self.slots()):
            for k, owner in enumerate(line):
                if owner is None:
                    raise TableError(f"slot ({r}, {k}) is covered by no cell")
        if not 0 <= self.header_rows <= self.n_rows:
            raise TableError(f"header_rows={self.header_rows} outside 0..{self.n_rows}")

    def row_cells(self, r: int) -> list[Cell]:
        """Cells that start in row r, left to right."""
        return [c for c in self.cells if c.row == r]

    @property
    def has_span(self) -> bool:
        return any(c.rowspan > 1 or c.colspan > 1 for c in self.cells)

    @property
    def has_blank(self) -> bool:
        return any(not c.text.strip() for c in self.cells)


# Caps that keep a hostile or degenerate table (colspan="100000", one huge ragged row) from
# allocating an absurd grid; parsers clip spans to MAX_SPAN and refuse grids over MAX_SLOTS.
MAX_SPAN = 1000
MAX_SLOTS = 1 << 20


def normalize_text(text: str) -> str:
    """Cell text as every view stores it: NFC, whitespace runs (any Unicode space, newlines)
    collapsed to one space, stripped."""
    return " ".join(unicodedata.normalize("NFC", text).split())
