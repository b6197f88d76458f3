"""Training the layout model (`stage: layout`) on synthetic tables whose words come from the
renderer, with reader noise: the grid head's decisions (`grid_head_loss`).

Run as: tabvlm train configs/layout-grid.yaml [key=value ...] [--resume]

The loop: a DataLoader worker draws samples i = consumed, consumed+1, ... (`LayoutSamples`:
synthetic tables, and user records by `data.files_ratio`; deterministic per index, so a resumed
run sees the same stream); AdamW with warmup + cosine; bf16
autocast where the CPU has AVX512-BF16 (`cpu_has_bf16`); every `eval_every` steps a held-out set
(seed + 1,000,003) is decoded and scored (TEDS, TEDS-struct); checkpoints are a model folder
(safetensors + config.json) plus `trainer.pt` (optimizer state and counters, loaded with
`weights_only=True`), written to a temp folder and renamed.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from tabvlm.data.layout import LayoutDataConfig, LayoutSamples, SynthLayoutSamples, collate_layout
from tabvlm.errors import ConfigError
from tabvlm.evaluate import teds
from tabvlm.layout_decode import decode_grid
from tabvlm.layout_grid import GRID_FIELDS, IGNORE, N_BINARY, SPAN_CLASSES
from tabvlm.model.layout import LayoutConfig, LayoutModel, load_layout_config
from tabvlm.model.vlm import TOKENIZER_NAME
from tabvlm.tables.html import to_html
from tabvlm.tokenizer import load_tokenizer
from tabvlm.train.distributed import cpu_has_bf16
from tabvlm.train.trainer import lr_factor

logger = logging.getLogger(__name__)
TRAINER_STATE = "trainer.pt"
EVAL_SEED_OFFSET = 1_000_003


@dataclass
class LayoutTrainConfig:
    stage: str = "layout"
    model: LayoutConfig = field(default_factory=LayoutConfig)
    init_from: str | None = None  # a layout model folder to start from (its config wins)
    data: LayoutDataConfig = field(default_factory=LayoutDataConfig)
    max_steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    dtype: str = "auto"  # auto: bf16 autocast on a CPU with AVX512-BF16 (or CUDA), else fp32
    threads: int = 0  # torch threads; 0: torch's default
    num_workers: int = 1
    out_dir: str = "runs/layout"
    save_every: int = 250
    log_every: int = 10
    eval_every: int = 500
    eval_samples: int = 50

    def __post_init__(self) -> None:
        if self.stage != "layout":
            raise ConfigError(f"stage: expected 'layout', found {self.stage!r}")
        for name in ("max_steps", "batch_size", "log_every", "save_every", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: expected >= 1, found {getattr(self, name)}")
        if self.dtype not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"dtype: expected auto, bf16 or fp32, found {self.dtype!r}")


class _Stream(IterableDataset):
    """Samples start, start+1, ... split across DataLoader workers by index."""

    def __init__(self, samples: LayoutSamples, start: int):
        self.samples, self.start = samples, start

    def __iter__(self):
        info = get_worker_info()
        k, n = (info.id, info.num_workers) if info else (0, 1)
        torch.set_num_threads(1)
        i = self.start + k
        while True:
            yield self.samples[i]
            i += n


def group_mean_logits(
    z: torch.Tensor, t: torch.Tensor, groups: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (page, group) that has labelled words: the mean of its words' logits `z` (B, W), which
    is how `assemble_grid` decides a line or a band, and its label (the words' labels `t` agree
    within a group: `grid_targets` gives each group one)."""
    B = z.shape[0]
    G = int(groups.max()) + 1
    key = (torch.arange(B, device=z.device)[:, None] * G + groups)[valid]
    n = torch.zeros(B * G, device=z.device).index_add_(0, key, torch.ones_like(key, dtype=z.dtype))
    zs = torch.zeros(B * G, device=z.device, dtype=z.dtype).index_add_(0, key, z[valid])
    ts = torch.zeros(B * G, device=z.device, dtype=z.dtype).index_add_(0, key, t[valid].to(z.dtype))
    used = n > 0
    return zs[used] / n[used], (ts[used] / n[used] > 0.5).to(z.dtype)


