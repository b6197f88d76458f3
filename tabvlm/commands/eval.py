"""Score table predictions against ground truth: ED, TEDS, TEDS-struct for all / zh / en / span / blank.

Run as: tabvlm eval --data GT.jsonl|DIR (--model DIR | --pred PRED.jsonl | --pred NAME=PRED.jsonl ...)
                    [--save-pred OUT.jsonl] [--json SCORES.json] [--jobs N]

`--data DIR` reads DIR/gt.jsonl (the folder `tabvlm synth --out` writes, or examples/), as
`tabvlm predict DIR` takes the same folder's images.

Every `--pred` (and `--model`) is one row of the printed tables, so systems sit side by side; a
plain `--pred FILE` is named after the file's stem. GT lines are `{"id", "html", ...}` or canonical
records from `tabvlm synth`; prediction lines are `{"id", "html"}`. A GT id without a prediction
scores as an empty table. A bad line (not UTF-8, not JSON or nested too deeply, a wrong schema, a
duplicate id) is reported on stderr as `file:line: what` and skipped; the others are scored and
the report printed, and the exit code is then 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tabvlm.errors import DataError
from tabvlm.evaluate import (
    GTItem,
    Report,
    evaluate,
    format_report,
    load_gt,
    load_predictions,
    reports_to_dict,
)


def _parse_pred(value: str) -> tuple[str, Path]:
    """'NAME=FILE' -> (NAME, FILE); a plain FILE (or an existing file whose name holds '=') -> its stem."""
    if "=" in value and not Path(value).exists():
        name, _, file = value.partition("=")
        if not name or not file:
            raise argparse.ArgumentTypeError(f"expected NAME=FILE or FILE, found {value!r}")
        return name, Path(file)
    return Path(value).stem, Path(value)


def gt_file(data: str) -> Path:
    """--data as a GT file: a folder means its gt.jsonl (DataError naming the folder when it has none)."""
    path = Path(data)
    if not path.is_dir():
        return path
    if not (path / "gt.jsonl").is_file():
        others = sorted(f.name for f in path.glob("*.jsonl"))
        found = (
            f"a folder without gt.jsonl (its jsonl files: {', '.join(others)}; give the GT one as --data)"
            if others
            else "a folder with no jsonl file"
        )
        raise DataError(
            f"expected a GT jsonl file, or a folder holding gt.jsonl (as `tabvlm synth --out` writes); found {found}",
            str(path),
        )
    return path / "gt.jsonl"


def _predict_with_model(
    model: str, items: list[GTItem], gt_path: str, batch_size: int, reader: str
) -> tuple[dict[str, str], dict[str, tuple[float, float, float]]]:
    """Run the recognizer over the GT images: id -> predicted HTML, and (layout models) id -> the
    reader's token (precision, recall, F1) against the GT cells. `reader` "truth" gives the layout
    model each record's true words (`meta.words`, written by `tabvlm synth`) instead of PP-OCRv6."""
    missing = next((it for it in items if it.image is None or not it.image.is_file()), None)
    if missing is not None:
        found = "no 'image' field" if missing.image is None else f"{missing.image} does not exist"
        raise DataError(f"--model needs each GT record's image; {found}", gt_path, missing.line)
    # imported here: torch and the model code load only when a model runs
    from tabvlm.evaluate import reader_f1
    from tabvlm.recognizer import TableRecognizer

    recognizer = TableRecognizer.from_pretrained(model)
    images = [str(it.image) for it in items]
    if reader == "truth":
        no_words = next((it for it in items if it.words is None), None)
        if no_words is not None:
            raise DataError(
                "--reader truth needs each record's meta.words (tabvlm synth writes them)",
                gt_path,
                no_words.line,
            )
        if not hasattr(recognizer, "reader"):
            raise DataError(f"--reader truth: {model} is not a layout model (it reads no words)", gt_path)
        results = recognizer.predict_many(images, batch_size=batch_size, words=[it.words for it in items])
    else:
        results = recognizer.predict_many(images, batch_size=batch_size)
    f1 = {
        it.id: reader_f1(r.words, it.html) for it, r in zip(items, results) if hasattr(recognizer, "reader")
    }
    return {it.id: r.html for it, r in zip(items, results)}, f1


