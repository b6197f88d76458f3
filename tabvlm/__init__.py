"""tabvlm: a small, fast vision-language model that turns a picture of a table into clean HTML."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Prediction", "TableRecognizer", "__version__"]

if TYPE_CHECKING:
    from tabvlm.recognizer import Prediction, TableRecognizer


def __getattr__(name: str) -> Any:
    # Lazy: `import tabvlm` stays light (no torch) until the recognizer is actually asked for.
    if name in ("TableRecognizer", "Prediction"):
        from tabvlm import recognizer

        return getattr(recognizer, name)
    raise AttributeError(f"module 'tabvlm' has no attribute {name!r}")
