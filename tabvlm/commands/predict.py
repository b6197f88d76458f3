"""Recognise table images into HTML, Markdown, CSV or JSON.

Run as: tabvlm predict [--model MODEL_DIR] [--format html|md|csv|json] [--out FILE_OR_DIR]
                       [--batch-size N] [--max-new-tokens N] [--no-constrain]
                       [--task html|otsl|markdown|ocr|...] [--reader-threads N] [--viz DIR]
                       IMAGES_OR_DIRS...

`--viz DIR` also writes each image as a PNG with the reader's words and the cells they were put
into drawn over it (`tabvlm.overlay`; the layout model's output; an OCR-free model has no words).

`--task ocr` loads no model: the reader (PP-OCRv6, `tabvlm.read`) writes each image's text in
reading order, one line per visual line (`.txt` files with `--out DIR`; a "text" field in the
jsonl). `--reader-threads` sets its onnxruntime threads (default 1).

Directories expand to their images (png, jpg, jpeg, webp, bmp, tif, tiff; sorted); a directory
with none of its own expands to the images of its subfolders, one level down (so the folder
`tabvlm synth` writes, whose images are in DIR/images/, works as it is). Without --out the
results go to stdout, each table (of two or more images; html, md, csv) under a header line:
`== IMAGE | N tokens | model S s (1/B of a T s batch) | load L s` (a layout model adds
`| reader R s` after the tokens; `--task ocr`: `== IMAGE | reader R s`). `--out DIR` writes one
file per image (stem + the format's extension; when two images share a stem, their file names
keep the image's suffix, then a counter: `t.png.html`, `t.jpg.html`, `t.png-2.html`; each
renaming is reported on stderr); `--out results.jsonl` writes one `{"id", "image", "html",
"tokens", "image_seconds", "reader_seconds", "model_seconds", "batch_seconds", "batch_size",
"truncated"}` line per image (`--task ocr`: and "text"), all at once at the end (a temporary file
beside it is renamed over it: an interrupted run leaves no half file). The folders of --out are
created, before the model loads.

Times: images are decoded in batches, so the model's time is the batch's: `batch_seconds` is
the wall time of the batch an image was decoded in, `model_seconds` an equal share of it
(batch_seconds / batch_size). `image_seconds` (load + preprocessing), `reader_seconds` (the
reader's time: `--task ocr`, or a layout model's words; 0 otherwise) and `tokens` are the
image's own.

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
from tabvlm.tasks import TASKS

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


def render(pred: Prediction, fmt: str, image: Path, task: str = "html") -> str:
    """One prediction in the chosen output format (task ocr: its text, unless json)."""
    if task == "ocr" and fmt != "json":
        return pred.text
    if fmt == "html":
        return pred.html or pred.raw
    if fmt == "md":
        return pred.markdown
    if fmt == "csv":
        return pred.csv
    return json.dumps(record(pred, image, task), ensure_ascii=False)


def record(pred: Prediction, image: Path, task: str = "html") -> dict:
    """The jsonl/json record of one prediction (task ocr: with its "text", even when empty)."""
    return {
        "id": image.stem,
        "image": str(image),
        "html": pred.html or pred.raw,
        "tokens": pred.tokens,
        "image_seconds": round(pred.image_seconds, 4),
        "reader_seconds": round(pred.reader_seconds, 4),
        "model_seconds": round(pred.model_seconds, 4),
        "batch_seconds": round(pred.batch_seconds, 4),
        "batch_size": pred.batch_size,
        "truncated": pred.truncated,
    } | ({"html": "", "text": pred.text} if task == "ocr" else {})


def header(pred: Prediction, image: Path, task: str = "html") -> str:
    """The line above a table (task ocr: a text) on stdout: which image, and what its time was."""
    if task == "ocr":  # the reader alone: no model, no tokens
        return f"== {image} | reader {pred.reader_seconds:.2f} s"
    share = (
        f"1/{pred.batch_size} of a {pred.batch_seconds:.2f} s batch" if pred.batch_size > 1 else "batch of 1"
    )
    reader = f" | reader {pred.reader_seconds:.2f} s" if pred.reader_seconds else ""
    return (
        f"== {image} | {pred.tokens} tokens{reader} | model {pred.model_seconds:.2f} s ({share})"
        f" | load {pred.image_seconds:.3f} s"
    )


def predict_each(
    rec: TableRecognizer | _ReaderOnly, images: list[Image.Image], task: str = "html"
) -> list[Prediction | Exception]:
    """One batch, and when it fails, each image alone: a failure belongs to its image only."""
    try:
        return list(rec.predict_many(images, batch_size=len(images), task=task))
    except Exception as e:  # noqa: BLE001 (any failure: find the image it belongs to)
        if len(images) == 1:
            return [e]
    return [predict_each(rec, [im], task)[0] for im in images]


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
    ap.add_argument(
        "--task", choices=list(TASKS), default="html", help="ocr: the reader's text, no model loads"
    )
    ap.add_argument("--reader-threads", type=int, default=1, help="the reader's onnxruntime threads")
    ap.add_argument(
        "--viz", metavar="DIR", help="also write each image with its words and cells drawn over it (PNG)"
    )
    args = ap.parse_args(argv)
    if args.batch_size < 1 or args.max_new_tokens < 1 or args.reader_threads < 1:
        raise ConfigError("--batch-size, --max-new-tokens and --reader-threads must be >= 1")

    paths = expand_inputs(args.inputs)
    if not paths:
        print("tabvlm predict: no images found", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else None
    if args.viz:
        viz = Path(args.viz).resolve()
        if any(p.resolve().parent == viz for p in paths):
            raise ConfigError(
                f"--viz {args.viz}: holds input images, whose names the overlays would take; choose another folder"
            )
        viz.mkdir(parents=True, exist_ok=True)
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

    from tabvlm.image import load_image
    from tabvlm.progress import progress
    from tabvlm.recognizer import TableRecognizer

    torch.set_flush_denormal(True)  # subnormal activations make CPU math ~10x slower; no accuracy cost

    reader_options = {"threads": args.reader_threads}
    if args.task == "ocr":  # the reader alone: no model to load
        rec = _ReaderOnly(reader_options)
    else:
        rec = TableRecognizer.from_pretrained(
            args.model,
            device=args.device,
            dtype=args.dtype,
            max_new_tokens=args.max_new_tokens,
            constrain=not args.no_constrain,
            reader_options=reader_options,
        )
    names: list[str] = []
    pred_text = args.task == "ocr" and args.format != "json"  # files of plain text
    if out is not None and sink is None:
        names, notes = output_names(paths, ".txt" if pred_text else EXTENSIONS[args.format])
        for note in notes:
            print(f"tabvlm predict: {note}", file=sys.stderr)
    viz_names = output_names(paths, ".png")[0] if args.viz else []
    failed = 0
    headers = len(paths) > 1 and args.format != "json"  # a json line names its image itself
    bar = progress(total=len(paths), desc="predict", unit="img", disable=len(paths) < 2)
    for start in range(0, len(paths), args.batch_size):
        batch, images = [], []
        for i in range(start, min(start + args.batch_size, len(paths))):
            try:
                images.append(load_image(paths[i]))
                batch.append(i)
            except DataError as e:
                failed += 1
                bar.write(f"tabvlm predict: skipped {paths[i]}: {e.reason}", file=sys.stderr)
        results = predict_each(rec, images, args.task) if images else []
        for i, image, pred in zip(batch, images, results, strict=True):
            p = paths[i]
            if isinstance(pred, Exception):
                failed += 1
                bar.write(f"tabvlm predict: failed {p}: {type(pred).__name__}: {pred}", file=sys.stderr)
                continue
            if args.viz:
                from tabvlm.overlay import draw_overlay

                draw_overlay(image, pred).save(Path(args.viz) / (viz_names[i]))
            if pred.truncated:
                bar.write(
                    f"tabvlm predict: {p}: output cut short at {pred.tokens} tokens "
                    "(--max-new-tokens or the model's positions)",
                    file=sys.stderr,
                )
            if sink is not None:
                sink.write(json.dumps(record(pred, p, args.task), ensure_ascii=False) + "\n")
            elif out is not None:
                (out / names[i]).write_text(render(pred, args.format, p, args.task) + "\n", encoding="utf-8")
            else:
                text = render(pred, args.format, p, args.task)
                # through the bar: on a terminal it steps aside, so no table lands on its line
                bar.write(f"{header(pred, p, args.task)}\n{text}" if headers else text, file=sys.stdout)
                sys.stdout.flush()
        bar.update(min(args.batch_size, len(paths) - start))
    bar.close()
    return failed


class _ReaderOnly:
    """`--task ocr`: what `predict_each` needs of a recognizer, with no model behind it."""

    def __init__(self, reader_options: dict[str, object]):
        self.reader_options = reader_options

    def predict_many(
        self, images: list[Image.Image], batch_size: int = 1, task: str = "ocr"
    ) -> list[Prediction]:
        from tabvlm.recognizer import read_predictions

        return read_predictions(images, **self.reader_options)
