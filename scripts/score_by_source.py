"""Scores of prediction files on ../shared/realtables, per source (PubTabNet, ICDAR-2013, OmniDocBench).

Run as: python scripts/score_by_source.py --pred NAME=PRED.jsonl [NAME=PRED.jsonl ...]
                                          [--gt ../shared/realtables/gt.jsonl] [--json OUT.json]

The source of a table is its id's prefix (`ptn-`, `icdar`, `odb-`); scoring is `tabvlm.evaluate`'s,
each table scored once and averaged per source, so the numbers are those of `tabvlm eval` on
each subset. Prints a Markdown table (TEDS, TEDS-struct
and ED per source, n beside each) and writes the same numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tabvlm.evaluate import evaluate, load_gt, load_predictions

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"ptn-": "PubTabNet", "icdar": "ICDAR-2013", "odb-": "OmniDocBench"}


def source_of(key: str) -> str:
    return next((name for prefix, name in SOURCES.items() if key.startswith(prefix)), "other")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pred", nargs="+", required=True, help="NAME=predictions.jsonl")
    ap.add_argument("--gt", default=str(ROOT.parent / "shared" / "realtables" / "gt.jsonl"))
    ap.add_argument("--json", help="write the scores here")
    args = ap.parse_args()
    items = load_gt(args.gt)
    groups = {"all": items}
    for item in items:
        groups.setdefault(source_of(item.id), []).append(item)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for spec in args.pred:
        name, _, path = spec.partition("=")
        by_id = {
            s["id"]: s for s in evaluate(items, load_predictions(path)).samples
        }  # each table scored once
        results[name] = {}
        for group, members in groups.items():
            scores = [by_id[item.id] for item in members]
            means = {m: sum(s[m] for s in scores) / len(scores) for m in ("teds", "teds_struct", "ed")}
            results[name][group] = {"n": len(scores), **means}
    names = list(groups)
    print("| system | " + " | ".join(f"{g} (n={len(groups[g])}) TEDS / struct / ED" for g in names) + " |")
    print("|---|" + "---|" * len(names))
    for name, by_group in results.items():
        cells = [f"{v['teds']:.3f} / {v['teds_struct']:.3f} / {v['ed']:.3f}" for v in by_group.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
