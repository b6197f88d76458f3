"""Generate synthetic table images and their ground-truth HTML.

Run as: tabvlm synth --n 1000 --seed 1234 --out data/synth-test [--preview sheet.png] [--workers 4]
                     [--config run.yaml] [synth.zh_rate=0.3 render.styles=[grid,booktabs] ...]

Writes OUT/images/NNNNNN.png, OUT/gt.jsonl (one canonical record a line, in index order) and
OUT/synth.yaml (the settings used). Sample i depends on (seed, i) only, so any number of workers
writes the same files. The standard test set is `--n 1000 --seed 1234 --out data/synth-test`.
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
from tabvlm.data.fonts import discover_fonts
from tabvlm.data.render import RenderConfig, make_sample
from tabvlm.data.synth import SynthConfig, has_cjk
from tabvlm.errors import ConfigError
from tabvlm.tables.html import to_html
from tabvlm.tasks import user_prompt

log = logging.getLogger(__name__)


@dataclass
class SynthRunConfig:
    """What a synth run is made of: the grid generator's and the renderer's settings."""

    synth: SynthConfig = field(default_factory=SynthConfig)
    render: RenderConfig = field(default_factory=RenderConfig)


def _write_samples(job: tuple[int, list[int], SynthRunConfig, str]) -> list[dict[str, Any]]:
    """Worker: make, save and describe the samples `indices`; returns their records in order."""
    seed, indices, cfg, out = job
    fonts = discover_fonts(cfg.render.font_dirs, cfg.render.use_system_fonts, need_cjk=cfg.synth.zh_rate > 0)
    records = []
    for i in indices:
        table, rendered = make_sample(seed, i, cfg.synth, cfg.render, fonts)
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
                },
            }
        )
    return records


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


def run(n: int, seed: int, out: Path, cfg: SynthRunConfig, workers: int = 1) -> list[dict[str, Any]]:
    """Write `n` samples, gt.jsonl and synth.yaml into `out`; returns the records."""
    if n < 1:
        raise ConfigError(f"--n: expected >= 1, found {n}")
    # Fail early (fonts missing) in the parent rather than in every worker.
    discover_fonts(cfg.render.font_dirs, cfg.render.use_system_fonts, need_cjk=cfg.synth.zh_rate > 0)
    (out / "images").mkdir(parents=True, exist_ok=True)
    config_io.save(cfg, out / "synth.yaml")
    chunk = max(1, min(64, n // (4 * max(1, workers)) or 1))
    jobs = [(seed, list(range(s, min(n, s + chunk))), cfg, str(out)) for s in range(0, n, chunk)]
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
    parser.add_argument("--config", type=Path, help="YAML with synth: and render: sections")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. synth.zh_rate=0.3")
    args = parser.parse_args(argv)

    cfg = config_io.load(SynthRunConfig, args.config, args.overrides)
    workers = max(1, min(args.workers, os.cpu_count() or 1, args.n))
    records = run(args.n, args.seed, args.out, cfg, workers)
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
