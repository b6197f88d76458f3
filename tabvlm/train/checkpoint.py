"""Checkpoint folders: what they hold, written to a temporary folder, sealed with a manifest,
renamed into place; listed, checked, recovered after a kill, loaded.

A folder holds the model (model.safetensors, config.json, tokenizer.json), train_config.yaml
and metrics.json; a checkpoint (out_dir/checkpoints/step-N) also trainer_state.pt (optimizer,
scheduler, reading head, RNG, step, samples consumed, world size), out_dir/final does not.
`save_folder` is the one save path of both.

A kill can come at any point of a save. What it may leave, and what `recover` does at the next
start (every `Trainer` calls it):
- `.tmp-X` (a save not finished, or finished but not yet moved): moved into place when X is gone
  and its manifest checks; removed otherwise.
- `X.old` (the previous X, moved aside by `replace_dir`): removed when X is there, else put back.
- `.trash-X` (a folder being deleted): removed.
A resume takes the newest checkpoint that `check` passes (`latest_intact`), with a warning for each
newer one it skips.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from tabvlm.config import save
from tabvlm.errors import TabVLMError
from tabvlm.model.vlm import CONFIG_NAME, WEIGHTS_NAME

logger = logging.getLogger(__name__)

STATE_NAME = "trainer_state.pt"
METRICS_NAME = "metrics.json"
MANIFEST_NAME = "manifest.json"  # written last: {file name: {"size", "sha256"}}
MODEL_FILES = (WEIGHTS_NAME, CONFIG_NAME)  # what out_dir/final needs
CHECKPOINT_FILES = (WEIGHTS_NAME, CONFIG_NAME, STATE_NAME, METRICS_NAME)  # what a resume needs
TMP, OLD, TRASH = ".tmp-", ".old", ".trash-"


class TrainingError(TabVLMError):
    """The run cannot go on: a non-finite loss, a checkpoint that cannot be written."""


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def write_state(state: dict[str, Any], path: Path) -> None:
    """torch.save of the non-weight state (a seam the fault tests break)."""
    with open(path, "wb") as f:
        torch.save(state, f)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    """Flush a file or folder to the disk (a folder: the names in it), so a power cut after a rename
    cannot leave the new name pointing at data never written."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        if not path.is_dir():  # some file systems cannot flush a folder: the files are flushed
            raise


