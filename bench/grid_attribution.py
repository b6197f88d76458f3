"""Where a grid model loses against its ceiling: each group of decisions made right in turn.

Run as: TABVLM_READ_CACHE=data/read-cache .venv/bin/python bench/grid_attribution.py
        [--model models/tabvlm-layout] [--data ../shared/realtables/gt.jsonl ...]
        [--reader ppocr|truth] [--out bench/results/grid_attribution.json]

Each table's per-word logits from the model (as `decode_grid` uses them) are assembled as they
are, then with one group of decisions replaced by the labels of `grid_targets` (each word in its
ground-truth cell by `tabvlm.data.align.align_words`, as in `bench/grid_ceiling.py`): rows
(row_start), columns (col_start), outside, spans (the four reaches), and all of them (the
ceiling). What a row gains over "model" is what that decision costs the model; the words'
accuracy on each decision (over the words that have a label for it) is printed beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, page_words, write_result  # noqa: E402

from tabvlm.data.align import align_words  # noqa: E402
from tabvlm.data.layout import encode_inputs  # noqa: E402
from tabvlm.evaluate import evaluate, load_gt  # noqa: E402
from tabvlm.image import load_image  # noqa: E402
from tabvlm.layout_decode import grid_page_logits  # noqa: E402
from tabvlm.layout_grid import (  # noqa: E402
    GRID_FIELDS,
    GRID_LOGITS,
    IGNORE,
    N_BINARY,
    SPAN_CLASSES,
    assemble_grid,
    grid_targets,
    label_logits,
)
from tabvlm.layout_recognizer import LayoutRecognizer  # noqa: E402
from tabvlm.tables.html import parse_html, to_html  # noqa: E402

# logit columns of each group of decisions
GROUPS = {
    "rows": [0],
    "columns": [1],
    "outside": [2],
    "spans": list(range(N_BINARY, N_BINARY + 4 * SPAN_CLASSES)),
}


def decisions(logits: np.ndarray) -> np.ndarray:
    """(W, 7) per word: the three binary decisions and the four reaches the logits say."""
    binary = (logits[:, :N_BINARY] > 0).astype(np.int64)
    reach = [
        logits[:, N_BINARY + s * SPAN_CLASSES : N_BINARY + (s + 1) * SPAN_CLASSES].argmax(1) for s in range(4)
    ]
    return np.concatenate([binary, np.stack(reach, 1)], 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "tabvlm-layout"))
    ap.add_argument("--data", nargs="+", default=[str(ROOT.parent / "shared" / "realtables" / "gt.jsonl")])
    ap.add_argument("--reader", choices=("ppocr", "truth"), default="ppocr")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "grid_attribution.json"))
    args = ap.parse_args()
    rec = LayoutRecognizer.from_pretrained(args.model)
    variants = ["model", *GROUPS, "ceiling"]
    rows = []
    print("| set | words | decisions made right | TEDS | TEDS-struct | gain |")
    print("|---|---|---|---:|---:|---:|")
    for data in args.data:
        items = load_gt(data)
        preds: dict[str, dict[str, str]] = {v: {} for v in variants}
        right = np.zeros(len(GRID_FIELDS))
        seen = np.zeros(len(GRID_FIELDS))
        for it in items:
            image = load_image(it.image)
            words = page_words(it, args.reader, image)
            table = parse_html(it.html)
            x = encode_inputs(image, words, rec.model.config, rec.tokenizer)
            lines, bands = x.lines.tolist(), x.bands.tolist()
            labels = grid_targets(table, align_words(words, table), lines, bands)
            model = grid_page_logits(rec.model, [x])[0] if words else np.zeros((0, GRID_LOGITS))
            truth = label_logits(labels)
            if words:
                lab = np.asarray(labels)
                ok = lab != IGNORE
                right += ((decisions(model) == lab) & ok).sum(0)
                seen += ok.sum(0)
            for v in variants:
                logits = truth if v == "ceiling" else model.copy()
                if v in GROUPS and words:
                    logits[:, GROUPS[v]] = truth[:, GROUPS[v]]
                preds[v][it.id] = to_html(assemble_grid(words, lines, bands, logits)[0])
        s = {v: evaluate(items, p, jobs=2).summaries["all"] for v, p in preds.items()}
        acc = {f: float(r / max(1, n)) for f, r, n in zip(GRID_FIELDS, right, seen)}
        row = {
            "data": data,
            "reader": args.reader,
            "model": args.model,
            "n": s["model"].n,
            "word_accuracy": acc,
            **{f"{v}_{m}": getattr(s[v], m) for v in variants for m in ("teds", "teds_struct", "ed")},
        }
        rows.append(row)
        for v in variants:
            gain = s[v].teds - s["model"].teds
            print(
                f"| {Path(data).parent.name} | {args.reader} | {v} | {s[v].teds:.4f} | "
                f"{s[v].teds_struct:.4f} | {gain:+.4f} |"
            )
        print("word accuracy: " + ", ".join(f"{f} {a:.3f}" for f, a in acc.items()))
    write_result(args.out, {"sets": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
