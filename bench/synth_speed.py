"""Synthetic data speed: samples per second on one core, stage by stage.

Run as: .venv/bin/python bench/synth_speed.py [--n 300] [--warmup 200] [--size 512]

Stages, timed cumulatively in CPU seconds of one process (time.process_time, torch on one thread):
on a shared machine wall time would count the other jobs too. generate (synthesize a grid), render (draw
it, degradations included), preprocess (`tabvlm.image.preprocess_image` to SIZE px, the
image size of configs/base), tokenise (`tabvlm.tokenizer.load_tokenizer()` on the record's HTML).
Stages whose modules are missing are reported as such. Two render settings are measured: the
default `RenderConfig` (images 300-1600 px wide, what `tabvlm synth` writes) and a "stream" one
that draws near the model's input size (the infinite training stream's choice). The first
`--warmup` samples fill the glyph caches and are not timed. Prints a table and writes
bench/results/synth_speed.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import write_result

from tabvlm.data.fonts import discover_fonts
from tabvlm.data.render import RenderConfig, make_sample, render, sample_rngs
from tabvlm.data.synth import SynthConfig, synthesize
from tabvlm.tables.html import to_html

RESULTS = Path(__file__).parent / "results" / "synth_speed.json"
STREAM = {"width": (256, 1024), "max_height": 1024, "font_size": (10, 20), "margin": (4, 24)}


def _optional_stages():
    """(preprocess_image or None, tokenizer or None), depending on what the package has now."""
    try:
        from tabvlm.image import preprocess_image
    except ImportError:
        preprocess_image = None
    try:
        from tabvlm.tokenizer import load_tokenizer

        tokenizer = load_tokenizer()
    except (ImportError, Exception):  # the shipped tokenizer file may not be built yet
        tokenizer = None
    return preprocess_image, tokenizer


def measure(name: str, rcfg: RenderConfig, n: int, warmup: int, size: int) -> dict:
    """Per-stage cumulative samples/s of `n` samples (after `warmup` untimed ones)."""
    scfg = SynthConfig()
    fonts = discover_fonts(rcfg.font_dirs, rcfg.use_system_fonts, need_cjk=True)
    preprocess_image, tokenizer = _optional_stages()
    torch.set_num_threads(1)  # per core: CPU time of one thread
    for i in range(warmup):
        make_sample(10_000_000, i, scfg, rcfg, fonts)
    t = {"generate": 0.0, "render": 0.0, "preprocess": 0.0, "tokenise": 0.0}
    pixels = 0
    for i in range(n):
        grid_rng, draw_rng = sample_rngs(0, i)
        t0 = time.process_time()
        table = synthesize(grid_rng, scfg)
        t1 = time.process_time()
        img = render(table, draw_rng, rcfg, fonts).image
        t2 = time.process_time()
        pixels += img.width * img.height
        if preprocess_image is not None:
            preprocess_image(img, size)
        t3 = time.process_time()
        if tokenizer is not None:
            tokenizer.encode(to_html(table))
        t4 = time.process_time()
        t["generate"] += t1 - t0
        t["render"] += t2 - t1
        t["preprocess"] += t3 - t2
        t["tokenise"] += t4 - t3
    row = {"setting": name, "n": n, "mean_megapixels": round(pixels / n / 1e6, 3)}
    total = 0.0
    for stage, secs in t.items():
        missing = (stage == "preprocess" and preprocess_image is None) or (
            stage == "tokenise" and tokenizer is None
        )
        total += secs
        row[f"ms_{stage}"] = None if missing else round(1000 * secs / n, 2)
        row[f"per_s_through_{stage}"] = None if missing else round(n / total, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--size", type=int, default=512, help="model input size (configs/base: 512)")
    args = parser.parse_args()
    rows = [
        measure("default", RenderConfig(), args.n, args.warmup, args.size),
        measure("stream", RenderConfig(**STREAM), args.n, args.warmup, args.size),
    ]
    stages = ["generate", "render", "preprocess", "tokenise"]
    print(
        f"{'setting':<9} {'Mpx':>5} "
        + " ".join(f"{s + ' ms':>14}" for s in stages)
        + "   samples/s (cumulative)"
    )
    for r in rows:
        ms = " ".join(f"{'n/a' if r[f'ms_{s}'] is None else r[f'ms_{s}']:>14}" for s in stages)
        rate = " / ".join(
            "n/a" if r[f"per_s_through_{s}"] is None else str(r[f"per_s_through_{s}"]) for s in stages
        )
        print(f"{r['setting']:<9} {r['mean_megapixels']:>5} {ms}   {rate}")
    write_result(RESULTS, {"image_size": args.size, "stream_render": STREAM, "rows": rows})


if __name__ == "__main__":
    main()
