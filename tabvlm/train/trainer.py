"""The Trainer: model, optimiser, the training step, evaluation, logs, checkpoints."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tabvlm.config import to_dict
from tabvlm.data.dataset import JsonlDataset, Sample, SynthSamples
from tabvlm.errors import ConfigError
from tabvlm.hf.load import init_model
from tabvlm.model import TabVLM
from tabvlm.progress import progress
from tabvlm.tokenizer import IGNORE_INDEX, TableTokenizer, load_tokenizer
from tabvlm.train.checkpoint import (
    TrainingError,
    checkpoints,
    latest_intact,
    load_metrics,
    prune,
    recover,
    restore_training_state,
    save_folder,
    training_state,
)
from tabvlm.train.config import TrainConfig, build_model_config
from tabvlm.train.data import (
    SampleSource,
    ShardSamples,
    SynthMix,
    SynthText,
    TextFile,
    TrainStream,
    make_batch,
)
from tabvlm.train.distributed import (
    all_sum,
    barrier,
    cpu_has_bf16,
    dist_env,
    init_process_group,
    resolve_device,
)
from tabvlm.train.logger import TrainLogger, Window
from tabvlm.train.loss import LossModule
from tabvlm.train.reading import ReadingHead, token_read_rate

logger = logging.getLogger(__name__)

CUDA_PEAK_FLOPS = 989e12  # H100 SXM, bf16 dense


# ---------------------------------------------------------------------------------------------
# Optimiser and schedule
# ---------------------------------------------------------------------------------------------


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters in two AdamW groups: decay on matrices, none on norms, biases and
    embeddings (decaying a lookup table only shrinks rare tokens)."""
    no_decay = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, rest, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (rest if p.ndim < 2 or id(p) in no_decay else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup over `warmup` steps, then cosine from 1 to `min_ratio` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What `fit` returns: the final step, the last loss, the final eval (if any), the model folder."""

    step: int
    loss: float
    metrics: dict[str, float]
    final_dir: Path | None


class Trainer:
    """Builds model, data and optimiser from a TrainConfig; `fit()` runs to `max_steps`."""

    def __init__(self, cfg: TrainConfig, resume: bool = False):
        self.cfg = cfg
        self.rank, self.world_size, local_rank = dist_env()
        self.is_main = self.rank == 0
        self.device = resolve_device(cfg.device, local_rank)
        init_process_group(self.world_size, self.device)
        use_bf16 = cfg.dtype == "bf16" or (cfg.dtype == "auto" and self.device.type == "cuda")
        if use_bf16 and self.device.type == "cpu" and not cpu_has_bf16():
            # without native bf16 dot products autocast is slower than fp32 (PyTorch #86270, #118499)
            raise ConfigError("dtype bf16 on CPU needs avx512_bf16 or amx_bf16 (see /proc/cpuinfo); use fp32")
        self.amp_dtype = torch.bfloat16 if use_bf16 else None
        self.out_dir = Path(cfg.out_dir)

        if self.is_main:
            try:
                recover(self.out_dir)  # what a kill during a save left behind
            except OSError as e:
                raise TrainingError(
                    f"could not recover the interrupted saves under {self.out_dir} ({e})"
                ) from e
        barrier(self.world_size)
        self.resume_from = latest_intact(self.out_dir) if resume else None
        self.model, self.tokenizer = self._build_model()
        self._set_trainable()
        self.reading_head = self._build_reading_head()
        self.model.to(self.device)
        self.n_params = sum(p.numel() for p in self.model.parameters())
        # the model and the head, if any; stage vlm-reading never runs the LM
        loss_module = LossModule(self.model, self.reading_head, run_lm=cfg.stage != "vlm-reading")
        self.optimizer = torch.optim.AdamW(
            param_groups(loss_module, cfg.weight_decay),
            lr=cfg.lr,
            betas=cfg.betas,
            fused=self.device.type == "cuda",
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            partial(lr_factor, warmup=cfg.warmup_steps, total=cfg.max_steps, min_ratio=cfg.min_lr_ratio),
        )
        self.step = 0
        self.consumed = 0  # samples this rank has consumed
        self.metrics: dict[str, float] = {}
        if self.resume_from is not None:
            self._load_state(self.resume_from)
        self.forward_model: nn.Module = loss_module
        if self.world_size > 1:
            self.forward_model = nn.parallel.DistributedDataParallel(
                self.forward_model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if cfg.compile:
            self.forward_model = torch.compile(self.forward_model)
        self._bf16_checked = False
        if self.is_main:
            self._check_out_dir()

    def _check_out_dir(self) -> None:
        """Create out_dir and write a probe file in it: an unwritable out_dir is an error now, not
        at the first save. Last in __init__, so that no other config error leaves an empty folder."""
        probe = self.out_dir / f".probe-{os.getpid()}"
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise ConfigError(
                f"out_dir: expected a folder this process can write, found {self.out_dir} "
                f"({e.strerror or type(e).__name__})"
            ) from e

    # -- building -------------------------------------------------------------------------------
    def _build_model(self) -> tuple[TabVLM, TableTokenizer]:
        cfg = self.cfg
        source = self.resume_from or (Path(cfg.init_from) if cfg.init_from else None)
        if source is not None:
            model = TabVLM.from_pretrained(source).train()
            tok_file = source / "tokenizer.json"
            tokenizer = load_tokenizer(cfg.tokenizer or (tok_file if tok_file.is_file() else None))
            if self.resume_from is None:
                logger.info("initialised from %s", source)
        else:
            config = build_model_config(cfg)
            with torch.random.fork_rng(devices=[]):  # weights from cfg.seed, global RNG untouched
                torch.manual_seed(cfg.seed)
                model = init_model(config)  # pretrained backbones, when the recipe names them
            tokenizer = load_tokenizer(cfg.tokenizer)
        if tokenizer.vocab_size > model.config.lm.vocab_size:
            raise ConfigError(
                f"tokenizer has {tokenizer.vocab_size} ids, the model's lm.vocab_size is {model.config.lm.vocab_size}"
            )
        if cfg.stage.startswith("vlm") and cfg.data.image_size != model.config.vision.image_size:
            raise ConfigError(
                f"data.image_size {cfg.data.image_size} differs from the model's vision.image_size "
                f"{model.config.vision.image_size}"
            )
        return model, tokenizer

    def _build_reading_head(self) -> ReadingHead | None:
        """The training-only reading head (`reading_loss > 0`), seeded apart from the model."""
        if self.cfg.reading_loss <= 0:
            return None
        if not self.cfg.stage.startswith("vlm") or self.cfg.ratio == 0:
            raise ConfigError("reading_loss needs a vlm stage with synthetic samples (synth_ratio > 0)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed + 1)
            head = ReadingHead(self.model.config.lm.hidden_size)
        return head.to(self.device)

    def _set_trainable(self) -> None:
        vision, projector, lm = self.cfg.trains()
        m = self.model
        for module, on in (
            (m.vision_model, vision),
            (m.connector, projector),
            (m.language_model, lm),
            (m.lm_head, lm),
        ):
            module.requires_grad_(on)
        if not any(p.requires_grad for p in m.parameters()):
            raise ConfigError("nothing to train: train_vision, train_projector and train_lm are all false")
        logger.info(
            "stage %s trains: vision=%s projector=%s lm=%s (%d of %d parameters)",
            self.cfg.stage, vision, projector, lm,
            sum(p.numel() for p in m.parameters() if p.requires_grad), sum(p.numel() for p in m.parameters()),
        )  # fmt: skip

    def _source(self) -> SampleSource:
        cfg, tok = self.cfg, self.tokenizer
        n_img = self.model.config.image_tokens
        text_stage = cfg.stage == "lm-pretrain"
        files: list[Any] = []
        for path in cfg.data_files:
            if text_stage:
                files.append(TextFile(path, tok, cfg.data.max_len))
            else:
                size = self.model.config.vision.image_size
                files.append(
                    JsonlDataset(path, tok, size, n_img, cfg.data.max_len, on_error=cfg.on_bad_record)
                )
        synth: Callable[[int], Sample] | None = None
        if cfg.ratio > 0:
            if text_stage:
                if cfg.data.shard_ratio > 0:
                    raise ConfigError(
                        "data.shards hold table images; stage lm-pretrain reads text: set data.shard_ratio=0"
                    )
                synth = SynthText(cfg.data, tok)
            elif cfg.stage == "lm-sft":
                raise ConfigError("stage lm-sft has no synthetic chat data: set synth_ratio=0")
            else:
                reading = self.reading_head is not None
                synth = SynthSamples(cfg.data, tok, n_img, reading=reading)
                if cfg.data.shard_ratio > 0:
                    shards = ShardSamples(cfg.data, tok, n_img, reading=reading)
                    synth = SynthMix(synth, shards, cfg.data.shard_ratio)
        return SampleSource(cfg.ratio, synth, files, cfg.seed)

    def _loader(self) -> Iterator[dict[str, Any]]:
        cfg = self.cfg
        stream = TrainStream(self._source(), self.rank, self.world_size, self.consumed, cfg.batch_size)
        fn = partial(
            make_batch,
            pad_id=self.tokenizer.pad_id,
            packing=cfg.packing,
            max_len=cfg.data.max_len,
            multiple=cfg.pad_to_multiple_of,
        )
        loader = torch.utils.data.DataLoader(
            stream,
            batch_size=cfg.batch_size,
            collate_fn=fn,
            num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=cfg.num_workers > 0,
        )
        return iter(loader)

    # -- state ----------------------------------------------------------------------------------
    def _load_state(self, path: Path) -> None:
        self.step, self.consumed = restore_training_state(
            path, self.optimizer, self.scheduler, self.reading_head, self.world_size, self.device
        )
        self.metrics = load_metrics(path)
        logger.info("resumed from %s (step %d, %d samples per rank consumed)", path, self.step, self.consumed)

    def save_checkpoint(self) -> Path:
        """Write out_dir/checkpoints/step-N atomically, then drop all but the last `keep_last`."""
        final = self.out_dir / "checkpoints" / f"step-{self.step:07d}"
        state = training_state(self.optimizer, self.scheduler, self.reading_head, self.step, self.consumed,
                               self.world_size, self.device)  # fmt: skip
        try:
            save_folder(final, self.model, self.tokenizer, self.cfg, self._metrics_file(), state)
        except OSError as e:
            raise TrainingError(
                f"could not write checkpoint {final} ({e}); the previous checkpoints are intact"
            ) from e
        prune(self.out_dir, self.cfg.keep_last)
        logger.info("saved %s", final)
        return final

    def save_final(self) -> Path:
        """The model folder out_dir/final (loadable by TabVLM / TableRecognizer.from_pretrained)."""
        final = self.out_dir / "final"
        try:
            save_folder(final, self.model, self.tokenizer, self.cfg, self._metrics_file())
        except OSError as e:
            raise TrainingError(f"could not write the model folder {final} ({e})") from e
        return final

    def _metrics_file(self) -> dict[str, Any]:
        return {**self.metrics, "step": self.step}  # a resumed run's metrics hold the old step

    # -- one step -------------------------------------------------------------------------------
    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _micro_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Summed token cross-entropy and summed reading loss of one micro-batch, and its input
        token count."""
        dev = self.device
        ids = batch["input_ids"].to(dev, non_blocking=True)
        labels = batch["labels"].to(dev, non_blocking=True)
        pixels = batch["pixel_values"]
        seg = batch.get("segment_ids")
        reading = batch.get("reading") if self.reading_head is not None else None
        with self._autocast():
            loss_sum, reading_sum, probe = self.forward_model(
                ids,
                labels,
                batch["attention_mask"].to(dev, non_blocking=True),
                pixel_values=None if pixels is None else pixels.to(dev, non_blocking=True),
                segment_ids=None if seg is None else seg.to(dev, non_blocking=True),
                reading=None
                if reading is None
                else {k: v.to(dev, non_blocking=True) for k, v in reading.items()},
            )
        if not self._bf16_checked and self.amp_dtype is not None:
            if probe.dtype != self.amp_dtype:  # NanoTabVLM asked for bf16 and silently ran fp16
                raise TrainingError(f"autocast gave {probe.dtype} logits, expected {self.amp_dtype}")
            self._bf16_checked = True
        return loss_sum, reading_sum, int(batch["attention_mask"].sum())

    def _all_sum(self, values: list[float]) -> list[float]:
        return all_sum(values, self.world_size, self.device)

    def train_step(self, batches: list[dict[str, Any]]) -> dict[str, float]:
        """One optimizer step over `grad_accum` micro-batches; the loss is the mean over every
        target token of the global batch."""
        targets = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
        read = sum(int(b["reading"]["has"].sum()) for b in batches if b.get("reading") is not None)
        global_targets, global_read = self._all_sum([float(targets), float(read)])
        global_targets, global_read = max(global_targets, 1.0), max(global_read, 1.0)
        self.model.train()
        total, read_total, tokens = 0.0, 0.0, 0
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            sync = nullcontext() if last or self.world_size == 1 else self.forward_model.no_sync()
            with sync:
                loss_sum, reading_sum, n_tok = self._micro_loss(batch)
                # DDP averages gradients over ranks: scale by world_size to get the global means
                loss = loss_sum * (self.world_size / global_targets)
                if self.reading_head is not None:
                    loss = loss + reading_sum * (self.cfg.reading_loss * self.world_size / global_read)
                loss.backward()
            total += float(loss_sum.detach())
            read_total += float(reading_sum.detach())
            tokens += n_tok
        params = [p for p in self.forward_model.parameters() if p.requires_grad]
        if self.cfg.grad_clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip))
        else:
            grad_norm = float(torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))
        loss_total, read_total, tokens_total, samples_total = self._all_sum(
            [total, read_total, float(tokens), float(sum(b["input_ids"].shape[0] for b in batches))]
        )
        loss = loss_total / global_targets
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            last = checkpoints(self.out_dir)
            where = f"last good checkpoint: {last[-1]}" if last else "no checkpoint was written yet"
            raise TrainingError(
                f"step {self.step + 1}: loss {loss}, grad norm {grad_norm} (not finite); stopped before "
                f"the update ({where}). Lower lr, raise warmup_steps or check the data."
            )
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.consumed += self.cfg.batch_size * len(batches)
        return {
            "loss": loss,
            "reading_loss": read_total / global_read,
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens": tokens_total,
            "samples": samples_total,
        }

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self, n: int) -> dict[str, float]:
        """On `n` held-out synthetic tables (rank 0 only): `read`, the share of image tokens in a
        cell with text whose nearest LM token is one of the cell's (`token_read_rate`; models
        with tied embeddings), and for vlm-sft greedy decoding's mean ED, TEDS and TEDS-struct."""
        from tabvlm.evaluate import score_sample
        from tabvlm.generate import generate, image_prompt

        cfg = self.cfg
        # whole tables only (no curriculum variants), so that runs with any curriculum compare
        data = dataclasses.replace(cfg.data, seed=cfg.eval.seed, variants=[])
        n_img = self.model.config.image_tokens
        tied = self.model.config.lm.tie_embeddings
        held_out = SynthSamples(data, self.tokenizer, n_img, reading=tied)
        samples = [held_out(i) for i in range(n)]
        result: dict[str, float] = {}
        self.model.eval()
        if tied:
            hits = total = 0
            for start in range(0, n, cfg.eval.batch_size):
                chunk = samples[start : start + cfg.eval.batch_size]
                with torch.no_grad():
                    features = self.model.encode_images(
                        torch.cat([s["pixel_values"] for s in chunk]).to(self.device)
                    )
                tokens = torch.stack([s["reading"]["tokens"] for s in chunk]).to(self.device)
                h, t = token_read_rate(features, tokens, self.model.lm_head.weight)
                hits, total = hits + h, total + t
            result["read"] = hits / max(total, 1)
        if cfg.stage == "vlm-reading":
            self.model.train()
            return result
        prompt = image_prompt(self.tokenizer, n_img)
        scores = []
        for start in range(0, n, cfg.eval.batch_size):
            chunk = samples[start : start + cfg.eval.batch_size]
            pixels = torch.cat([s["pixel_values"] for s in chunk])
            with self._autocast():
                gen = generate(
                    self.model,
                    self.tokenizer,
                    pixels,
                    [prompt] * len(chunk),
                    max_new_tokens=cfg.eval.max_new_tokens,
                    constrain=cfg.eval.constrain,
                )
            for s, text in zip(chunk, gen.texts):
                gt = self.tokenizer.decode(
                    s["labels"][s["labels"] != IGNORE_INDEX].tolist(), skip_special=True
                )
                scores.append(score_sample(text, gt))
        self.model.train()
        return {
            **{k: sum(s[k] for s in scores) / len(scores) for k in ("ed", "teds", "teds_struct")},
            **result,
        }

    # -- the loop -------------------------------------------------------------------------------
    def _peak_flops(self) -> float | None:
        if self.cfg.peak_flops is not None:
            return self.cfg.peak_flops
        return CUDA_PEAK_FLOPS if self.device.type == "cuda" else None

    def _memory_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB

    def fit(self) -> TrainResult:
        """Train to max_steps; checkpoints, logs, evaluation; returns the final numbers."""
        cfg = self.cfg
        logs = TrainLogger(self.is_main, self.out_dir, cfg.tensorboard, cfg.wandb_project, to_dict(cfg))
        loader = self._loader()
        bar = None
        if self.is_main and cfg.progress:  # a bar on a terminal, plain lines in a log file
            bar = progress(total=cfg.max_steps, initial=self.step, unit="step", desc=cfg.stage)
        stats: dict[str, float] = {"loss": float("nan")}
        window = Window()
        try:
            while self.step < cfg.max_steps:
                stats = self.train_step([next(loader) for _ in range(cfg.grad_accum)])
                window.add(stats)
                if bar is not None:
                    bar.set_postfix(loss=f"{stats['loss']:.4f}")  # first: a plain line shows this step's
                    bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    self._log_window(window, stats, logs)
                    window.reset()
                if cfg.eval.every and self.step % cfg.eval.every == 0 and self.step < cfg.max_steps:
                    self._run_eval(cfg.eval.samples, logs)
                if self.step % cfg.save_every == 0 and self.step < cfg.max_steps:
                    barrier(self.world_size)
                    if self.is_main:
                        self.save_checkpoint()
            if bar is not None:
                bar.close()
            if cfg.eval.final_samples and cfg.stage in ("vlm-sft", "vlm-reading"):
                self._run_eval(cfg.eval.final_samples, logs, prefix="final")
            final_dir = None
            barrier(self.world_size)
            if self.is_main:
                self.save_checkpoint()
                final_dir = self.save_final()
                logger.info("final model: %s (%.1f min)", final_dir, logs.minutes)
        finally:
            if bar is not None:
                bar.close()
            logs.close()
        return TrainResult(self.step, stats["loss"], dict(self.metrics), final_dir)

    def _log_window(self, window: Window, stats: dict[str, float], logs: TrainLogger) -> None:
        """The scalars of the steps since the last log line, and the line (rank 0)."""
        tok_s, smp_s = window.rates()
        scalars = {
            "train/loss": window.loss / window.steps,
            "train/lr": stats["lr"],
            "train/grad_norm": stats["grad_norm"],
            "perf/tokens_per_s": tok_s,
            "perf/samples_per_s": smp_s,
            "perf/memory_mb": self._memory_mb(),
        }
        if self.reading_head is not None:
            scalars["train/reading_loss"] = window.reading / window.steps
        peak = self._peak_flops()
        mfu = 6 * self.n_params * tok_s / peak if peak else None
        if mfu is not None:
            scalars["perf/mfu"] = mfu
        logs.scalars(scalars, self.step)
        self.metrics["loss"] = scalars["train/loss"]
        if self.is_main:
            logger.info(
                "step %d/%d | loss %.4f | lr %.2e | grad %.3f | %.0f tok/s | %.1f samples/s | mfu %s | %.1f min%s",
                self.step, self.cfg.max_steps, scalars["train/loss"], stats["lr"], stats["grad_norm"], tok_s, smp_s,
                "n/a" if mfu is None else f"{100 * mfu:.2f}%", logs.minutes,
                f" | reading {scalars['train/reading_loss']:.4f}" if self.reading_head else "",
            )  # fmt: skip

    def _run_eval(self, n: int, logs: TrainLogger, prefix: str = "eval") -> None:
        if not self.is_main or self.cfg.stage not in ("vlm-sft", "vlm-reading"):
            return
        t0 = time.perf_counter()
        scores = self.evaluate(n)
        self.metrics.update({f"{prefix}_{k}": v for k, v in scores.items()})
        logs.scalars({f"{prefix}/{k}": v for k, v in scores.items()}, self.step)
        names = {"ed": "ED", "teds": "TEDS", "teds_struct": "TEDS-struct", "read": "read"}
        logger.info(
            "%s step %d | %d tables | %s | %.0f s", prefix, self.step, n,
            " | ".join(f"{names[k]} {v:.4f}" for k, v in scores.items()), time.perf_counter() - t0,
        )  # fmt: skip
