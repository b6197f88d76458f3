"""Model size and CPU speed of configs/base.yaml, and tokens per table: our tokenizer vs Qwen3's.

Run as: python bench/model_speed.py [--out bench/results/model_speed.json] [--threads 1] [--repeats 3]

1. Parameter counts (vision, projector, lm, total) of tiny / base / nanotab-0.5b (meta device).
2. configs/base.yaml, random weights, fp32: forward and forward+backward time at batch 1 and 8,
   one 512 px image (256 image tokens) + 400 text tokens a row, median of `--repeats` after one
   warm-up run.
3. Tokens per table (canonical HTML of `synthesize`d grids, 100 zh + 100 en) with the shipped
   tokenizer and with the Qwen3 tokenizer.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import write_result

from tabvlm.model import TabVLM, load_model_config
from tabvlm.train.loss import mean_token_loss

ROOT = Path(__file__).resolve().parents[1]
TEXT_TOKENS = 400


def param_counts() -> dict[str, dict]:
    """Parameter counts and image tokens per config, built on the meta device (no memory)."""
    out = {}
    for name in ("tiny", "base", "nanotab-0.5b"):
        cfg = load_model_config(ROOT / "configs" / f"{name}.yaml")
        with torch.device("meta"):
            out[name] = {"params": TabVLM(cfg).num_parameters(), "image_tokens": cfg.image_tokens}
    return out


def median_seconds(fn: Callable[[], None], repeats: int) -> float:
    """Median wall time of `fn` over `repeats` calls, after one untimed warm-up call."""
    fn()  # warm-up: allocator, oneDNN kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def speed(batch: int, repeats: int) -> dict[str, float]:
    """Forward and forward+backward time of configs/base.yaml on (batch, 256 + 400) tokens."""
    cfg = load_model_config(ROOT / "configs" / "base.yaml")
    torch.manual_seed(0)
    model = TabVLM(cfg)
    gen = torch.Generator().manual_seed(0)
    text = torch.randint(10, cfg.lm.vocab_size, (batch, TEXT_TOKENS), generator=gen)
    pads = torch.full((batch, cfg.image_tokens), cfg.image_token_id)
    ids = torch.cat([text[:, :20], pads, text[:, 20:]], dim=1)  # (B, 256 + 400)
    pixels = torch.rand(batch, 3, cfg.vision.image_size, cfg.vision.image_size, generator=gen) * 2 - 1

    def forward() -> None:
        with torch.no_grad():
            model(ids, pixel_values=pixels)

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        mean_token_loss(model, ids, ids, pixel_values=pixels).backward()

    fwd = median_seconds(forward, repeats)
    fwd_bwd = median_seconds(forward_backward, repeats)
    tokens = batch * ids.shape[1]
    return {
        "batch": batch,
        "seq_len": ids.shape[1],
        "forward_s": fwd,
        "forward_backward_s": fwd_bwd,
        "forward_tokens_per_s": tokens / fwd,
        "train_tokens_per_s": tokens / fwd_bwd,
    }


def tokens_per_table(n: int = 100) -> dict[str, dict[str, float]]:
    """Mean / median tokens of `n` zh and `n` en synthetic tables' HTML: ours vs Qwen3's."""
    from tabvlm.data.synth import SynthConfig, synthesize
    from tabvlm.tables.html import to_html
    from tabvlm.tokenizer import load_qwen3_tokenizer, load_tokenizer

    tokenizers = {"tabvlm": load_tokenizer(), "qwen3": load_qwen3_tokenizer()}
    out: dict[str, dict[str, float]] = {}
    for lang, zh_rate in (("zh", 1.0), ("en", 0.0)):
        rng = random.Random(1234)
        cfg = SynthConfig(zh_rate=zh_rate)
        htmls = [to_html(synthesize(rng, cfg)) for _ in range(n)]
        row: dict[str, float] = {"tables": n, "mean_chars": statistics.mean(len(h) for h in htmls)}
        for name, tok in tokenizers.items():
            counts = [len(tok.encode(h)) for h in htmls]
            row[f"{name}_mean"] = statistics.mean(counts)
            row[f"{name}_median"] = statistics.median(counts)
        row["qwen3_over_tabvlm"] = row["qwen3_mean"] / row["tabvlm_mean"]
        out[lang] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "model_speed.json"))
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (2 on a shared 2-core machine spin)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # random weights drive some activations subnormal, and x86 math on subnormals is ~10x slower
    torch.set_flush_denormal(True)

    params = param_counts()
    print(f"{'config':<14}{'vision':>13}{'projector':>12}{'lm':>14}{'total':>14}{'img tok':>9}")
    for name, row in params.items():
        p = row["params"]
        print(
            f"{name:<14}{p['vision']:>13,}{p['projector']:>12,}{p['lm']:>14,}{p['total']:>14,}{row['image_tokens']:>9}"
        )

    speeds = [speed(b, args.repeats) for b in (1, 8)]
    print(f"\nconfigs/base.yaml, fp32, {args.threads} thread(s), median of {args.repeats}")
    print(f"{'batch':>5}{'seq':>6}{'forward s':>11}{'fwd+bwd s':>11}{'fwd tok/s':>11}{'train tok/s':>13}")
    for s in speeds:
        print(
            f"{s['batch']:>5}{s['seq_len']:>6}{s['forward_s']:>11.3f}{s['forward_backward_s']:>11.3f}"
            f"{s['forward_tokens_per_s']:>11.0f}{s['train_tokens_per_s']:>13.0f}"
        )

    tokens = tokens_per_table()
    print(f"\n{'lang':<5}{'chars':>8}{'tabvlm':>9}{'qwen3':>9}{'qwen3/tabvlm':>14}   (mean tokens per table)")
    for lang, r in tokens.items():
        print(
            f"{lang:<5}{r['mean_chars']:>8.0f}{r['tabvlm_mean']:>9.1f}{r['qwen3_mean']:>9.1f}"
            f"{r['qwen3_over_tabvlm']:>14.2f}"
        )

    print()
    write_result(
        args.out,
        {
            "threads": args.threads,
            "repeats": args.repeats,
            "params": params,
            "speed_base": speeds,
            "tokens_per_table": tokens,
        },
    )


if __name__ == "__main__":
    main()
