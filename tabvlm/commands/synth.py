"""Generate synthetic table images and their ground-truth HTML.

Run as: tabvlm synth --n 1000 --seed 1234 --out data/synth-test [--preview sheet.png] [--workers 4]
                     [--renderer pil|browser] [--shard-size K]
                     [--config run.yaml] [synth.zh_rate=0.3 render.styles=[grid,booktabs] ...]

Writes OUT/images/NNNNNN.png, OUT/gt.jsonl (one canonical record a line, in index order) and
OUT/synth.yaml (the settings used). Sample i depends on (seed, i) only, so any number of workers
writes the same files. The standard test set is `--n 1000 --seed 1234 --out data/synth-test`.

`--renderer browser` draws with headless Chromium in the style families of
`tabvlm.data.families` (`browser.families` weights them); `--shard-size K` writes OUT/shard-NNNNNN.tar
(webdataset layout, K samples each, `tabvlm.data.shards`) instead of images and gt.jsonl, each
written under a .tmp name and renamed when whole; a rerun into the same OUT keeps the whole shards
and writes only the missing ones (it refuses when OUT/shards.json names other settings).
Training streams shards with `data.shards=[OUT/shard-*.tar] data.shard_ratio=0.3`.
A config's `variants` (as training's `data.variants`: shares of the samples drawn with other
synth/render settings) are drawn per sample the same way, so sample i matches training's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from tabvlm import config as config_io
from tabvlm.data.browser import BrowserConfig, BrowserRenderer, check_chromium, make_browser_sample
from tabvlm.data.fonts import FontSet, discover_fonts
from tabvlm.data.render import (
    RenderConfig,
    Variant,
    draw_variant,
    make_sample,
    resolve_variants,
    variants_need_cjk,
)
from tabvlm.data.shards import shard_path, write_shard
from tabvlm.data.synth import SynthConfig, has_cjk
from tabvlm.errors import ConfigError
from tabvlm.read.truth import truth_words
from tabvlm.tables.html import to_html
from tabvlm.tasks import user_prompt

log = logging.getLogger(__name__)


@dataclass
class SynthRunConfig:
    """What a synth run is made of: the grid generator's and the renderer's settings."""

    synth: SynthConfig = field(default_factory=SynthConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    browser: BrowserConfig = field(default_factory=BrowserConfig)  # --renderer browser only
    # Shares of the samples drawn with other settings, as training's `data.variants`
    variants: list[Variant] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.choices = resolve_variants(self.synth, self.render, self.variants)

    @property
    def needs_cjk(self) -> bool:
        """Whether any sample can hold Chinese text."""
        return variants_need_cjk(self.choices)


class _Maker:
    """Sample i of a run with either renderer (one browser for the whole worker job)."""

    def __init__(self, cfg: SynthRunConfig, renderer: str):
        self.cfg = cfg
        need_cjk = cfg.needs_cjk
        self.fonts: FontSet = discover_fonts(
            cfg.render.font_dirs, cfg.render.use_system_fonts, need_cjk=need_cjk
        )
        self.browser = BrowserRenderer(cfg.browser, self.fonts, need_cjk) if renderer == "browser" else None

    def __call__(self, seed: int, i: int):
        synth, render = draw_variant(seed, i, self.cfg.choices)
        if self.browser is not None:
            return make_browser_sample(seed, i, synth, self.browser)
        return make_sample(seed, i, synth, render, self.fonts)

    def close(self) -> None:
        if self.browser is not None:
            self.browser.close()


def _write_samples(job: tuple[int, list[int], SynthRunConfig, str, str]) -> list[dict[str, Any]]:
    """Worker: make, save and describe the samples `indices`; returns their records in order."""
    seed, indices, cfg, out, renderer = job
    maker = _Maker(cfg, renderer)
    records = []
    try:
        samples = [(i, *maker(seed, i)) for i in indices]
    finally:
        maker.close()
    for i, table, rendered in samples:
        name = f"{i:06d}"
        rendered.image.save(Path(out) / "images" / f"{name}.png", compress_level=3)
        html = to_html(table)
        records.append(
            {
                "image": f"images/{name}.png",
                "conversations": [
                    {"role": "user", "content": user_prompt("html")},
                    {"role": "assistant", "content": html},
                ],
                "meta": {
                    "id": name,
                    "lang": "zh" if has_cjk(html) else "en",
                    "span": table.has_span,
                    "blank": table.has_blank,
                    "style": rendered.style,
                    "seed": seed,
                    "index": i,
                    # the renderer's true words (tabvlm.read.truth), for `tabvlm eval --reader truth`
                    "words": [
                        [w.text, *(round(v, 1) for v in w.box)] for w in truth_words(rendered, table)[0]
                    ],
                },
            }
        )
    return records


def _check_start(cfg: SynthRunConfig, renderer: str) -> None:
    """Fail early (fonts or browser missing) in the parent rather than in every worker."""
    discover_fonts(cfg.render.font_dirs, cfg.render.use_system_fonts, need_cjk=cfg.needs_cjk)
    if renderer == "browser":
        check_chromium(cfg.browser.chromium)


def _write_shard(job: tuple[int, int, list[int], SynthRunConfig, str, str]) -> int:
    """Worker: render samples `indices` into shard `number` (atomically); returns the count."""
    seed, number, indices, cfg, out, renderer = job
    maker = _Maker(cfg, renderer)
    try:
        return write_shard(shard_path(Path(out), number), ((*maker(seed, i), seed, i) for i in indices))
    finally:
        maker.close()


def run_shards(
    n: int,
    seed: int,
    out: Path,
    cfg: SynthRunConfig,
    shard_size: int,
    renderer: str = "browser",
    workers: int = 1,
) -> tuple[int, int]:
    """Write samples 0..n-1 into shards of `shard_size` in `out`, skipping shards already whole;
    returns (shards written now, shards there in all)."""
    if n < 1 or shard_size < 1:
        raise ConfigError(f"--n and --shard-size: expected >= 1, found {n} and {shard_size}")
    _check_start(cfg, renderer)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "seed": seed,
        "renderer": renderer,
        "shard_size": shard_size,
        "config": config_io.to_dict(cfg),
    }
    mpath = out / "shards.json"
    if mpath.exists():
        old = json.loads(mpath.read_text(encoding="utf-8"))
        if {k: v for k, v in old.items() if k != "n"} != json.loads(json.dumps(manifest)):
            raise ConfigError(f"{out} holds shards of other settings ({mpath}); choose another --out")
    manifest["n"] = max(n, json.loads(mpath.read_text(encoding="utf-8")).get("n", 0) if mpath.exists() else 0)
    tmp = out / "shards.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(mpath)
    numbers = range(-(-n // shard_size))
    jobs = [
        (seed, k, list(range(k * shard_size, min(n, (k + 1) * shard_size))), cfg, str(out), renderer)
        for k in numbers
        if not shard_path(out, k).exists()
    ]
    if workers <= 1:
        for job in jobs:
            _write_shard(job)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_write_shard, jobs))
    return len(jobs), len(numbers)


def contact_sheet(paths: list[Path], tile: int = 360, cols: int = 4) -> Image.Image:
    """Thumbnails of `paths` (aspect kept) on a grid of `tile`-px squares, names underneath."""
    rows = max(1, -(-len(paths) // cols))
    sheet = Image.new("RGB", (cols * tile, rows * (tile + 16)), (128, 128, 128))
    draw = ImageDraw.Draw(sheet)
    for k, path in enumerate(paths):
        with Image.open(path) as im:
            thumb = im.convert("RGB")
            thumb.thumbnail((tile - 6, tile - 6), Image.Resampling.LANCZOS)
        x, y = (k % cols) * tile, (k // cols) * (tile + 16)
        sheet.paste(thumb, (x + 3, y + 3))
        draw.text((x + 4, y + tile), path.name, fill=(255, 255, 255))
    return sheet


def run(
    n: int, seed: int, out: Path, cfg: SynthRunConfig, workers: int = 1, renderer: str = "pil"
) -> list[dict[str, Any]]:
    """Write `n` samples, gt.jsonl and synth.yaml into `out`; returns the records."""
    if n < 1:
        raise ConfigError(f"--n: expected >= 1, found {n}")
    _check_start(cfg, renderer)
    (out / "images").mkdir(parents=True, exist_ok=True)
    config_io.save(cfg, out / "synth.yaml")
    chunk = max(1, min(64, n // (4 * max(1, workers)) or 1))
    jobs = [(seed, list(range(s, min(n, s + chunk))), cfg, str(out), renderer) for s in range(0, n, chunk)]
    if workers <= 1:
        parts = [_write_samples(job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(_write_samples, jobs))
    records = [r for part in parts for r in part]
    tmp = out / "gt.jsonl.tmp"
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(out / "gt.jsonl")
    return records


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tabvlm synth", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, required=True, help="number of samples")
    parser.add_argument("--seed", type=int, default=0, help="run seed: sample i depends on (seed, i) only")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--preview", type=Path, help="also write a contact sheet of the first 16 images")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.add_argument("--config", type=Path, help="YAML with synth:, render: and browser: sections")
    parser.add_argument(
        "--renderer", choices=["pil", "browser"], default="pil", help="PIL drawing or headless Chromium"
    )
    parser.add_argument(
        "--shard-size", type=int, default=0, help="write tar shards of K samples (webdataset)"
    )
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. synth.zh_rate=0.3")
    args = parser.parse_args(argv)

    cfg = config_io.load(SynthRunConfig, args.config, args.overrides)
    workers = max(1, min(args.workers, os.cpu_count() or 1, args.n))
    if args.shard_size:
        if args.preview:
            raise ConfigError("--preview works with images, not with --shard-size")
        written, total = run_shards(args.n, args.seed, args.out, cfg, args.shard_size, args.renderer, workers)
        print(
            f"wrote {written} shards to {args.out} ({total - written} already whole; {args.n} samples in all)"
        )
        return 0
    records = run(args.n, args.seed, args.out, cfg, workers, args.renderer)
    zh = sum(r["meta"]["lang"] == "zh" for r in records)
    span = sum(r["meta"]["span"] for r in records)
    blank = sum(r["meta"]["blank"] for r in records)
    print(f"wrote {len(records)} samples to {args.out} (zh {zh}, span {span}, blank {blank})")
    if args.preview:
        sheet = contact_sheet([args.out / r["image"] for r in records[:16]])
        args.preview.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(args.preview, optimize=True)
        print(f"preview: {args.preview}")
    return 0
