"""Table grid and its views (HTML, OTSL, Markdown, CSV)."""

from tabvlm.tables.grid import MAX_SLOTS, MAX_SPAN, Cell, Table, normalize_text
from tabvlm.tables.html import find_table, parse_html, to_html
from tabvlm.tables.otsl import parse_otsl, to_otsl
from tabvlm.tables.views import parse_markdown, to_csv, to_markdown

__all__ = [
    "MAX_SLOTS",
    "MAX_SPAN",
    "Cell",
    "Table",
    "find_table",
    "normalize_text",
    "parse_html",
    "parse_markdown",
    "parse_otsl",
    "to_csv",
    "to_html",
    "to_markdown",
    "to_otsl",
]
