"""Seconds per table of the default recogniser (read, then lay out) at batch 1, the reader and the
layout model apart, beside RapidTable + RapidOCR run in the same bench on the same images.

Run as: .venv/bin/python bench/table_latency.py [--model models/tabvlm-layout]
        [--sets examples ../shared/realtables] [--threads 2] [--reader-threads 1]
        [--rapidtable-python /work/peers/.venv-rt/bin/python] [--out bench/results/table_latency.json]

Per image: load, the reader (PP-OCRv6, no word cache: every image is read anew), the layout
model (encode + one pass + grid assembly), end to end. RapidTable runs after ours, in its
own virtualenv (`../shared/peers/README.md`), through its peer script, which times each image the
same way (OCR + table model, models loaded before the clock starts). Run it alone on the machine:
the figures are medians, and the ratio of the two medians is the comparison.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from common import ROOT, write_result

from tabvlm.recognizer import TableRecognizer

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def rapidtable_seconds(python: str, folder: Path) -> list[float]:
    """RapidTable's per-image seconds on `folder` (its peer script's own timing)."""
    script = ROOT.parent / "shared" / "peers" / "peer_rapidtable.py"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rt.jsonl"
        subprocess.run([python, str(script), str(folder), "--out", str(out)], check=True, capture_output=True)
        return [json.loads(line)["seconds"] for line in out.read_text().splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="a model folder (default: the shipped one)")
    ap.add_argument(
        "--sets", nargs="+", default=[str(ROOT / "examples"), str(ROOT.parent / "shared" / "realtables")]
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the layout model")
    ap.add_argument("--reader-threads", type=int, default=1, help="onnxruntime threads of the reader")
    ap.add_argument("--rapidtable-python", default="/work/peers/.venv-rt/bin/python")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "table_latency.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rec = TableRecognizer.from_pretrained(
        args.model, reader_options={"threads": args.reader_threads, "cache": False}
    )
    rec.predict(next(Path(args.sets[0]).glob("*.png")))  # warm-up: the reader's engine, allocator
    rows = []
    for folder in map(Path, args.sets):
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        total, reader, model, load = [], [], [], []
        for path in images:
            t0 = time.perf_counter()
            pred = rec.predict(path)
            total.append(time.perf_counter() - t0)
            reader.append(pred.reader_seconds)
            model.append(pred.model_seconds)
            load.append(pred.image_seconds)
        row = {
            "set": folder.name,
            "tables": len(images),
            "median_load_s": median(load),
            "median_reader_s": median(reader),
            "median_model_s": median(model),
            "median_total_s": median(total),
            "p90_total_s": sorted(total)[int(0.9 * (len(total) - 1))],
        }
        if Path(args.rapidtable_python).is_file():
            rt = rapidtable_seconds(args.rapidtable_python, folder)
            row["rapidtable_median_s"] = median(rt)
            row["ratio_to_rapidtable"] = row["median_total_s"] / row["rapidtable_median_s"]
        rows.append(row)
    print(
        "| set | tables | load | reader | layout model | end to end (p90) | RapidTable | ours / RapidTable |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        rt = f"{r['rapidtable_median_s']:.3f}" if "rapidtable_median_s" in r else "-"
        ratio = f"{r['ratio_to_rapidtable']:.2f}" if "ratio_to_rapidtable" in r else "-"
        print(
            f"| {r['set']} | {r['tables']} | {r['median_load_s']:.3f} | {r['median_reader_s']:.3f} | "
            f"{r['median_model_s']:.3f} | {r['median_total_s']:.3f} ({r['p90_total_s']:.3f}) | {rt} | {ratio} |"
        )
    write_result(args.out, {"threads": args.threads, "reader_threads": args.reader_threads, "rows": rows})


if __name__ == "__main__":
    main()
