"""Recognise table images into HTML, Markdown, CSV or JSON.

Run as: tabvlm predict [--model MODEL_DIR] [--format html|md|csv|json] [--out FILE_OR_DIR]
                       [--batch-size N] [--max-new-tokens N] [--no-constrain] IMAGES_OR_DIRS...

Directories expand to their images (png, jpg, jpeg, webp, bmp, tif, tiff; sorted); a directory
with none of its own expands to the images of its subfolders, one level down (so the folder
`tabvlm synth` writes, whose images are in DIR/images/, works as it is). Without --out the
results go to stdout; `--out DIR` writes one file per image (stem + the format's extension; when
two images share a stem, their file names keep the image's suffix, then a counter: `t.png.html`,
`t.jpg.html`, `t.png-2.html`; each renaming is reported on stderr); `--out results.jsonl` writes
one `{"id", "image", "html", "seconds", "truncated"}` line per image, all at once at the end
(a temporary file beside it is renamed over it: an interrupted run leaves no half file). The
folders of --out are created, before the model loads.

An image that cannot be read (missing, corrupt, a decompression bomb) or whose recognition fails
is reported on stderr and skipped; the others are still predicted and written, and the exit code
is then 1. An output cut short (--max-new-tokens, or the model's positions) has "truncated": true
in the jsonl and a note on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import IO, TYPE_CHECKING

from tabvlm.commands import add_dtype_option
from tabvlm.errors import ConfigError, DataError

if TYPE_CHECKING:
    from PIL import Image

    from tabvlm.recognizer import Prediction, TableRecognizer

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
EXTENSIONS = {"html": ".html", "md": ".md", "csv": ".csv", "json": ".json"}


def _images_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def expand_inputs(items: list[str]) -> list[Path]:
    """Files as given; a directory becomes its images (sorted by name), or, when it has none, the
    images of its immediate subfolders (sorted by subfolder, then name)."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = _images_in(p)
            if not found:
                found = [f for sub in sorted(p.iterdir()) if sub.is_dir() for f in _images_in(sub)]
            out += found
        else:
            out.append(p)
    return out


def output_names(paths: list[Path], ext: str) -> tuple[list[str], list[str]]:
    """(a distinct file name per image, a note for each name that is not plain stem + ext).

    A stem held by one image gives `stem + ext`; images that share a stem keep their suffix
    (`t.png.html`, `t.jpg.html`), and names still taken get `-2`, `-3`, ... in input order."""
    stems = Counter(p.stem for p in paths)
    used: set[str] = set()
    names, notes = [], []
    for p in paths:
        base = p.stem if stems[p.stem] == 1 else p.name
        name, k = base + ext, 1
        while name in used:
            k += 1
            name = f"{base}-{k}{ext}"
        used.add(name)
        names.append(name)
        if name != p.stem + ext:
            notes.append(f"{p} -> {name} (another image is also named {p.stem!r})")
    return names, notes


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
        "truncated": pred.truncated,
    }


def predict_each(rec: TableRecognizer, images: list[Image.Image]) -> list[Prediction | Exception]:
    """One batch, and when it fails, each image alone: a failure belongs to its image only."""
    try:
        return list(rec.predict_many(images, batch_size=len(images)))
    except Exception as e:  # noqa: BLE001 (any failure: find the image it belongs to)
        if len(images) == 1:
            return [e]
    return [predict_each(rec, [im])[0] for im in images]


def open_output(out: Path | None) -> tuple[IO[str] | None, Path | None]:
    """Create --out's folders and, for a .jsonl, its temporary file beside it, before any model
    loads: a path that cannot be written fails now, in one line."""
    if out is None:
        return None, None
    folder = out.parent if out.suffix == ".jsonl" else out
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if out.suffix != ".jsonl":
            return None, None
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as e:
        raise DataError(f"cannot write the output here ({e.strerror or e})", str(out)) from e
    return os.fdopen(fd, "w", encoding="utf-8"), Path(tmp)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="tabvlm predict", description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", metavar="IMAGES_OR_DIRS")
    ap.add_argument(
        "--model", help="model folder (or a config .yaml: random weights); default: the shipped model"
    )
    ap.add_argument("--format", choices=sorted(EXTENSIONS), default="html")
    ap.add_argument("--out", help="a directory (one file per image) or a .jsonl file; folders are created")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--max-new-tokens", type=int, default=2048, help="capped at what the model's positions hold"
    )
    ap.add_argument("--no-constrain", action="store_true", help="free decoding (no table grammar)")
    ap.add_argument("--device", default="cpu")
    add_dtype_option(ap)
    args = ap.parse_args(argv)
    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise ConfigError("--batch-size and --max-new-tokens must be >= 1")

    paths = expand_inputs(args.inputs)
    if not paths:
        print("tabvlm predict: no images found", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else None
    sink, tmp = open_output(out)  # before the model: a bad --out costs no minutes of loading
    try:
        failed = _run(args, paths, out, sink)
        if sink is not None and tmp is not None and out is not None:
            sink.close()
            os.replace(tmp, out)
    finally:
        if sink is not None and tmp is not None:
            sink.close()
            tmp.unlink(missing_ok=True)
    return 1 if failed else 0


def _run(args: argparse.Namespace, paths: list[Path], out: Path | None, sink: IO[str] | None) -> int:
    """Predict every image and write its result; returns how many failed."""
    import torch
    from tqdm import tqdm

    from tabvlm.image import load_image
    from tabvlm.recognizer import TableRecognizer

    torch.set_flush_denormal(True)  # subnormal activations make CPU math ~10x slower; no accuracy cost

    rec = TableRecognizer.from_pretrained(
        args.model,
        device=args.device,
        dtype=args.dtype,
        max_new_tokens=args.max_new_tokens,
        constrain=not args.no_constrain,
    )
    names: list[str] = []
    if out is not None and sink is None:
        names, notes = output_names(paths, EXTENSIONS[args.format])
        for note in notes:
            print(f"tabvlm predict: {note}", file=sys.stderr)
    failed = 0
    bar = tqdm(total=len(paths), unit="img", disable=len(paths) < 2, file=sys.stderr)
    for start in range(0, len(paths), args.batch_size):
        batch, images = [], []
        for i in range(start, min(start + args.batch_size, len(paths))):
            try:
                images.append(load_image(paths[i]))
                batch.append(i)
            except DataError as e:
                failed += 1
                bar.write(f"tabvlm predict: skipped {paths[i]}: {e.reason}", file=sys.stderr)
        results = predict_each(rec, images) if images else []
        for i, pred in zip(batch, results, strict=True):
            p = paths[i]
            if isinstance(pred, Exception):
                failed += 1
                bar.write(f"tabvlm predict: failed {p}: {type(pred).__name__}: {pred}", file=sys.stderr)
                continue
            if pred.truncated:
                bar.write(
                    f"tabvlm predict: {p}: output cut short at {pred.tokens} tokens "
                    "(--max-new-tokens or the model's positions)",
                    file=sys.stderr,
                )
            if sink is not None:
                sink.write(json.dumps(record(pred, p), ensure_ascii=False) + "\n")
            elif out is not None:
                (out / names[i]).write_text(render(pred, args.format, p) + "\n", encoding="utf-8")
            else:
                print(render(pred, args.format, p), flush=True)
        bar.update(min(args.batch_size, len(paths) - start))
    bar.close()
    return failed
