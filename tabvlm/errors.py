"""The small family of errors tabvlm raises; messages say what was expected and what was found."""

from __future__ import annotations


class TabVLMError(Exception):
    """Base class of every error tabvlm raises on purpose."""


class ConfigError(TabVLMError):
    """A config file or override is wrong (unknown key, bad type, bad value)."""


class DataError(TabVLMError):
    """Bad input data. Carries the file and line (1-based) when known."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        self.file, self.line, self.reason = file, line, message
        where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(where + message)


class TableError(TabVLMError):
    """A table cannot be parsed or repaired (no <table> at all, broken grid)."""
