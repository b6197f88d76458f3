"""What every benchmark records beside its numbers, and how it writes them.

Imported by the bench scripts (run as `python bench/NAME.py`, so this folder is on sys.path).
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


def run_info() -> dict[str, Any]:
    """Date, commit, machine and torch version: the context a figure needs to be compared."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d"),
        "commit": commit,
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "torch": torch.__version__,
    }


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    """`run_info()` + `result` as indented JSON at `path` (folders made as needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run_info() | result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def page_words(item: Any, reader: str, image: Any = None) -> list:
    """A GT item's words: its own (`reader` "truth", where the set has them) or PP-OCRv6's, read
    from `image` when given (already loaded) else from the item's image."""
    if reader == "truth" and item.words is not None:
        return item.words
    from tabvlm.read import read_words

    return read_words(item.image if image is None else image)
