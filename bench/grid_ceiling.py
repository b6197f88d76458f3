"""What the grid head could reach at best: each set scored with its labels instead of a model.

Run as: TABVLM_READ_CACHE=data/read-cache .venv/bin/python bench/grid_ceiling.py
        [--data ../shared/realtables/gt.jsonl data/synth-test/gt.first200.jsonl] [--reader ppocr|truth]
        [--out bench/results/grid_ceiling.json]

The grid head (`tabvlm.layout_grid`) can only merge the page's visual lines into rows and its
column bands into columns, span cells over them and leave words out; it cannot split a band
that holds two columns, nor find a row or column with no word in it. This bench measures that
limit: each word is put into its ground-truth cell by `tabvlm.data.align.align_words` (its text
against the GT cells, 99.6% right on PP-OCRv6's words of synthetic tables), the labels of
`grid_targets` are turned into certain logits and assembled. Beside it, the geometric prior
alone (every line a row, every band a column: what the head starts from). No model, no learning;
the gap between the ceiling and the prior is what a grid model can learn, the gap between 1 and
the ceiling is what it cannot.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, page_words, write_result  # noqa: E402

from tabvlm.data.align import align_words  # noqa: E402
from tabvlm.data.layout import grid_hints  # noqa: E402
from tabvlm.evaluate import evaluate, load_gt  # noqa: E402
from tabvlm.layout_grid import (  # noqa: E402
    GRID_LOGITS,
    N_BINARY,
    SPAN_CLASSES,
    assemble_grid,
    grid_targets,
    label_logits,
)
from tabvlm.tables.html import parse_html, to_html  # noqa: E402


def prior_logits(n: int) -> np.ndarray:
    """Logits of the geometric prior: every line a row, every band a column, no spans, nothing outside."""
    out = np.zeros((n, GRID_LOGITS))
    out[:, :2], out[:, 2] = 5.0, -5.0
    out[:, [N_BINARY + s * SPAN_CLASSES for s in range(4)]] = 5.0
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", nargs="+", default=[str(ROOT.parent / "shared" / "realtables" / "gt.jsonl")])
    ap.add_argument("--reader", choices=("ppocr", "truth"), default="ppocr")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "grid_ceiling.json"))
    args = ap.parse_args()
    rows = []
    print("| set | words | n | prior TEDS | prior TEDS-struct | ceiling TEDS | ceiling TEDS-struct |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for data in args.data:
        items = load_gt(data)
        preds: dict[str, dict[str, str]] = {"prior": {}, "ceiling": {}}
        for it in items:
            words = page_words(it, args.reader)
            table = parse_html(it.html)
            lines, bands = grid_hints(words)
            labels = grid_targets(table, align_words(words, table), lines, bands)
            for name, logits in (("prior", prior_logits(len(words))), ("ceiling", label_logits(labels))):
                preds[name][it.id] = to_html(assemble_grid(words, lines, bands, logits)[0])
        s = {name: evaluate(items, p, jobs=2).summaries["all"] for name, p in preds.items()}
        row = {
            "data": data,
            "reader": args.reader,
            "n": s["prior"].n,
            **{f"{k}_{m}": getattr(v, m) for k, v in s.items() for m in ("teds", "teds_struct", "ed")},
        }
        rows.append(row)
        print(
            f"| {Path(data).parent.name} | {args.reader} | {row['n']} | {row['prior_teds']:.4f} | "
            f"{row['prior_teds_struct']:.4f} | {row['ceiling_teds']:.4f} | {row['ceiling_teds_struct']:.4f} |"
        )
    write_result(args.out, {"sets": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
