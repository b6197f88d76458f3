"""The layout model's geometric prior alone, as a table: what the learned model adds beyond it.

Run as: TABVLM_READ_CACHE=data/read-cache .venv/bin/python bench/hints_baseline.py
        [--data ../shared/realtables/gt.jsonl] [--reader ppocr|truth] [--out bench/results/hints_baseline.json]

Each word goes to the cell (its visual line, its column band) of `tabvlm.data.layout.grid_hints`:
rows = lines, columns = bands, no spans; a cell's text is its words joined in reading order. No
learning, no image. Scored like `tabvlm eval` (TEDS, TEDS-struct, ED; OmniDocBench form).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_result  # noqa: E402

from tabvlm.data.layout import grid_hints  # noqa: E402
from tabvlm.evaluate import evaluate, load_gt  # noqa: E402
from tabvlm.read import join_words, read_words  # noqa: E402
from tabvlm.tables.grid import Cell, Table  # noqa: E402
from tabvlm.tables.html import to_html  # noqa: E402


def hints_table(words) -> Table:
    lines, bands = grid_hints(words)
    if not words:
        return Table(1, 1, [Cell("", 0, 0)])
    n_rows, n_cols = max(lines) + 1, max(bands) + 1
    texts: dict[tuple[int, int], list[str]] = {}
    for w, r, c in zip(words, lines, bands):
        texts.setdefault((r, c), []).append(w.text)
    cells = [Cell(join_words(texts.get((r, c), [])), r, c) for r in range(n_rows) for c in range(n_cols)]
    return Table(n_rows, n_cols, cells)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "realtables" / "gt.jsonl"))
    ap.add_argument("--reader", choices=("ppocr", "truth"), default="ppocr")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "hints_baseline.json"))
    args = ap.parse_args()
    items = load_gt(args.data)
    preds = {}
    for it in items:
        words = it.words if args.reader == "truth" else read_words(it.image)
        preds[it.id] = to_html(hints_table(words))
    report = evaluate(items, preds, jobs=2)
    s = report.summaries["all"]
    print("| set | words | n | TEDS | TEDS-struct | ED |\n|---|---|---:|---:|---:|---:|")
    print(
        f"| {Path(args.data).parent.name} | {args.reader} | {s.n} | {s.teds:.4f} | {s.teds_struct:.4f} | {s.ed:.4f} |"
    )
    write_result(
        args.out,
        {
            "data": args.data,
            "reader": args.reader,
            "n": s.n,
            "teds": s.teds,
            "teds_struct": s.teds_struct,
            "ed": s.ed,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
