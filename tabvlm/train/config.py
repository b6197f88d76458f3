"""Training config: stage, model, data, optimisation, checkpoints, logs (`TrainConfig`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from tabvlm.config import from_dict, merge, to_dict
from tabvlm.data.dataset import DataConfig
from tabvlm.errors import ConfigError
from tabvlm.model import ModelConfig, load_model_config

Stage = Literal["lm-pretrain", "lm-sft", "vlm-pretrain", "vlm-sft", "vlm-reading"]
# (vision, projector, lm) trained by default in each stage
STAGE_TRAINS: dict[str, tuple[bool, bool, bool]] = {
    "lm-pretrain": (False, False, True),
    "lm-sft": (False, False, True),
    "vlm-pretrain": (False, True, False),
    "vlm-sft": (False, True, True),
    # The vision side alone learns to read: only the reading loss, the LM is never run (its tied
    # embeddings, frozen, are the targets of the reading head's token term), so a sample costs
    # the tower's forward and backward only, a small share of a vlm-sft step.
    "vlm-reading": (True, True, False),
}


@dataclass
class EvalConfig:
    """Greedy decoding on a fixed held-out synthetic set (vlm-sft): ED and TEDS."""

    every: int = 0  # steps between evaluations; 0: never during training
    samples: int = 16  # tables in the periodic evaluation
    final_samples: int = 50  # tables in the evaluation at the end (0: none)
    seed: int = 1_000_003  # seeds the held-out tables; differs from data.seed
    batch_size: int = 16
    max_new_tokens: int = 512
    constrain: bool = True  # the table grammar during decoding


@dataclass
class TrainConfig:
    """A training run: stage, model, data, optimisation, checkpoints, logs."""

    stage: Stage = "vlm-sft"
    # Model: a YAML/JSON config (or None: ModelConfig defaults) with `model` keys merged over it;
    # ignored when `init_from` names a checkpoint or model folder (its config is used).
    model_config: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    tokenizer: str | None = None  # tokenizer.json; None: init_from's, else the shipped one
    # Data: jsonl files and/or the synthetic stream (`data.synth`, `data.render`, `data.tasks`).
    data: DataConfig = field(default_factory=DataConfig)
    data_files: list[str] = field(default_factory=list)
    # Share of samples drawn from the synthetic stream; None: 1 without data_files, else 0.
    synth_ratio: float | None = None
    on_bad_record: Literal["raise", "skip"] = "raise"
    # Which parts train; None: the stage's default (STAGE_TRAINS).
    train_vision: bool | None = None
    train_projector: bool | None = None
    train_lm: bool | None = None
    # Optimisation
    max_steps: int = 1000
    batch_size: int = 8  # samples per micro-step per rank
    grad_accum: int = 1  # global batch = batch_size * grad_accum * world_size
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # 0: no clipping
    packing: bool = False  # pack samples into rows of data.max_len tokens
    pad_to_multiple_of: int = 1
    # Weight of the dense reading loss on the image tokens (tabvlm.train.reading; synthetic samples
    # only): teaches a from-scratch vision tower glyphs from the first step. 0: off.
    reading_loss: float = 0.0
    dtype: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    compile: bool = False
    device: str = "auto"  # auto: cuda when available
    num_workers: int = 1
    seed: int = 0  # model init and shuffling of jsonl data
    # Output and logs
    out_dir: str = "runs/train"
    save_every: int = 500
    keep_last: int = 2
    log_every: int = 10
    progress: bool = True
    tensorboard: bool = True
    wandb_project: str | None = None  # used only when wandb is installed
    peak_flops: float | None = None
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum", "log_every", "save_every", "keep_last"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: expected >= 1, found {getattr(self, name)}")
        for name in ("warmup_steps", "num_workers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: expected >= 0, found {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr: expected a finite number > 0, found {self.lr}")
        for name in ("weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name}: expected a finite number >= 0, found {value}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:  # also false for nan
            raise ConfigError(f"min_lr_ratio: expected a share in [0, 1], found {self.min_lr_ratio}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"betas: expected two numbers in [0, 1), found {list(self.betas)}")
        if self.synth_ratio is not None and not 0.0 <= self.synth_ratio <= 1.0:
            raise ConfigError(f"synth_ratio: expected a share in [0, 1], found {self.synth_ratio}")
        if self.synth_ratio == 0.0 and not self.data_files:
            raise ConfigError("synth_ratio is 0 and data_files is empty: no training data")
        if self.stage == "lm-sft" and not self.data_files:
            raise ConfigError("stage lm-sft reads chat jsonl: set data_files")
        if self.stage == "vlm-reading":
            if self.reading_loss <= 0:
                raise ConfigError("stage vlm-reading trains on the reading loss alone: set reading_loss > 0")
            if self.train_lm:
                raise ConfigError("stage vlm-reading never runs the LM: train_lm must not be true")

    @property
    def ratio(self) -> float:
        """The effective synthetic share."""
        if self.synth_ratio is not None:
            return self.synth_ratio
        return 0.0 if self.data_files else 1.0

    def trains(self) -> tuple[bool, bool, bool]:
        """(vision, projector, lm) that this run trains."""
        default = STAGE_TRAINS[self.stage]
        chosen = (self.train_vision, self.train_projector, self.train_lm)
        return tuple(d if c is None else c for c, d in zip(chosen, default))  # type: ignore[return-value]


def build_model_config(cfg: TrainConfig) -> ModelConfig:
    """The model config of a from-scratch run: `model_config` file, then `model` keys."""
    if cfg.model_config is None:
        return from_dict(ModelConfig, cfg.model, "model")
    base = to_dict(load_model_config(cfg.model_config))
    return from_dict(ModelConfig, merge(base, cfg.model), f"{cfg.model_config} + model")
