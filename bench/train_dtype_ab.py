"""fp32 vs bf16 autocast for one training step of a recipe, on the CPU, in alternating rounds.

Run as: .venv/bin/python bench/train_dtype_ab.py [--recipe configs/default-sft.yaml] [--batch-size 16]
        [--rounds 4] [--threads 2] [--out bench/results/train_dtype_ab.json]

One model and one fixed batch drawn from the recipe's synthetic stream (reading targets included
when the recipe has a reading loss); each round times a full step (forward, backward, AdamW) in
fp32 and then under bf16 autocast, so machine noise hits both alike. Medians and their ratio are
reported, with the loss of each first-round step (one small AdamW step apart, so close, not equal). bf16 autocast only pays on
CPUs with native bf16 dot products (avx512_bf16 / amx_bf16); the Trainer refuses it elsewhere.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import torch
from common import ROOT, write_result

from tabvlm.config import load
from tabvlm.data.dataset import SynthSamples, collate
from tabvlm.model import TabVLM
from tabvlm.tokenizer import load_tokenizer
from tabvlm.train import TrainConfig
from tabvlm.train.config import build_model_config
from tabvlm.train.distributed import cpu_has_bf16
from tabvlm.train.loss import LossModule
from tabvlm.train.reading import ReadingHead


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default=str(ROOT / "configs" / "default-sft.yaml"))
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_dtype_ab.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not cpu_has_bf16():
        raise SystemExit("this CPU has no avx512_bf16 / amx_bf16: bf16 autocast would only be slower")

    cfg = load(TrainConfig, args.recipe)
    tok = load_tokenizer()
    torch.manual_seed(0)
    model = TabVLM(build_model_config(cfg)).train()
    head = ReadingHead(model.config.lm.hidden_size) if cfg.reading_loss > 0 else None
    samples = SynthSamples(cfg.data, tok, model.config.image_tokens, reading=head is not None)
    batch = collate([samples(i) for i in range(args.batch_size)], tok.pad_id)
    loss_module = LossModule(model, head)
    opt = torch.optim.AdamW(loss_module.parameters(), lr=1e-5)

    def step(dtype: str) -> tuple[float, float]:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()
        t0 = time.perf_counter()
        with ctx:
            loss, reading, _ = loss_module(
                batch["input_ids"], batch["labels"], batch["attention_mask"], batch["pixel_values"],
                reading=batch["reading"] if head is not None else None,
            )  # fmt: skip
        n = int((batch["labels"] != -100).sum())
        (loss / n + reading / max(1, n)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0, float(loss.detach()) / n

    step("fp32"), step("bf16")  # warm-up: allocator, kernels
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    first_loss = {}
    for _ in range(args.rounds):
        for dtype in times:
            seconds, loss = step(dtype)
            times[dtype].append(seconds)
            first_loss.setdefault(dtype, loss)
    med = {k: statistics.median(v) for k, v in times.items()}
    tokens = int(batch["attention_mask"].sum())
    print(f"recipe {args.recipe}, batch {args.batch_size} ({tokens} tokens), {args.threads} threads")
    print("| dtype | median step s | samples/s | tokens/s | first-round loss |")
    print("|---|---:|---:|---:|---:|")
    for k in times:
        print(
            f"| {k} | {med[k]:.2f} | {args.batch_size / med[k]:.2f} | {tokens / med[k]:.0f} | {first_loss[k]:.4f} |"
        )
    print(f"bf16 speed-up: x{med['fp32'] / med['bf16']:.2f}")
    write_result(
        args.out,
        {
            "recipe": args.recipe,
            "batch_size": args.batch_size,
            "tokens": tokens,
            "threads": args.threads,
            "step_s": med,
            "all_step_s": times,
            "speedup_bf16": med["fp32"] / med["bf16"],
            "first_loss": first_loss,
        },
    )


if __name__ == "__main__":
    main()
