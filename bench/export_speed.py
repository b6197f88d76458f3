"""Decode speed of one model two ways on CPU: tabvlm's `generate` and transformers' `generate`
on its HF export (Cohere2VisionForConditionalGeneration), greedy, batch 1 and 8.

Random weights (a fixed seed) and a fixed number of new tokens (stopping disabled on both sides);
the same pixel values and prompt ids go to both, and their tokens are checked to agree.

Run as: .venv/bin/python bench/export_speed.py [--config configs/base.yaml] [--tokens 128]
        [--batch-sizes 1 8] [--repeats 2] [--threads 2] [--out bench/results/export_speed.json]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import transformers
from common import write_result

from tabvlm.generate import generate, image_prompt
from tabvlm.hf.export import export_hf
from tabvlm.model.config import load_model_config
from tabvlm.model.vlm import TabVLM
from tabvlm.tokenizer import load_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/base.yaml")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/results/export_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # random weights make subnormals, ~10x slower on x86
    torch.manual_seed(0)
    model = TabVLM(load_model_config(args.config)).eval()
    tok = load_tokenizer()
    with tempfile.TemporaryDirectory() as folder:
        export_hf(model, tok, folder)
        hf = transformers.AutoModelForImageTextToText.from_pretrained(folder).eval()
    size = model.config.vision.image_size
    ids = torch.tensor([tok.encode(image_prompt(tok, model.image_tokens))])  # (1, T)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for batch in args.batch_sizes:
        px = torch.rand(batch, 3, size, size, generator=gen) * 2 - 1  # (B, 3, S, S)
        prompt = ids.expand(batch, -1)
        times: dict[str, list[float]] = {"tabvlm": [], "transformers": []}
        for _ in range(args.repeats):  # interleaved, so other load hits both alike
            t = time.perf_counter()
            ours = generate(model, tok, px, prompt.tolist(), max_new_tokens=args.tokens, constrain=False,
                            ignore_eos=True).tokens  # fmt: skip
            times["tabvlm"].append(time.perf_counter() - t)
            t = time.perf_counter()
            with torch.no_grad():
                out = hf.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), pixel_values=px,
                                  max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False)  # fmt: skip
            times["transformers"].append(time.perf_counter() - t)
            assert out[:, ids.shape[1] :].tolist() == ours, "exported model generated other tokens"
        for engine, runs in times.items():
            med = statistics.median(runs)
            rows.append({
                "engine": engine, "batch": batch, "median_s": round(med, 3),
                "tokens_per_s": round(batch * args.tokens / med, 1), "all_s": [round(x, 3) for x in runs],
            })  # fmt: skip
    print(f"{'engine':>13} {'batch':>5} {'tokens/s':>9} {'median s':>9}")
    for r in rows:
        print(f"{r['engine']:>13} {r['batch']:>5} {r['tokens_per_s']:>9.1f} {r['median_s']:>9.2f}")
    write_result(args.out, {
        "threads": args.threads, "transformers": transformers.__version__,
        "config": args.config, "tokens": args.tokens, "image_tokens": model.image_tokens, "rows": rows,
    })  # fmt: skip


if __name__ == "__main__":
    main()