def format_reader_f1(
    name: str, reader: str, items: list[GTItem], f1: dict[str, tuple[float, float, float]]
) -> str:
    """The reader's mean token precision / recall / F1 per category (all / zh / en), one line each."""
    lines = [f"{name}: reader {reader}, token precision / recall / F1 against the GT cells"]
    for cat, keep in (
        ("all", lambda it: True),
        ("zh", lambda it: it.lang == "zh"),
        ("en", lambda it: it.lang == "en"),
    ):
        got = [f1[it.id] for it in items if keep(it) and it.id in f1]
        if got:
            p, r, f = (sum(x[k] for x in got) / len(got) for k in range(3))
            lines.append(f"  {cat:<4} n={len(got):<5} {p:.4f} / {r:.4f} / {f:.4f}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Score each system, print the ED / TEDS / TEDS-struct tables; 0 on success."""
    ap = argparse.ArgumentParser(prog="tabvlm eval", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--data",
        required=True,
        help="GT jsonl ({id, html} lines or canonical records), or a folder holding gt.jsonl",
    )
    ap.add_argument(
        "--pred",
        action="append",
        type=_parse_pred,
        default=[],
        metavar="[NAME=]FILE",
        help="prediction jsonl ({id, html} lines); repeat to compare systems",
    )
    ap.add_argument("--model", help="a trained model folder: predict the GT images, then score")
    ap.add_argument("--save-pred", type=Path, help="with --model: write its predictions to this jsonl")
    ap.add_argument("--batch-size", type=int, default=8, help="with --model: images per batch")
    ap.add_argument(
        "--reader",
        choices=("ppocr", "truth"),
        default="ppocr",
        help="with a layout --model: its words from PP-OCRv6, or the records' true words (synthetic sets)",
    )
    ap.add_argument("--json", type=Path, help="write the per-category scores of every system here")
    ap.add_argument("--jobs", type=int, default=1, help="scoring processes (TEDS is slow on big tables)")
    ap.add_argument(
        "--pubtabnet",
        action="store_true",
        help="keep thead/tbody/th and raw text (PubTabNet's TEDS) instead of OmniDocBench's form",
    )
    args = ap.parse_args(argv)
    if not args.pred and not args.model:
        ap.error("give --model or at least one --pred")
    if args.save_pred and not args.model:
        ap.error("--save-pred needs --model")
    if args.reader != "ppocr" and not args.model:
        ap.error("--reader needs --model (it chooses the words a layout model is given)")

    data = gt_file(args.data)
    errors: list[DataError] = []  # bad lines of every file, reported and skipped
    items = load_gt(data, errors)
    systems: dict[str, dict[str, str]] = {}
    reader_scores: dict[str, tuple[float, float, float]] = {}
    if args.model:
        preds, reader_scores = _predict_with_model(args.model, items, str(data), args.batch_size, args.reader)
        systems[Path(args.model).name or args.model] = preds
        if args.save_pred:
            args.save_pred.parent.mkdir(parents=True, exist_ok=True)
            with args.save_pred.open("w", encoding="utf-8") as f:
                for key, html in preds.items():
                    f.write(json.dumps({"id": key, "html": html}, ensure_ascii=False) + "\n")
    for name, file in args.pred:
        if name in systems:
            ap.error(f"two systems named {name!r}; name them with --pred NAME=FILE")
        systems[name] = load_predictions(file, errors)
    for e in errors:
        print(f"tabvlm eval: skipped {e}", file=sys.stderr)

    reports: dict[str, Report] = {
        name: evaluate(items, preds, jobs=args.jobs, pubtabnet=args.pubtabnet)
        for name, preds in systems.items()
    }
    print(format_report(reports))
    if reader_scores:
        print("\n" + format_reader_f1(Path(args.model).name or args.model, args.reader, items, reader_scores))
    mode = "pubtabnet" if args.pubtabnet else "omnidoc"
    print(f"\n{len(items)} GT tables in {data}; canonical form: {mode}")
    for name, report in reports.items():
        if report.missing or report.extra:
            print(
                f"  {name}: {report.missing} without prediction (scored as empty), "
                f"{report.extra} predictions without GT (ignored)"
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        scores = reports_to_dict(reports)
        if reader_scores:
            got = list(reader_scores.values())
            scores["reader"] = {
                "name": args.reader,
                "tables": len(got),
                **{k: sum(x[i] for x in got) / len(got) for i, k in enumerate(("precision", "recall", "f1"))},
            }
        args.json.write_text(json.dumps(scores, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    if errors:
        print(
            f"tabvlm eval: {len(errors)} bad lines skipped (listed above); the scores cover the rest",
            file=sys.stderr,
        )
    return 1 if errors else 0
