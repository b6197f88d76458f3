"""Draw what a model read beside what it was shown: a contact sheet of chosen predictions.

Run as: python scripts/failure_sheet.py --gt GT.jsonl --pred PRED.jsonl --ids ID [ID ...]
                                        --out docs/failures.png [--width 1400] [--viz-dir DIR]

Each row: the input image (left; with `--viz-dir`, the overlay `tabvlm predict --viz DIR` drew
of it: the reader's words and the cells the layout model put them into) and the predicted HTML drawn by tabvlm's own renderer in one
plain ruled style (right), with the id and the sample's TEDS / TEDS-struct above. The drawing
shows the table the model wrote (its cells, spans and text), not the layout of the original.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image, ImageDraw

from tabvlm.data.fonts import discover_fonts
from tabvlm.data.render import RenderConfig, render
from tabvlm.errors import TableError
from tabvlm.evaluate import load_gt, load_predictions, score_sample
from tabvlm.tables.html import parse_html

PLAIN = RenderConfig(
    styles=["grid"], font_size=(14, 14), width=(600, 600), margin=(4, 4), cjk_font_rate=0.0,
    bold_header_rate=0.0, shade_header_rate=0.0, tint_rate=0.0, rotate_rate=0.0, downscale_rate=0.0,
    blur_rate=0.0, noise_rate=0.0, jpeg_rate=0.0,
)  # fmt: skip


def fit(img: Image.Image, width: int, max_height: int) -> Image.Image:
    scale = min(width / img.width, max_height / img.height, 1.0)
    return img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gt", required=True)
    ap.add_argument("--pred", required=True)
    ap.add_argument("--ids", nargs="+", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument(
        "--viz-dir", type=Path, help="draw the overlays of `tabvlm predict --viz DIR` on the left"
    )
    args = ap.parse_args()

    items = {it.id: it for it in load_gt(args.gt)}
    preds = load_predictions(args.pred)
    fonts = discover_fonts(need_cjk=True)
    half, rows = args.width // 2 - 15, []
    for key in args.ids:
        it = items[key]
        html = preds.get(key, "")
        scores = score_sample(html, it.html)
        left = args.viz_dir / f"{it.image.stem}.png" if args.viz_dir else it.image
        shown = fit(Image.open(left).convert("RGB"), half, 420)
        try:
            drawn = fit(render(parse_html(html), random.Random(0), PLAIN, fonts).image, half, 420)
        except TableError:
            drawn = Image.new("RGB", (half, 40), "white")
        h = max(shown.height, drawn.height) + 28
        row = Image.new("RGB", (args.width, h), "white")
        ImageDraw.Draw(row).text(
            (6, 6),
            f"{key}   TEDS {scores['teds']:.3f}   TEDS-struct {scores['teds_struct']:.3f}",
            fill="black",
        )
        row.paste(shown, (0, 26))
        row.paste(drawn, (half + 30, 26))
        rows.append(row)
    sheet = Image.new("RGB", (args.width, sum(r.height + 8 for r in rows)), (200, 200, 200))
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height + 8
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
