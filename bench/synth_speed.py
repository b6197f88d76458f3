"""Synthetic data speed: samples per second on one core, stage by stage.

Run as: .venv/bin/python bench/synth_speed.py [--n 300] [--warmup 200] [--size 512]
        .venv/bin/python bench/synth_speed.py --renderer browser [--n 40] [--warmup 5]

Stages, timed cumulatively in CPU seconds of one process (time.process_time, torch on one thread):
on a shared machine wall time would count the other jobs too. generate (synthesize a grid), render (draw
it, degradations included), preprocess (`tabvlm.image.preprocess_image` to SIZE px, the
image size of configs/base), tokenise (`tabvlm.tokenizer.load_tokenizer()` on the record's HTML).
Stages whose modules are missing are reported as such. Two render settings are measured: the
default `RenderConfig` (images 300-1600 px wide, what `tabvlm synth` writes) and a "stream" one
that draws near the model's input size (the infinite training stream's choice). The first
`--warmup` samples fill the glyph caches and are not timed. Prints a table and writes
bench/results/synth_speed.json.

`--renderer browser`: the browser renderer (`tabvlm.data.browser`, headless Chromium, all style
families) and its shards. Rendering runs in Chromium's processes as much as in Python's, so its
CPU time is summed over this process and all its descendants (from /proc); samples per CPU
second = samples/s per core. Then the rendered samples are written to a shard and read back
(`ShardReader`: tar read + PNG and JSON decode), and read + preprocessed to SIZE px (what training
streams). Writes bench/results/synth_speed_browser.json.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from common import write_result

from tabvlm.data.fonts import discover_fonts
from tabvlm.data.render import RenderConfig, make_sample, render, sample_rngs
from tabvlm.data.synth import SynthConfig, synthesize
from tabvlm.tables.html import to_html

RESULTS = Path(__file__).parent / "results" / "synth_speed.json"
RESULTS_BROWSER = Path(__file__).parent / "results" / "synth_speed_browser.json"
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


def _tree_cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and every live descendant, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        cpu[pid] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [os.getpid()]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo += children.get(pid, [])
    return total


def measure_browser(n: int, warmup: int, size: int) -> dict:
    """Browser rendering (grid + page + measure + screenshot) and shard streaming, per CPU second."""
    import tempfile

    from tabvlm.data.browser import BrowserConfig, BrowserRenderer, make_browser_sample
    from tabvlm.data.shards import ShardReader, shard_path, write_shard
    from tabvlm.image import preprocess_image

    torch.set_num_threads(1)
    fonts = discover_fonts(need_cjk=True)
    scfg = SynthConfig()
    with BrowserRenderer(BrowserConfig(), fonts) as renderer:
        for i in range(warmup):
            make_browser_sample(10_000_000, i, scfg, renderer)
        cpu0, wall0 = _tree_cpu_seconds(), time.perf_counter()
        samples = [(*make_browser_sample(0, i, scfg, renderer), 0, i) for i in range(n)]
        cpu1, wall1 = _tree_cpu_seconds(), time.perf_counter()
    pixels = sum(r.image.width * r.image.height for _, r, _, _ in samples)
    families = sorted({r.style["family"] for _, r, _, _ in samples})
    with tempfile.TemporaryDirectory() as tmp:
        path = shard_path(Path(tmp), 0)
        t0 = time.process_time()
        write_shard(path, samples)
        t1 = time.process_time()
        reader = ShardReader([path])
        t2 = time.process_time()
        for k in range(len(reader)):
            reader[k]
        t3 = time.process_time()
        for k in range(len(reader)):
            preprocess_image(reader[k].rendered.image, size)
        t4 = time.process_time()
        shard_mb = path.stat().st_size / 1e6
    return {
        "n": n,
        "families": families,
        "mean_megapixels": round(pixels / n / 1e6, 3),
        "render_cpu_s_per_sample": round((cpu1 - cpu0) / n, 4),
        "render_per_cpu_s": round(n / (cpu1 - cpu0), 2),
        "render_wall_per_s": round(n / (wall1 - wall0), 2),
        "shard_mb_per_sample": round(shard_mb / n, 3),
        "write_shard_per_s": round(n / (t1 - t0), 1),
        "stream_read_per_s": round(n / (t3 - t2), 1),
        "stream_read_preprocess_per_s": round(n / (t4 - t3), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--size", type=int, default=512, help="model input size (configs/base: 512)")
    parser.add_argument("--renderer", choices=["pil", "browser"], default="pil")
    args = parser.parse_args()
    if args.renderer == "browser":
        row = measure_browser(args.n, args.warmup, args.size)
        for key, value in row.items():
            print(f"{key:<30} {value}")
        write_result(RESULTS_BROWSER, {"image_size": args.size, **row})
        return
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
