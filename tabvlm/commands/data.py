"""Convert other datasets' formats to tabvlm records; check a records file.

Run as: tabvlm data convert --from paddle|llava|pubtabnet IN OUT [--image-root DIR] [--split NAME]
        tabvlm data check FILE [FILE ...] [--max-pixels N] [--no-images]

`convert` writes the good records to OUT (image paths relative to OUT; images are not copied),
prints every bad line as `file:line: what` on stderr, and exits 1 if it skipped any line, so
nothing is lost silently. `check` prints every problem as `file:line: what` (bad or truncated
JSON, schema, missing/corrupt/oversized image), a summary per file, and exits 1 on any problem.
"""

from __future__ import annotations

import argparse
import sys

from tabvlm.data.importers import CONVERTERS, import_records
from tabvlm.data.records import DEFAULT_MAX_PIXELS, check_records, write_records
from tabvlm.errors import DataError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tabvlm data", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="action", required=True)
    c = sub.add_parser("convert", help="convert another format's file to tabvlm records")
    c.add_argument("--from", dest="fmt", required=True, choices=list(CONVERTERS))
    c.add_argument("input", help="the source jsonl (or LLaVA JSON array)")
    c.add_argument("output", help="the tabvlm jsonl to write")
    c.add_argument(
        "--image-root",
        default=None,
        help="folder that relative image paths start from (default: the input's folder; "
        "PubTabNet images are <root>/<split>/<filename>)",
    )
    c.add_argument("--split", default=None, help="pubtabnet: keep only this split (train, val)")
    c.add_argument("--no-images", action="store_true", help="do not require the image files to exist")
    k = sub.add_parser("check", help="report every problem of a tabvlm records file")
    k.add_argument("files", nargs="+")
    k.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"largest image accepted, width x height (default {DEFAULT_MAX_PIXELS})",
    )
    k.add_argument("--no-images", action="store_true", help="skip opening the images (faster)")
    return p


def convert(args: argparse.Namespace) -> int:
    errors: list[DataError] = []
    records = import_records(
        args.input,
        args.fmt,
        image_root=args.image_root,
        check_images=not args.no_images,
        split=args.split,
        errors=errors,
    )
    n = write_records(args.output, records)
    for e in errors:
        print(e, file=sys.stderr)
    skipped = len({e.line for e in errors})
    print(f"{args.output}: wrote {n} records; skipped {skipped} bad lines of {args.input}")
    return 1 if errors else 0


def check(args: argparse.Namespace) -> int:
    bad = False
    for path in args.files:
        try:
            n, errors = check_records(path, images=not args.no_images, max_pixels=args.max_pixels)
        except DataError as e:  # unreadable file: say so and go on with the others
            print(e)
            bad = True
            continue
        for e in errors:
            print(e)
        print(f"{path}: {n} records, {len(errors)} problems")
        bad = bad or bool(errors)
    return 1 if bad else 0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return convert(args) if args.action == "convert" else check(args)