def seal(folder: Path) -> None:
    """Write folder/manifest.json (size and sha256 of every file in it), after flushing them: the
    mark that the folder is complete. Call it last, before `replace_dir`."""
    files = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST_NAME):
        _fsync(path)
        files[path.name] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    (folder / MANIFEST_NAME).write_text(json.dumps({"files": files}, indent=2))
    _fsync(folder / MANIFEST_NAME)
    _fsync(folder)


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a sealed temporary folder into place. An existing `final` is moved aside to `final.old`
    first and removed last; a kill in between leaves what `recover` puts right."""
    old = final.with_name(final.name + OLD)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)  # a stale one: `final` is whole
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def remove_dir(path: Path) -> None:
    """Delete a folder without ever leaving half of it under its own name (renamed, then deleted)."""
    trash = path.with_name(TRASH + path.name)
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def checkpoints(out_dir: str | Path) -> list[Path]:
    """Checkpoints under out_dir/checkpoints, oldest first (temporary folders skipped; whole or
    not: see `check`)."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def check(folder: Path, required: tuple[str, ...] = CHECKPOINT_FILES, unsealed_ok: bool = True) -> str | None:
    """Why `folder` is not a whole checkpoint (one line), or None when it is. With a manifest:
    every file it lists has its size and sha256 and the `required` ones are listed. Without one
    (written before manifests; refused when not `unsealed_ok`): each required file loads."""
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        if not unsealed_ok:
            return f"no {MANIFEST_NAME} (the save did not finish)"
        return _check_by_loading(folder, required)
    try:
        files = json.loads(manifest.read_text())["files"]
        listed = {name: (int(f["size"]), str(f["sha256"])) for name, f in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"{MANIFEST_NAME} is unreadable ({type(e).__name__}: {e})"
    for name in required:
        if name not in listed:
            return f"{MANIFEST_NAME} does not list {name}"
    for name, (size, sha256) in listed.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        found = path.stat().st_size
        if found != size:
            return f"{name} has {found} bytes, expected {size} (truncated or overwritten)"
        if _sha256(path) != sha256:
            return f"{name} does not match its sha256 in {MANIFEST_NAME} (corrupt)"
    return None


def _check_by_loading(folder: Path, required: tuple[str, ...]) -> str | None:
    for name in required:
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        try:
            if name == STATE_NAME:
                torch.load(path, map_location="cpu", weights_only=True)
            elif name == WEIGHTS_NAME:
                with safe_open(str(path), framework="pt") as f:  # the header and the file size agree
                    f.keys()
            else:
                json.loads(path.read_text(encoding="utf-8"))
        except Exception as e:  # whatever a damaged file makes the loader raise
            first = (str(e).splitlines() or [""])[0]
            return f"{name} does not load ({type(e).__name__}: {first})"
    return None


def latest_intact(out_dir: str | Path) -> Path:
    """The newest checkpoint that `check` passes, with a warning for each newer one skipped."""
    root = Path(out_dir) / "checkpoints"
    found = checkpoints(out_dir)
    if not found:
        raise TrainingError(f"--resume: no checkpoint under {root}")
    skipped = []
    for path in reversed(found):
        problem = check(path)
        if problem is None:
            return path
        logger.warning("--resume: skipped %s: %s", path, problem)
        skipped.append(f"{path.name} ({problem})")
    raise TrainingError(f"--resume: no intact checkpoint under {root}: {'; '.join(skipped)}")


def load_state(checkpoint: str | Path) -> dict[str, Any]:
    """The non-weight state of a checkpoint (weights_only: no pickled code runs)."""
    return torch.load(Path(checkpoint) / STATE_NAME, map_location="cpu", weights_only=True)


def load_metrics(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / METRICS_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def training_state(
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    reading_head: torch.nn.Module | None,
    step: int,
    consumed: int,
    world_size: int,
    device: torch.device,
) -> dict[str, Any]:
    """What a resume needs beyond the weights (trainer_state.pt)."""
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "step": step,
        "consumed": consumed,
        "world_size": world_size,
    }
    if device.type == "cuda":
        state["rng_cuda"] = torch.cuda.get_rng_state()
    if reading_head is not None:
        state["reading_head"] = reading_head.state_dict()
    return state


def restore_training_state(
    path: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    reading_head: torch.nn.Module | None,
    world_size: int,
    device: torch.device,
) -> tuple[int, int]:
    """Load checkpoint `path`'s trainer state into the given objects; (step, samples consumed)."""
    state = load_state(path)
    if int(state["world_size"]) != world_size:
        raise TrainingError(
            f"{path} was written by a run of {state['world_size']} processes; this one has "
            f"{world_size}: the data stream would not continue exactly"
        )
    if reading_head is not None:  # before the optimizer, whose moments have the head's shapes
        if "reading_head" not in state:
            raise TrainingError(f"{path} has no reading head state, and this run has reading_loss > 0")
        saved = {k: tuple(v.shape) for k, v in state["reading_head"].items()}
        wanted = {k: tuple(v.shape) for k, v in reading_head.state_dict().items()}
        if saved != wanted:
            raise TrainingError(
                f"{path}: its reading head has shapes {saved}, this run's {wanted} (the character "
                f"classes changed): it cannot resume exactly; start from its weights with "
                f"init_from={path} instead (a fresh head)"
            )
        reading_head.load_state_dict(state["reading_head"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng_cpu"])
    if device.type == "cuda" and "rng_cuda" in state:
        torch.cuda.set_rng_state(state["rng_cuda"])
    return int(state["step"]), int(state["consumed"])


def save_folder(
    final: Path,
    model: Any,
    tokenizer: Any,
    train_config: Any,
    metrics: dict[str, Any],
    state: dict[str, Any] | None = None,
) -> None:
    """Write `final` atomically: the model folder, the recipe and metrics, and with `state` the
    trainer state (a checkpoint); sealed, then renamed into place. OSError on failure, with the
    temporary folder removed and any previous `final` intact."""
    tmp = final.parent / f"{TMP}{final.name}"
    final.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, tokenizer)
        save(train_config, tmp / "train_config.yaml")
        (tmp / METRICS_NAME).write_text(json.dumps(metrics, indent=2))
        if state is not None:
            write_state(state, tmp / STATE_NAME)
        seal(tmp)
        replace_dir(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def prune(out_dir: Path, keep_last: int) -> None:
    """Remove all but the last `keep_last` checkpoints (a failure is a warning: space, not data)."""
    for old in checkpoints(out_dir)[:-keep_last]:
        try:
            remove_dir(old)
        except OSError as e:
            logger.warning("could not remove the old checkpoint %s (%s)", old, e)


# ---------------------------------------------------------------------------------------------
# Recovery
# ---------------------------------------------------------------------------------------------


def recover(out_dir: str | Path) -> None:
    """Finish or undo the saves a kill interrupted under out_dir (final/ and checkpoints/), and
    remove what they left (module docstring)."""
    out_dir = Path(out_dir)
    _recover_one(out_dir, "final", MODEL_FILES)
    root = out_dir / "checkpoints"
    if not root.is_dir():
        return
    names = set()
    for path in root.iterdir():
        if path.name.startswith(TRASH):
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith(TMP):
            names.add(path.name[len(TMP) :])
        elif path.name.endswith(OLD):
            names.add(path.name[: -len(OLD)])
    for name in sorted(names):
        _recover_one(root, name, CHECKPOINT_FILES)


def _recover_one(root: Path, name: str, required: tuple[str, ...]) -> None:
    final, tmp, old = root / name, root / (TMP + name), root / (name + OLD)
    if not final.exists():
        if tmp.is_dir() and check(tmp, required, unsealed_ok=False) is None:
            os.replace(tmp, final)
            logger.warning(
                "recovered %s: moved in the complete save an interruption left in %s", final, tmp.name
            )
        elif old.is_dir():
            os.replace(old, final)
            logger.warning(
                "recovered %s: put back the previous one (%s), a save of it was interrupted", final, old.name
            )
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover, ignore_errors=True)
            logger.info("removed %s, left by an interrupted save", leftover)
