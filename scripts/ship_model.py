"""Ship a trained model as the default: evaluate it, compare, write its card.

Run as: python scripts/ship_model.py RUN_DIR/final --core-hours H [--notes TEXT] [--force]
                                     [--synth-test data/synth-test/gt.jsonl] [--synth-n N]
                                     [--out models/tabvlm-layout] [--predictions DIR]

1. Copies the model folder's weights, config and tokenizer into a temporary folder beside `--out`.
2. Scores that copy with `tabvlm eval` on the standard synthetic test (`tabvlm synth --n 1000
   --seed 1234`; its first `--synth-n` tables), on `../shared/realtables` (when present) and on
   `examples/`, saving predictions and per-category scores under `<out>/eval/`. A layout model
   (read, then lay out) is scored with PP-OCRv6's words, and on the synthetic test also with the
   renderer's true words (`synth-test-truth`: structure and assignment alone), and each set
   records the reader's token F1. `--predictions DIR`: a set whose `DIR/<set>.pred.jsonl` exists
   (written by `tabvlm eval --model RUN_DIR/final --save-pred`, i.e. by these same weights:
   greedy decoding is deterministic) is scored from it instead of decoded again.
3. Refuses (exit 1) unless it beats the shipped model's TEDS on the synthetic test (`--force`:
   ship anyway).
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

ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 50 * 2**20
MODEL_FILES = ("model.safetensors", "config.json", "tokenizer.json")
TRAIN_FILES = ("train_config.json", "metrics.json")  # the layout trainer's (tabvlm.train.layout)
CATEGORIES = ("all", "zh", "en", "span", "blank")


def eval_sets(synth_test: Path) -> dict[str, tuple[Path, str]]:
    """name -> (GT jsonl, reader) of every evaluation set that exists here."""
    sets = {
        "synth-test": (synth_test, "ppocr"),
        "synth-test-truth": (synth_test, "truth"),
        "realtables": (ROOT.parent / "shared" / "realtables" / "gt.jsonl", "ppocr"),
        "examples": (ROOT / "examples" / "gt.jsonl", "ppocr"),
    }
    return {name: (path, reader) for name, (path, reader) in sets.items() if path.is_file()}


def first_n(gt: Path, n: int) -> Path:
    """The first `n` lines of `gt` as a GT file beside its images (relative paths still resolve)."""
    lines = gt.read_text(encoding="utf-8").splitlines()[:n]
    path = gt.with_name(f"gt.first{n}.jsonl")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def evaluate(
    model: Path, name: str, gt: Path, reader: str, out: Path, predictions: Path | None = None
) -> dict[str, Any]:
    """Scores of `model` on `gt` ({category: {n, ed, teds, teds_struct}, reader: {...}}), via
    `tabvlm eval`: decoded now, or scored from `predictions/<name>.pred.jsonl` when that exists."""
    out.mkdir(parents=True, exist_ok=True)
    made = predictions / f"{name}.pred.jsonl" if predictions else None
    if made is not None and made.is_file():
        shutil.copy2(made, out / f"{name}.pred.jsonl")
        source = ["--pred", f"{model.name}={out / f'{name}.pred.jsonl'}"]
    else:
        source = ["--model", str(model), "--reader", reader, "--save-pred", str(out / f"{name}.pred.jsonl")]
    cmd = [
        sys.executable, "-m", "tabvlm.cli", "eval", "--data", str(gt), *source,
        "--json", str(out / f"{name}.json"), "--jobs", "2",
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    result = json.loads((out / f"{name}.json").read_text())
    scores = result["systems"][model.name]
    if "reader" in result:
        scores["reader"] = result["reader"]
    scores["seconds"] = round(time.perf_counter() - t0, 1)
    return scores


def by_source(model: Path, out: Path) -> dict[str, dict[str, float]]:
    """realtables per source (PubTabNet, ICDAR-2013, OmniDocBench), from the saved predictions."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from score_by_source import source_of

    from tabvlm.evaluate import evaluate as score
    from tabvlm.evaluate import load_gt, load_predictions

    items = load_gt(ROOT.parent / "shared" / "realtables" / "gt.jsonl")
    samples = {s["id"]: s for s in score(items, load_predictions(out / "realtables.pred.jsonl")).samples}
    groups: dict[str, list[dict[str, float]]] = {}
    for it in items:
        groups.setdefault(source_of(it.id), []).append(samples[it.id])
    return {
        g: {"n": len(v), **{m: sum(x[m] for x in v) / len(v) for m in ("ed", "teds", "teds_struct")}}
        for g, v in groups.items()
    }


WHAT = (
    "its line and column-band hints, the space and rulings around it; a transformer over the",
    "image and the words) corrects the geometric grid word by word: which lines are one row,",
    "which bands one column, how far each cell spans, which words lie outside the table",
    "(`tabvlm/layout_grid.py`).",
)
HOW = "One pass, no decoding loop, float32."


