"""Decode speed of the base model on CPU: ms per table and generated tokens/s, with and without the
table grammar, at batch 1 and 8, in float32 and bfloat16 (random weights, a fixed 400 output
tokens: stopping disabled). The time covers the whole table: vision tower, prefill and decoding.

Run as: .venv/bin/python bench/infer_speed.py [--config configs/base.yaml] [--tokens 400]
        [--batch-sizes 1 8] [--dtypes float32 bfloat16] [--repeats 3] [--threads 2]
        [--out bench/results/infer_speed.json]
        --packed-ab: instead, batch 1 float32 with and without the CPU decode transform
        (tabvlm.model.decode.prepare_cpu_decode: fused matmuls) in alternating rounds, and
        whether both give the same tokens.
        --int8-ab: instead, batch 1 with the transform in float32 and in int8 in alternating
        rounds, and where their tokens first differ.
The recognizer applies the transform on CPU, so the main table measures what users get.
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
    ap.add_argument(
        "--dtypes",
        nargs="+",
        default=["float32", "bfloat16", "int8"],
        choices=["float32", "bfloat16", "int8"],
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/results/infer_speed.json")
    ap.add_argument("--packed-ab", action="store_true", help="A/B of the packed decode weights only")
    ap.add_argument("--int8-ab", action="store_true", help="A/B of float32 and int8 packed weights only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # random weights drive some activations subnormal, and x86 math on subnormals is ~10x slower
    torch.set_flush_denormal(True)
    if args.packed_ab or args.int8_ab:
        ab(args)
        return
    rows = []
    grammar_s = 0.0
    for dtype in args.dtypes:
        rec = TableRecognizer.from_pretrained(args.config, seed=0, dtype=dtype)
        model, tok = rec.model, rec.tokenizer
        size = model.config.vision.image_size
        if not grammar_s:
            t0 = time.perf_counter()
            table_grammar(tok, model.config.lm.vocab_size)  # built once per process; timed apart
            grammar_s = time.perf_counter() - t0
        prompt = image_prompt(tok, model.image_tokens)
        gen = torch.Generator().manual_seed(0)
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
                    "dtype": dtype, "batch": batch, "constrained": constrain, "median_s": round(med, 3),
                    "ms_per_table": round(1000 * med / batch, 1),
                    "tokens_per_s": round(batch * args.tokens / med, 1),
                    "all_s": [round(x, 3) for x in times[constrain]],
                })  # fmt: skip
    by = {(r["dtype"], r["batch"], r["constrained"]): r for r in rows}
    overhead = {
        f"{d} batch {b}": round(by[(d, b, True)]["median_s"] / by[(d, b, False)]["median_s"] - 1, 4)
        for d in args.dtypes for b in args.batch_sizes
    }  # fmt: skip
    print(f"{'dtype':>9} {'batch':>5} {'grammar':>8} {'ms/table':>9} {'tokens/s':>9} {'runs (s)':>24}")
    for r in rows:
        runs = " ".join(f"{x:.2f}" for x in r["all_s"])
        print(f"{r['dtype']:>9} {r['batch']:>5} {'on' if r['constrained'] else 'off':>8} "
              f"{r['ms_per_table']:>9.1f} {r['tokens_per_s']:>9.1f} {runs:>24}")  # fmt: skip
    print("constraint overhead:", ", ".join(f"{k}: {100 * v:+.1f}%" for k, v in overhead.items()))
    print(f"grammar tables built once in {grammar_s:.2f} s")
    write_result(args.out, {
        "threads": args.threads, "config": args.config, "tokens": args.tokens,
        "image_tokens": model.image_tokens, "dtypes": args.dtypes, "grammar_build_s": round(grammar_s, 3), "rows": rows,
        "constraint_overhead": overhead,
    })  # fmt: skip


def ab(args: argparse.Namespace) -> None:
    """Two decode paths of the same weights in alternating rounds (batch 1, grammar on, 400 tokens)."""
    import copy

    from tabvlm.model import TabVLM, load_model_config
    from tabvlm.model.decode import prepare_cpu_decode
    from tabvlm.tokenizer import load_tokenizer

    torch.manual_seed(0)  # the random weights from_pretrained(config, seed=0) draws
    plain = TabVLM(load_model_config(args.config)).eval()
    tok = load_tokenizer()
    fused = prepare_cpu_decode(copy.deepcopy(plain))
    models = (
        {"fused": fused, "plain": plain}
        if args.packed_ab
        else {"int8": prepare_cpu_decode(copy.deepcopy(plain), int8=True), "float32": fused}
    )
    fast, slow = models
    size = plain.config.vision.image_size
    px = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    prompt = image_prompt(tok, plain.image_tokens)
    times: dict[str, list[float]] = {m: [] for m in models}
    tokens: dict[str, list[int]] = {}
    for _ in range(args.repeats):
        for mode, model in models.items():
            t = time.perf_counter()
            out = generate(model, tok, px, [prompt], max_new_tokens=args.tokens, ignore_eos=True)
            times[mode].append(time.perf_counter() - t)
            tokens[mode] = out.tokens[0]
    med = {m: statistics.median(v) for m, v in times.items()}
    rows = {m: {"median_s": round(med[m], 3), "tokens_per_s": round(args.tokens / med[m], 1),
                "all_s": [round(x, 3) for x in times[m]]} for m in times}  # fmt: skip
    a, b = tokens[fast], tokens[slow]
    first_diff = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    for m, r in rows.items():
        print(f"{m:>7}: {r['median_s']:.3f} s a table, {r['tokens_per_s']:.1f} tokens/s  runs {r['all_s']}")
    print(f"speed-up x{med[slow] / med[fast]:.2f}; same tokens: {first_diff is None}"
          + ("" if first_diff is None else f" (first difference at token {first_diff})"))  # fmt: skip
    write_result(args.out, {"threads": args.threads, "config": args.config, "tokens": args.tokens,
                            "ab": rows, "speedup": round(med[slow] / med[fast], 3),
                            "same_tokens": first_diff is None, "first_difference": first_diff})  # fmt: skip


if __name__ == "__main__":
    main()
