"""Training logs: one `TrainLogger` in front of the backends (TensorBoard, wandb); the Trainer
writes its log lines itself.

Only rank 0 logs (the others get a logger with every backend off). A backend that is asked for
but not installed is a warning, never an error: logs must not stop a run.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class TrainLogger:
    """Scalars to TensorBoard (`out_dir/tensorboard`) and wandb; a line per `log_every` steps."""

    def __init__(
        self, enabled: bool, out_dir: Path, tensorboard: bool, wandb_project: str | None, config: dict
    ):
        self.enabled = enabled
        self.writer = self._tensorboard(out_dir) if enabled and tensorboard else None
        self.wandb = self._wandb(wandb_project, config) if enabled and wandb_project else None
        self.t_start = time.perf_counter()

    @staticmethod
    def _tensorboard(out_dir: Path) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.warning("tensorboard is not installed: no TensorBoard logs (pip install tabvlm[train])")
            return None
        return SummaryWriter(str(out_dir / "tensorboard"))

    @staticmethod
    def _wandb(project: str, config: dict) -> Any:
        try:
            import wandb
        except ImportError:
            logger.warning("wandb_project is set but wandb is not installed: skipped")
            return None
        wandb.init(project=project, config=config)
        return wandb

    @property
    def minutes(self) -> float:
        """Minutes since the logger (the run) started."""
        return (time.perf_counter() - self.t_start) / 60

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(values, step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


class Window:
    """Running sums of the steps since the last log line: their mean loss, tokens/s, samples/s."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.t0, self.steps = time.perf_counter(), 0
        self.tokens = self.samples = self.loss = self.reading = 0.0

    def add(self, stats: dict[str, float]) -> None:
        self.steps += 1
        self.tokens += stats["tokens"]
        self.samples += stats["samples"]
        self.loss += stats["loss"]
        self.reading += stats["reading_loss"]

    def rates(self) -> tuple[float, float]:
        """(tokens/s, samples/s) over the window."""
        dt = max(time.perf_counter() - self.t0, 1e-9)
        return self.tokens / dt, self.samples / dt
