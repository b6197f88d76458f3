"""Decode speed of the base model on CPU: ms per table and generated tokens/s, with and without the
table grammar, at batch 1 and 8 (random weights, a fixed 400 output tokens: stopping disabled).

Run as: .venv/bin/python bench/infer_speed.py [--config configs/base.yaml] [--tokens 400]
        [--batch-sizes 1 8] [--repeats 3] [--threads 2] [--out bench/results/infer_speed.json]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import write_result

from tabvlm.generate import generate, image_prompt, table_grammar
from tabvlm.recognizer import TableRecognizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/base.yaml")
    ap.add_argument("--tokens", type=int, default=400)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/results/infer_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # random weights drive some activations subnormal, and x86 math on subnormals is ~10x slower
    torch.set_flush_denormal(True)
    rec = TableRecognizer.from_pretrained(args.config, seed=0)
    model, tok = rec.model, rec.tokenizer
    size = model.config.vision.image_size
    t0 = time.perf_counter()
    table_grammar(tok, model.config.lm.vocab_size)  # built once per process; timed apart
    grammar_s = time.perf_counter() - t0
    prompt = image_prompt(tok, model.image_tokens)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for batch in args.batch_sizes:
        px = torch.rand(batch, 3, size, size, generator=gen) * 2 - 1  # (B, 3, S, S)
        # interleave the two modes so that load from other processes hits both alike
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):
            for constrain in (False, True):
                t = time.perf_counter()
                out = generate(model, tok, px, [prompt] * batch, max_new_tokens=args.tokens,
                               constrain=constrain, ignore_eos=True)  # fmt: skip
                times[constrain].append(time.perf_counter() - t)
                assert all(len(x) == args.tokens for x in out.tokens)
        for constrain in (False, True):
            med = statistics.median(times[constrain])
            rows.append({
                "batch": batch, "constrained": constrain, "median_s": round(med, 3),
                "ms_per_table": round(1000 * med / batch, 1),
                "tokens_per_s": round(batch * args.tokens / med, 1),
                "all_s": [round(x, 3) for x in times[constrain]],
            })  # fmt: skip
    by = {(r["batch"], r["constrained"]): r for r in rows}
    overhead = {
        b: round(by[(b, True)]["median_s"] / by[(b, False)]["median_s"] - 1, 4) for b in args.batch_sizes
    }
    print(f"{'batch':>5} {'grammar':>8} {'ms/table':>9} {'tokens/s':>9} {'runs (s)':>24}")
    for r in rows:
        runs = " ".join(f"{x:.2f}" for x in r["all_s"])
        print(f"{r['batch']:>5} {'on' if r['constrained'] else 'off':>8} {r['ms_per_table']:>9.1f} "
              f"{r['tokens_per_s']:>9.1f} {runs:>24}")  # fmt: skip
    print("constraint overhead:", ", ".join(f"batch {b}: {100 * v:+.1f}%" for b, v in overhead.items()))
    print(f"grammar tables built once in {grammar_s:.2f} s")
    write_result(args.out, {
        "threads": args.threads, "config": args.config, "tokens": args.tokens,
        "image_tokens": model.image_tokens, "grammar_build_s": round(grammar_s, 3), "rows": rows,
        "constraint_overhead": overhead,
    })  # fmt: skip


if __name__ == "__main__":
    main()
