"""Recognise table images into HTML, Markdown, CSV or JSON.

Run as: tabvlm predict --model MODEL_DIR [--format html|md|csv|json] [--out FILE_OR_DIR]
                       [--batch-size N] [--max-new-tokens N] [--no-constrain] IMAGES_OR_DIRS...

Directories expand to their images (png, jpg, jpeg, webp, bmp, tif, tiff; sorted). Without --out
the results go to stdout; `--out DIR` writes one file per image (stem + the format's extension);
`--out results.jsonl` writes one `{"id", "image", "html", "seconds"}` line per image.
Unreadable images are reported on stderr and skipped; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tabvlm.commands import add_dtype_option
from tabvlm.errors import ConfigError, DataError

if TYPE_CHECKING:
    from tabvlm.recognizer import Prediction

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
EXTENSIONS = {"html": ".html", "md": ".md", "csv": ".csv", "json": ".json"}


def expand_inputs(items: list[str]) -> list[Path]:
    """Files as given, directories replaced by their images (sorted by name)."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(p)
    return out


def render(pred: Prediction, fmt: str, image: Path) -> str:
    """One prediction in the chosen output format."""
    if fmt == "html":
        return pred.html or pred.raw
    if fmt == "md":
        return pred.markdown
    if fmt == "csv":
        return pred.csv
    return json.dumps(record(pred, image), ensure_ascii=False)


def record(pred: Prediction, image: Path) -> dict:
    """The jsonl/json record of one prediction."""
    return {
        "id": image.stem,
        "image": str(image),
        "html": pred.html or pred.raw,
        "seconds": round(pred.seconds, 4),
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="tabvlm predict", description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", metavar="IMAGES_OR_DIRS")
    ap.add_argument("--model", required=True, help="model folder (or a config .yaml: random weights)")
    ap.add_argument("--format", choices=sorted(EXTENSIONS), default="html")
    ap.add_argument("--out", help="a directory (one file per image) or a .jsonl file")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=2048)
    ap.add_argument("--no-constrain", action="store_true", help="free decoding (no table grammar)")
    ap.add_argument("--device", default="cpu")
    add_dtype_option(ap)
    args = ap.parse_args(argv)
    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise ConfigError("--batch-size and --max-new-tokens must be >= 1")

    import torch
    from tqdm import tqdm

    from tabvlm.image import load_image
    from tabvlm.recognizer import TableRecognizer

    torch.set_flush_denormal(True)  # subnormal activations make CPU math ~10x slower; no accuracy cost

    paths = expand_inputs(args.inputs)
    if not paths:
        print("tabvlm predict: no images found", file=sys.stderr)
        return 1
    rec = TableRecognizer.from_pretrained(
        args.model,
        device=args.device,
        dtype=args.dtype,
        max_new_tokens=args.max_new_tokens,
        constrain=not args.no_constrain,
    )
    out = Path(args.out) if args.out else None
    jsonl = out is not None and out.suffix == ".jsonl"
    if out is not None and not jsonl:
        out.mkdir(parents=True, exist_ok=True)
    sink = open(out, "w", encoding="utf-8") if jsonl else None  # closed in the finally below
    failed = 0
    try:
        bar = tqdm(total=len(paths), unit="img", disable=len(paths) < 2, file=sys.stderr)
        for start in range(0, len(paths), args.batch_size):
            batch, images = [], []
            chunk = paths[start : start + args.batch_size]
            for p in chunk:
                try:
                    images.append(load_image(p))
                    batch.append(p)
                except DataError as e:
                    failed += 1
                    bar.write(f"tabvlm predict: skipped {p}: {e.reason}", file=sys.stderr)
            preds = rec.predict_many(images, batch_size=args.batch_size) if images else []
            for p, pred in zip(batch, preds, strict=True):
                if sink is not None:
                    sink.write(json.dumps(record(pred, p), ensure_ascii=False) + "\n")
                elif out is not None:
                    (out / (p.stem + EXTENSIONS[args.format])).write_text(
                        render(pred, args.format, p) + "\n", encoding="utf-8"
                    )
                else:
                    print(render(pred, args.format, p), flush=True)
            bar.update(len(chunk))
        bar.close()
    finally:
        if sink is not None:
            sink.close()
    return 1 if failed else 0
