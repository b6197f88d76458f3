"""Checkpoint folders: written to a temporary folder then renamed; listed, loaded."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from tabvlm.errors import TabVLMError

STATE_NAME = "trainer_state.pt"
METRICS_NAME = "metrics.json"


class TrainingError(TabVLMError):
    """The run cannot go on: a non-finite loss, a checkpoint that cannot be written."""


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def write_state(state: dict[str, Any], path: Path) -> None:
    """torch.save of the non-weight state (a seam the fault tests break)."""
    torch.save(state, path)


def checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints under out_dir/checkpoints, oldest first (temporary folders skipped)."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished temporary folder into place (an existing one is moved aside first)."""
    if final.exists():
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def load_state(checkpoint: str | Path) -> dict[str, Any]:
    """The non-weight state of a checkpoint (weights_only: no pickled code runs)."""
    return torch.load(Path(checkpoint) / STATE_NAME, map_location="cpu", weights_only=True)
