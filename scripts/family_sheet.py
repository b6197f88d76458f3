"""Contact sheet of the browser renderer's style families beside real tables.

Run as: .venv/bin/python scripts/family_sheet.py [--per-family 5] [--seed 0]
            [--real ../shared/realtables] [--out docs/browser-families.png]

One row a family (tables drawn with `make_browser_sample`, alternating zh and en), then one row of
real tables from the dev set (never trained on: for comparison only). Written as a palette PNG,
about 1200 px wide, so it stays small.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from PIL import Image, ImageDraw

from tabvlm.data.browser import BrowserConfig, BrowserRenderer, make_browser_sample
from tabvlm.data.families import FAMILIES
from tabvlm.data.fonts import discover_fonts
from tabvlm.data.synth import SynthConfig

REAL = ["icdar13-eu-005-t1r1.png", "icdar13-us-004-t1r1.png", "ptn-ex-PMC2753619_002_00.png",
        "ptn-ex-PMC4682394_003_00.png", "odb-notes_1ba14cb325bc448f7201b20502ecf2b5_15-t0.png"]  # fmt: skip


def sheet(rows: list[tuple[str, list[Image.Image]]], tile: int) -> Image.Image:
    """Rows of thumbnails (aspect kept) in `tile`-px squares, each row labelled above."""
    cols = max(len(images) for _, images in rows)
    label_h = 16
    out = Image.new("RGB", (cols * tile, len(rows) * (tile + label_h)), (150, 150, 150))
    draw = ImageDraw.Draw(out)
    for r, (label, images) in enumerate(rows):
        y = r * (tile + label_h)
        draw.text((4, y + 2), label, fill=(255, 255, 255))
        for c, im in enumerate(images):
            thumb = im.convert("RGB")
            thumb.thumbnail((tile - 6, tile - 6), Image.Resampling.LANCZOS)
            out.paste(thumb, (c * tile + 3, y + label_h + 3))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-family", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real", type=Path, default=Path("../shared/realtables"))
    parser.add_argument("--out", type=Path, default=Path("docs/browser-families.png"))
    parser.add_argument("--tile", type=int, default=240)
    args = parser.parse_args()

    fonts = discover_fonts(need_cjk=True)
    rows = []
    with BrowserRenderer(BrowserConfig(), fonts) as renderer:
        for f, family in enumerate(FAMILIES):
            renderer.cfg = dataclasses.replace(renderer.cfg, families={family: 1.0})
            images = []
            for k in range(args.per_family):
                synth = SynthConfig(
                    zh_rate=float(k % 2 == 0), span_rate=0.6, blank_rate=0.5, rows=(3, 24), cols=(2, 8)
                )
                _, rendered = make_browser_sample(args.seed, 100 * f + k, synth, renderer)
                images.append(rendered.image)
            rows.append((f"{family} (browser)", images))
    real = [Image.open(args.real / name) for name in REAL if (args.real / name).is_file()]
    if real:
        rows.append(("real tables (../shared/realtables, dev set: not trained on)", real))
    img = sheet(rows, args.tile).quantize(colors=96, method=Image.Quantize.MEDIANCUT)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    img.save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB, {img.width}x{img.height})")


if __name__ == "__main__":
    main()
