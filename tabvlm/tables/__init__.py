"""Table grid and its views (HTML, OTSL, Markdown, CSV)."""

from tabvlm.tables.grid import Cell, Table

__all__ = ["Cell", "Table"]
