"""Score table predictions against ground truth: ED, TEDS, TEDS-struct for all / zh / en / span / blank.

Run as: tabvlm eval --data GT.jsonl (--model DIR | --pred PRED.jsonl | --pred NAME=PRED.jsonl ...)
                    [--save-pred OUT.jsonl] [--json SCORES.json] [--jobs N]

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


def _predict_with_model(model: str, items: list[GTItem], gt_path: str, batch_size: int) -> dict[str, str]:
    """Run the recognizer over the GT images; id -> predicted HTML."""
    missing = next((it for it in items if it.image is None or not it.image.is_file()), None)
    if missing is not None:
        found = "no 'image' field" if missing.image is None else f"{missing.image} does not exist"
        raise DataError(f"--model needs each GT record's image; {found}", gt_path, missing.line)
    # imported here: torch and the model code load only when a model runs
    from tabvlm.recognizer import TableRecognizer

    recognizer = TableRecognizer.from_pretrained(model)
    results = recognizer.predict_many([str(it.image) for it in items], batch_size=batch_size)
    return {it.id: r.html for it, r in zip(items, results)}


def main(argv: list[str]) -> int:
    """Score each system, print the ED / TEDS / TEDS-struct tables; 0 on success."""
    ap = argparse.ArgumentParser(prog="tabvlm eval", description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="GT jsonl ({id, html} lines or canonical records)")
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

    errors: list[DataError] = []  # bad lines of every file, reported and skipped
    items = load_gt(args.data, errors)
    systems: dict[str, dict[str, str]] = {}
    if args.model:
        preds = _predict_with_model(args.model, items, args.data, args.batch_size)
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
    mode = "pubtabnet" if args.pubtabnet else "omnidoc"
    print(f"\n{len(items)} GT tables in {args.data}; canonical form: {mode}")
    for name, report in reports.items():
        if report.missing or report.extra:
            print(
                f"  {name}: {report.missing} without prediction (scored as empty), "
                f"{report.extra} predictions without GT (ignored)"
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(reports_to_dict(reports), ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
        )
    if errors:
        print(
            f"tabvlm eval: {len(errors)} bad lines skipped (listed above); the scores cover the rest",
            file=sys.stderr,
        )
    return 1 if errors else 0