def grid_head_loss(
    model: LayoutModel, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    """The grid head's loss, each term averaged over what it decides: row_start and col_start by
    line and by band (the binary cross-entropy of the group's mean logit, the decision
    `assemble_grid` makes; a per-word loss let a 30-word data band outvote the two-word band of a
    wrapped header, and the model learned to split), outside by word, and the cross-entropy of
    the four span reaches by word (a cell's reach is the sum of its words' log-probabilities)."""
    logits = model.grid_logits(**batch).float()  # (B,W,GRID_LOGITS)
    y = batch["grid_targets"]  # (B,W,7)
    total = logits.sum() * 0
    stats: dict[str, float] = {}
    groups = {0: batch["lines"], 1: batch["bands"]}
    for k, name in enumerate(GRID_FIELDS):
        valid = y[..., k] != IGNORE
        if not valid.any():
            stats[f"{name}_acc"] = float("nan")
            continue
        if k < N_BINARY:
            if k in groups:
                z, t = group_mean_logits(logits[..., k], y[..., k], groups[k], valid)
            else:
                z, t = logits[..., k][valid], y[..., k][valid].float()
            loss = F.binary_cross_entropy_with_logits(z, t)
            acc = ((z > 0).float() == t).float().mean().item()
        else:
            s = N_BINARY + (k - N_BINARY) * SPAN_CLASSES
            z, t = logits[..., s : s + SPAN_CLASSES][valid], y[..., k][valid]
            loss = F.cross_entropy(z, t)
            acc = (z.argmax(-1) == t).float().mean().item()
        total = total + loss
        stats[f"{name}_acc"] = acc
    return total, stats


def _init_from(folder: str) -> LayoutModel:
    """A layout model folder's weights, for more training (`LayoutModel.from_pretrained`: inputs
    newer than the folder start neutral, `NEUTRAL_PARAMS`; other mismatches are a ConfigError)."""
    return LayoutModel.from_pretrained(folder).train()


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    no_decay = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))}
    decay, rest = [], []
    for p in model.parameters():
        (rest if p.ndim < 2 or id(p) in no_decay else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


class LayoutTrainer:
    def __init__(self, cfg: LayoutTrainConfig, resume: bool = False):
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.out = Path(cfg.out_dir)
        self.tokenizer = load_tokenizer()
        # what the starting weights had cost already (their metrics.json), so a folder's
        # metrics say what the whole lineage took
        self.before = {"steps": 0, "samples": 0, "core_hours": 0.0}
        if cfg.init_from:
            self.model = _init_from(cfg.init_from)
            cfg.model = self.model.config
            done = Path(cfg.init_from) / "metrics.json"
            if done.is_file():
                m = json.loads(done.read_text())
                self.before = {
                    "steps": m.get("total_steps", m["step"]),
                    "samples": m.get("total_samples", m["samples"]),
                    "core_hours": m.get("total_core_hours", m["core_hours"]),
                }
        else:
            torch.manual_seed(0)
            cfg.model.vocab_size = self.tokenizer.vocab_size
            self.model = LayoutModel(cfg.model)
        self.opt = torch.optim.AdamW(
            _param_groups(self.model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98)
        )
        self.step = 0
        self.consumed = 0
        self.seconds = 0.0  # wall seconds spent in training steps, over all resumes
        self.history: list[dict[str, float]] = []
        ckpt = self.out / "checkpoint"
        if resume and ckpt.is_dir():
            self.model.load_state_dict(LayoutModel.from_pretrained(ckpt).state_dict())
            state = torch.load(ckpt / TRAINER_STATE, weights_only=True)
            self.opt.load_state_dict(state["optimizer"])
            self.step, self.consumed, self.seconds = (
                int(state["step"]),
                int(state["consumed"]),
                float(state["seconds"]),
            )
            self.history = json.loads(state["history"])
            logger.info("resumed at step %d (%d samples)", self.step, self.consumed)
        self.samples = LayoutSamples(cfg.data, cfg.model, self.tokenizer)  # synthetic + user records
        bf16 = cfg.dtype == "bf16" or (cfg.dtype == "auto" and cpu_has_bf16())
        self.autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    def save(self, folder: Path) -> None:
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp)
        torch.save(
            {
                "optimizer": self.opt.state_dict(),
                "step": self.step,
                "consumed": self.consumed,
                "seconds": self.seconds,
                "history": json.dumps(self.history),
            },
            tmp / TRAINER_STATE,
        )
        self.tokenizer.save(tmp / TOKENIZER_NAME)  # the text embedding's ids mean this tokenizer's tokens
        (tmp / "train_config.json").write_text(json.dumps(asdict(self.cfg), indent=2, default=str) + "\n")
        threads = self.cfg.threads or torch.get_num_threads()
        core_hours = (
            self.seconds * (threads + self.cfg.num_workers * 0.5) / 3600
        )  # + half a core a data worker
        metrics = {
            "step": self.step,
            "samples": self.consumed,
            "train_seconds": round(self.seconds, 1),
            "core_hours": round(core_hours, 3),
            "threads": threads,
            "total_steps": self.before["steps"] + self.step,
            "total_samples": self.before["samples"] + self.consumed,
            "total_core_hours": round(self.before["core_hours"] + core_hours, 3),
            "history": self.history[-20:],
        }
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
        old = folder.with_name(folder.name + ".old")
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)

    def evaluate(self, n: int) -> dict[str, float]:
        held = SynthLayoutSamples(
            LayoutDataConfig(**{**self.cfg.data.__dict__, "seed": self.cfg.data.seed + EVAL_SEED_OFFSET}),
            self.cfg.model,
            self.tokenizer,
            fonts=self.samples.synth.fonts,
        )
        self.model.eval()
        scores, structs = [], []
        with self.autocast:
            for i in range(0, n, 8):
                items = [held.raw(j) for j in range(i, min(n, i + 8))]
                batch = [held[j] for j in range(i, min(n, i + 8))]
                res = decode_grid(self.model, [s.inputs for s in batch], [s.words for s in batch])
                for (table, *_), r in zip(items, res):
                    gt, pred = to_html(table), to_html(r.table)
                    scores.append(teds(pred, gt))
                    structs.append(teds(pred, gt, structure_only=True))
        self.model.train()
        return {"teds": sum(scores) / len(scores), "teds_struct": sum(structs) / len(structs)}

    def fit(self) -> dict[str, float]:
        cfg = self.cfg
        loader = DataLoader(
            _Stream(self.samples, self.consumed),
            batch_size=cfg.batch_size,
            num_workers=cfg.num_workers,
            collate_fn=functools.partial(collate_layout, pad_to=32),
            prefetch_factor=4 if cfg.num_workers else None,
            persistent_workers=False,
        )
        self.model.train()
        it = iter(loader)
        window: list[dict[str, float]] = []
        t_log = time.time()
        metrics: dict[str, float] = {}
        while self.step < cfg.max_steps:
            batch = next(it)
            t0 = time.time()
            for g in self.opt.param_groups:
                g["lr"] = cfg.lr * lr_factor(self.step, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
            with self.autocast:
                loss, stats = grid_head_loss(self.model, batch)
            if not math.isfinite(loss.item()):
                raise ConfigError(f"step {self.step}: loss is {loss.item()}; lower lr")
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.opt.step()
            self.seconds += time.time() - t0
            self.step += 1
            self.consumed += cfg.batch_size
            window.append({"loss": loss.item(), **stats})
            if self.step % cfg.log_every == 0:
                avg = {k: _nanmean([w[k] for w in window]) for k in window[0]}
                rate = len(window) * cfg.batch_size / (time.time() - t_log)
                logger.info(
                    "step %d  loss %.4f  %s  %.1f samples/s  %.2f core-h",
                    self.step, avg["loss"], "  ".join(f"{k} {v:.3f}" for k, v in avg.items() if k != "loss"),
                    rate, self.seconds * torch.get_num_threads() / 3600,
                )  # fmt: skip
                self.history.append({"step": self.step, **avg})
                window, t_log = [], time.time()
            if self.step % cfg.eval_every == 0 or self.step == cfg.max_steps:
                metrics = self.evaluate(cfg.eval_samples)
                logger.info(
                    "step %d  held-out TEDS %.4f  TEDS-struct %.4f",
                    self.step,
                    metrics["teds"],
                    metrics["teds_struct"],
                )
                self.history.append({"step": self.step, **{f"eval_{k}": v for k, v in metrics.items()}})
            if self.step % cfg.save_every == 0 or self.step == cfg.max_steps:
                self.save(self.out / "checkpoint")
        self.save(self.out / "final")
        return {"step": self.step, **metrics}


def _nanmean(values: list[float]) -> float:
    real = [v for v in values if not math.isnan(v)]
    return sum(real) / len(real) if real else float("nan")


def load_layout_train_config(raw: dict[str, Any]) -> LayoutTrainConfig:
    """A LayoutTrainConfig from a recipe's dict (nested dataclasses checked by tabvlm.config)."""
    from tabvlm.config import from_dict

    return from_dict(LayoutTrainConfig, raw)


__all__ = ["LayoutTrainConfig", "LayoutTrainer", "grid_head_loss", "load_layout_config"]