def card(
    lineage: list[dict[str, Any]],
    scores: dict[str, dict[str, Any]],
    sources: dict[str, Any],
    notes: str,
    out: str,
    recipe: str = "configs/layout-grid.yaml",
) -> str:
    """The model card (Markdown)."""
    total_h = sum(s["core_hours"] for s in lineage)
    total_samples = sum(s["samples"] for s in lineage)
    lines = [
        f"# {out}: the default table recogniser",
        "",
        "Read, then lay out. PP-OCRv6 small (the `rapidocr` 3.10 wheel, on onnxruntime) reads the words;",
        "this small layout model (a conv tower, one token per word: box + image under it + text +",
        *WHAT,
        "Trained on synthetic tables only, on 2 CPU cores.",
        "Loaded by `TableRecognizer.from_pretrained()`, `tabvlm predict` and `tabvlm serve` when no",
        f"`--model` is given. Continue training with `tabvlm train {recipe} init_from=models/{out}`.",
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
        f"`../shared/tools/tabmetrics.py`. {HOW}",
        "",
        "| set | words from | category | n | ED | TEDS | TEDS-struct |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for name, by_cat in scores.items():
        reader = by_cat.get("reader", {}).get("name", "-")
        for cat in CATEGORIES:
            s = by_cat.get(cat)
            if s and s["n"]:
                lines.append(
                    f"| {name} | {reader} | {cat} | {s['n']} | {s['ed']:.4f} | {s['teds']:.4f} | {s['teds_struct']:.4f} |"
                )
    if sources:
        lines += [
            "",
            "realtables per source:",
            "",
            "| source | n | ED | TEDS | TEDS-struct |",
            "|---|---:|---:|---:|---:|",
        ]
        for g, s in sources.items():
            lines.append(f"| {g} | {s['n']} | {s['ed']:.4f} | {s['teds']:.4f} | {s['teds_struct']:.4f} |")
    readers = [(n, v["reader"]) for n, v in scores.items() if "reader" in v]
    if readers:
        lines += [
            "",
            "The reader's token precision / recall / F1 against the GT cells (what the layout got to work with):",
            "",
        ]
        lines += ["| set | reader | precision | recall | F1 |", "|---|---|---:|---:|---:|"]
        for n, r in readers:
            lines.append(f"| {n} | {r['name']} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} |")
    lines += [
        "",
        "Sets: `synth-test` = the first n tables of `tabvlm synth --n 1000 --seed 1234` (the generator's full default",
        "distribution: zh + en, 1-40 rows, spans, blanks, styles, degradations), read by PP-OCRv6;",
        "`synth-test-truth` = the same tables with the renderer's true words (structure and assignment",
        "alone); `realtables` = `../shared/realtables` (38 real tables: PubTabNet, ICDAR-2013, OmniDocBench;",
        "never trained on); `examples` = `examples/`. Predictions are in `eval/`.",
    ]
    if notes:
        lines += ["", "## Notes", "", notes]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path, help="a layout model folder written by the trainer (RUN_DIR/final)")
    ap.add_argument("--core-hours", type=float, required=True, help="CPU core-hours this session's runs took")
    ap.add_argument(
        "--steps", type=int, help="this session's steps, when its runs chained several (default: the run's)"
    )
    ap.add_argument("--samples", type=int, help="this session's samples, likewise")
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "tabvlm-layout")
    ap.add_argument("--synth-test", type=Path, default=ROOT / "data" / "synth-test" / "gt.jsonl")
    ap.add_argument("--synth-n", type=int, default=1000, help="score the synthetic test's first N tables")
    ap.add_argument("--recipe", default="configs/layout-grid.yaml", help="the recipe the run used")
    ap.add_argument("--notes", default="", help="Markdown for the card's notes section")
    ap.add_argument("--force", action="store_true", help="ship even when it does not beat the shipped model")
    ap.add_argument("--predictions", type=Path, help="folder of <set>.pred.jsonl these weights already made")
    args = ap.parse_args()

    for name in (*MODEL_FILES, *TRAIN_FILES):
        if not (args.model / name).is_file():
            sys.exit(f"ship_model: {args.model / name} is missing; expected a layout trainer's final folder")
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
    for name in (*MODEL_FILES, "train_config.json"):
        shutil.copy2(args.model / name, tmp / name)

    synth = first_n(args.synth_test, args.synth_n) if args.synth_n < 1000 else args.synth_test
    scores = {
        name: evaluate(
            tmp, name, synth if name.startswith("synth") else gt, reader, tmp / "eval", args.predictions
        )
        for name, (gt, reader) in eval_sets(args.synth_test).items()
    }
    sources = by_source(tmp, tmp / "eval") if "realtables" in scores else {}
    old_card = args.out / "lineage.json"
    old = json.loads(old_card.read_text()) if old_card.is_file() else {"sessions": [], "scores": {}}
    old_teds = old["scores"].get("synth-test", {}).get("all", {}).get("teds")
    new_teds = scores["synth-test"]["all"]["teds"]
    print(f"synthetic test TEDS: new {new_teds:.4f}, shipped {old_teds}")
    if old_teds is not None and new_teds <= old_teds and not args.force:
        shutil.rmtree(tmp)
        print("ship_model: not better than the shipped model; nothing changed")
        return 1

    cfg = json.loads((args.model / "train_config.json").read_text())
    metrics = json.loads((args.model / "metrics.json").read_text())
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
        "steps": args.steps or metrics["step"],
        "samples": args.samples or metrics["samples"],
        "core_hours": args.core_hours,
        "machine": f"{machine}, {cfg.get('dtype', 'auto')}",
    }
    lineage = {
        "sessions": [*old["sessions"], session],
        "scores": scores,
        "by_source": sources,
        "step": metrics["step"],
    }
    (tmp / "lineage.json").write_text(json.dumps(lineage, indent=1, ensure_ascii=False) + "\n")
    (tmp / "README.md").write_text(
        card(
            lineage["sessions"],
            scores,
            sources,
            args.notes,
            args.out.name,
            args.recipe,
        ),
        encoding="utf-8",
    )

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
