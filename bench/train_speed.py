"""Training throughput of a model config: tokens/s, samples/s, peak memory (and MFU on CUDA).

Run as: python bench/train_speed.py [--config configs/base.yaml] [--device cpu|cuda] [--steps 5]
                                    [--batch-size 4] [--warmup 1] [--workers 2]

Trains vlm-sft on the default synthetic stream (base data settings: zh + en tables, 1-40 rows) for
`warmup + steps` optimizer steps through `tabvlm.train.Trainer`, timing each step apart into data
loading (waiting on the DataLoader) and the step (forward, backward, optimizer); medians are
reported. MFU = 6 * parameters * tokens/s / 989e12 (H100 SXM bf16 dense peak; forward 2N +
backward 4N FLOPs per token, attention and the vision tower's per-patch cost left out), CUDA only.
Prints a table and writes bench/results/train_speed.json.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import write_result

from tabvlm.config import from_dict
from tabvlm.model import load_model_config
from tabvlm.train import CUDA_PEAK_FLOPS, TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "base.yaml"))
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as out:
        cfg = from_dict(
            TrainConfig,
            {
                "stage": "vlm-sft",
                "model_config": args.config,
                "train_vision": True,
                "device": args.device,
                "batch_size": args.batch_size,
                "max_steps": args.warmup + args.steps,
                "num_workers": args.workers,
                "out_dir": out,
                "progress": False,
                "tensorboard": False,
                "compile": args.compile,
                "pad_to_multiple_of": 64 if args.compile else 1,
                "eval": {"final_samples": 0},
                "data": {"image_size": load_model_config(args.config).vision.image_size},
            },  # fmt: skip
        )
        trainer = Trainer(cfg)
        loader = trainer._loader()
        rows = []
        for i in range(args.warmup + args.steps):
            t0 = time.perf_counter()
            batch = next(loader)
            t1 = time.perf_counter()
            stats = trainer.train_step([batch])
            if args.device == "cuda":
                torch.cuda.synchronize()
            t2 = time.perf_counter()
            if i >= args.warmup:
                rows.append(
                    {
                        "data_s": t1 - t0,
                        "step_s": t2 - t1,
                        "tokens": stats["tokens"],
                        "samples": stats["samples"],
                    }
                )
        memory_mb = trainer._memory_mb()
        n_params = trainer.n_params

    step_s = statistics.median(r["step_s"] for r in rows)
    data_s = statistics.median(r["data_s"] for r in rows)
    total_s = statistics.median(r["step_s"] + r["data_s"] for r in rows)
    tokens = statistics.median(r["tokens"] for r in rows)
    result = {
        "config": str(Path(args.config).relative_to(ROOT))
        if Path(args.config).is_relative_to(ROOT)
        else args.config,
        "device": args.device,
        "device_name": torch.cuda.get_device_name()
        if args.device == "cuda"
        else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "steps": args.steps,
        "params": n_params,
        "tokens_per_step": tokens,
        "tokens_per_s": tokens / total_s,
        "samples_per_s": args.batch_size / total_s,
        "step_s": step_s,
        "data_wait_s": data_s,
        "peak_memory_mb": memory_mb,
        "mfu": 6 * n_params * (tokens / step_s) / CUDA_PEAK_FLOPS if args.device == "cuda" else None,
    }
    print(f"{'config':<22}{'device':<8}{'batch':>6}{'tok/step':>10}{'tok/s':>10}{'samples/s':>11}"
          f"{'step s':>8}{'data s':>8}{'peak MB':>9}{'MFU':>8}")  # fmt: skip
    mfu = "-" if result["mfu"] is None else f"{100 * result['mfu']:.1f}%"
    print(f"{result['config']:<22}{args.device:<8}{args.batch_size:>6}{tokens:>10.0f}{result['tokens_per_s']:>10.0f}"
          f"{result['samples_per_s']:>11.2f}{step_s:>8.2f}{data_s:>8.2f}{memory_mb:>9.0f}{mfu:>8}")  # fmt: skip
    write_result(ROOT / "bench" / "results" / "train_speed.json", result)


if __name__ == "__main__":
    main()
