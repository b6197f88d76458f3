"""Ship a trained model as the default (`models/tabvlm-base/`): evaluate it, compare, write its card.

Run as: python scripts/ship_model.py RUN_DIR/final --core-hours H [--notes TEXT] [--force]
                                     [--synth-test data/synth-test/gt.jsonl] [--out models/tabvlm-base]
                                     [--predictions DIR]

1. Copies the model folder's weights, config and tokenizer into a temporary folder beside `--out`.
2. Scores that copy with `tabvlm eval` on the standard synthetic test (`tabvlm synth --n 1000
   --seed 1234`), on `../shared/realtables` (when present) and on `examples/`, saving predictions
   and per-category scores under `<out>/eval/`. `--predictions DIR`: a set whose
   `DIR/<set>.pred.jsonl` exists (written by `tabvlm eval --model RUN_DIR/final --save-pred`, i.e.
   by these same weights: greedy decoding is deterministic) is scored from it instead of decoded
   again.
3. Refuses (exit 1) unless it beats the shipped model's TEDS on the synthetic test (`--force`:
   ship anyway, e.g. the first model).
4. Appends this session to `<out>/lineage.json` (recipe, init, steps, samples, core-hours: what the
   model has cost so far) and writes the model card `<out>/README.md` from it and the scores.
5. Swaps the folder in (the old one is removed only after the new one is complete).
The weights must stay under 50 MB in all (the repository ships them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 50 * 2**20
MODEL_FILES = ("model.safetensors", "config.json", "tokenizer.json")
CATEGORIES = ("all", "zh", "en", "span", "blank")


def eval_sets(synth_test: Path) -> dict[str, Path]:
    """name -> GT jsonl of every evaluation set that exists here."""
    sets = {
        "synth-test": synth_test,
        "realtables": ROOT.parent / "shared" / "realtables" / "gt.jsonl",
        "examples": ROOT / "examples" / "gt.jsonl",
    }
    return {name: path for name, path in sets.items() if path.is_file()}


def evaluate(model: Path, name: str, gt: Path, out: Path, predictions: Path | None = None) -> dict[str, Any]:
    """Scores of `model` on `gt` ({category: {n, ed, teds, teds_struct}}), via `tabvlm eval`:
    decoded now, or scored from `predictions/<name>.pred.jsonl` when that exists."""
    out.mkdir(parents=True, exist_ok=True)
    made = predictions / f"{name}.pred.jsonl" if predictions else None
    if made is not None and made.is_file():
        shutil.copy2(made, out / f"{name}.pred.jsonl")
        source = ["--pred", f"{model.name}={out / f'{name}.pred.jsonl'}"]
    else:
        source = ["--model", str(model), "--save-pred", str(out / f"{name}.pred.jsonl")]
    cmd = [
        sys.executable, "-m", "tabvlm.cli", "eval", "--data", str(gt), *source,
        "--json", str(out / f"{name}.json"), "--jobs", "2",
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    scores = json.loads((out / f"{name}.json").read_text())["systems"][model.name]
    scores["seconds"] = round(time.perf_counter() - t0, 1)
    return scores


def card(lineage: list[dict[str, Any]], scores: dict[str, dict[str, Any]], notes: str) -> str:
    """The model card (Markdown)."""
    total_h = sum(s["core_hours"] for s in lineage)
    total_samples = sum(s["samples"] for s in lineage)
    lines = [
        "# tabvlm-base: the default table reader",
        "",
        "A small TabVLM trained from scratch on synthetic tables, on 2 CPU cores, across sessions.",
        "Input: a table image (fitted to the model's square input, aspect kept); output: table HTML.",
        "Loaded by `TableRecognizer.from_pretrained()`, `tabvlm predict` and `tabvlm serve` when no",
        "`--model` is given. Continue training with `tabvlm train configs/default-sft.yaml",
        "init_from=models/tabvlm-base` (see docs/BENCHMARKS.md for the curve).",
        "",
        f"**Training so far:** {len(lineage)} session(s), {sum(s['steps'] for s in lineage):,} steps, "
        f"{total_samples:,} samples seen, **{total_h:.2f} core-hours** (CPU).",
        "",
        "| session | commit | recipe | init from | steps | samples | core-hours | machine |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for s in lineage:
        lines.append(
            f"| {s['date']} | {s['commit']} | `{s['recipe']}` | {s['init_from'] or 'scratch'} | "
            f"{s['steps']:,} | {s['samples']:,} | {s['core_hours']:.2f} | {s['machine']} |"
        )
    lines += [
        "",
        "## Scores (measured on these weights by scripts/ship_model.py)",
        "",
        "ED: normalised edit distance of canonical HTML (lower is better); TEDS and TEDS-struct:",
        "tree-edit similarity (higher is better); OmniDocBench canonical form, as",
        "`../shared/tools/tabmetrics.py`. Greedy decoding with the table grammar, float32.",
        "",
        "| set | category | n | ED | TEDS | TEDS-struct |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, by_cat in scores.items():
        for cat in CATEGORIES:
            s = by_cat.get(cat)
            if s and s["n"]:
                lines.append(
                    f"| {name} | {cat} | {s['n']} | {s['ed']:.4f} | {s['teds']:.4f} | {s['teds_struct']:.4f} |"
                )
    lines += [
        "",
        "Sets: `synth-test` = the first n tables of `tabvlm synth --n 1000 --seed 1234` (the generator's full default",
        "distribution: zh + en, 1-40 rows, spans, blanks, styles, degradations); `realtables` =",
        "`../shared/realtables` (38 real tables: PubTabNet, ICDAR-2013, OmniDocBench; never trained",
        "on); `examples` = `examples/`. Predictions are in `eval/`.",
    ]
    if notes:
        lines += ["", "## Notes", "", notes]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path, help="a model folder written by the trainer (RUN_DIR/final)")
    ap.add_argument("--core-hours", type=float, required=True, help="CPU core-hours this run took")
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "tabvlm-base")
    ap.add_argument("--synth-test", type=Path, default=ROOT / "data" / "synth-test" / "gt.jsonl")
    ap.add_argument("--recipe", default="configs/default-sft.yaml", help="the recipe the run used")
    ap.add_argument("--notes", default="", help="Markdown for the card's notes section")
    ap.add_argument("--force", action="store_true", help="ship even when it does not beat the shipped model")
    ap.add_argument("--predictions", type=Path, help="folder of <set>.pred.jsonl these weights already made")
    args = ap.parse_args()

    for name in (*MODEL_FILES, "train_config.yaml", "metrics.json"):
        if not (args.model / name).is_file():
            sys.exit(f"ship_model: {args.model / name} is missing; expected a trainer's final folder")
    if not args.synth_test.is_file():
        sys.exit(
            f"ship_model: {args.synth_test} is missing; run `tabvlm synth --n 1000 --seed 1234 "
            f"--out {args.synth_test.parent}` first"
        )
    size = sum((args.model / n).stat().st_size for n in MODEL_FILES)
    if size > MAX_BYTES:
        sys.exit(f"ship_model: the model is {size / 2**20:.1f} MB, over the 50 MB the repository allows")

    tmp = args.out.with_name(f".tmp-{args.out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in (*MODEL_FILES, "train_config.yaml"):
        shutil.copy2(args.model / name, tmp / name)

    scores = {
        name: evaluate(tmp, name, gt, tmp / "eval", args.predictions)
        for name, gt in eval_sets(args.synth_test).items()
    }
    old_card = args.out / "lineage.json"
    old = json.loads(old_card.read_text()) if old_card.is_file() else {"sessions": [], "scores": {}}
    old_teds = old["scores"].get("synth-test", {}).get("all", {}).get("teds")
    new_teds = scores["synth-test"]["all"]["teds"]
    print(f"synthetic test TEDS: new {new_teds:.4f}, shipped {old_teds}")
    if old_teds is not None and new_teds <= old_teds and not args.force:
        shutil.rmtree(tmp)
        print("ship_model: not better than the shipped model; nothing changed")
        return 1

    cfg = yaml.safe_load((args.model / "train_config.yaml").read_text())
    step = json.loads((args.model / "metrics.json").read_text())["step"]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    machine = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
         if ln.startswith("model name")),
        "unknown",
    )  # fmt: skip
    session = {
        "date": time.strftime("%Y-%m-%d"),
        "commit": commit,
        "recipe": args.recipe,
        "init_from": cfg.get("init_from"),
        "steps": step,
        "samples": step * cfg["batch_size"] * cfg.get("grad_accum", 1),
        "core_hours": args.core_hours,
        "machine": f"{machine}, {cfg.get('dtype', 'auto')}",
    }
    lineage = {"sessions": [*old["sessions"], session], "scores": scores}
    (tmp / "lineage.json").write_text(json.dumps(lineage, indent=1, ensure_ascii=False) + "\n")
    (tmp / "README.md").write_text(card(lineage["sessions"], scores, args.notes), encoding="utf-8")

    backup = args.out.with_name(f".old-{args.out.name}")
    shutil.rmtree(backup, ignore_errors=True)
    if args.out.exists():
        args.out.rename(backup)
    tmp.rename(args.out)
    shutil.rmtree(backup, ignore_errors=True)
    print(f"shipped {args.model} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
