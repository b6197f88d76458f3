"""The reader's speed and text quality: seconds per image and token F1 against the ground truth,
for a few PP-OCRv6 options.

Run as: OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/reader_speed.py
        [--sets examples ../shared/realtables] [--out bench/results/reader_speed.json]

Each set is a folder with a gt.jsonl (an image and its HTML answer a line: `{"image", "html"}`
or a canonical record; read by `tabvlm.evaluate.load_gt`). Variants: the default `PPOCRConfig`,
then one option changed at a time (angle classifier on, 2 onnxruntime threads, two detector
sizes, a larger recogniser batch). Every variant reads every image once, decoded afresh and
with no cache (`PPOCRReader.read` on the decoded image; decoding is not timed); the variants
take turns image by image, so a slow spell on a shared machine falls on all of them alike.
Engines are built and warmed on a drawn image first. Times: wall seconds, and CPU seconds of
this process (time.process_time: on a shared machine the other jobs do not count; with 2
threads it counts both). Token F1: the reader's words against all the table's cells
(`tabvlm.evaluate.reader_f1`: whitespace tokens, CJK per character, multiset overlap), the mean
over the images. Prints a table and writes bench/results/reader_speed.json.

The committed bench/results/reader_speed.json is from an earlier variant list (the default was
det_limit_side_len 736 then; docs/BENCHMARKS.md says which); this one has not been run yet.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import asdict
from pathlib import Path

from common import ROOT, write_result
from PIL import Image, ImageDraw

from tabvlm.evaluate import load_gt, reader_f1
from tabvlm.image import load_image
from tabvlm.read.ppocr import PPOCRConfig, PPOCRReader, rapidocr_version

VARIANTS: dict[str, PPOCRConfig] = {
    "default": PPOCRConfig(),
    "use_cls=True": PPOCRConfig(use_cls=True),
    "threads=2": PPOCRConfig(threads=2),
    "det_limit_side_len=320": PPOCRConfig(det_limit_side_len=320),
    "det_limit_side_len=736": PPOCRConfig(det_limit_side_len=736),  # rapidocr's own default
    "rec_batch_num=16": PPOCRConfig(rec_batch_num=16),
}


def warm_image() -> Image.Image:
    img = Image.new("RGB", (320, 60), "white")
    ImageDraw.Draw(img).text((10, 20), "Warm up 123", fill="black")
    return img


def p90(xs: list[float]) -> float:
    return sorted(xs)[int(0.9 * (len(xs) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--sets", nargs="+", default=[str(ROOT / "examples"), str(ROOT.parent / "shared" / "realtables")]
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "reader_speed.json"))
    args = ap.parse_args()

    readers = {name: PPOCRReader(cfg) for name, cfg in VARIANTS.items()}
    for reader in readers.values():
        reader.read(warm_image())  # builds the engine: not timed
    rows = []
    for folder in args.sets:
        items = [it for it in load_gt(Path(folder) / "gt.jsonl") if it.image is not None]
        wall: dict[str, list[float]] = {n: [] for n in readers}
        cpu: dict[str, list[float]] = {n: [] for n in readers}
        f1s: dict[str, list[tuple[float, float, float]]] = {n: [] for n in readers}
        for item in items:
            for name, reader in readers.items():
                img = load_image(item.image)  # decoded once per variant
                t0, c0 = time.perf_counter(), time.process_time()
                words = reader.read(img, name=str(item.image))
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
                f1s[name].append(reader_f1(words, item.html))
        for name in readers:
            rows.append(
                {
                    "set": Path(folder).name,
                    "variant": name,
                    "images": len(items),
                    "median_s": statistics.median(wall[name]),
                    "p90_s": p90(wall[name]),
                    "median_cpu_s": statistics.median(cpu[name]),
                    "precision": statistics.mean(p for p, _, _ in f1s[name]),
                    "recall": statistics.mean(r for _, r, _ in f1s[name]),
                    "f1": statistics.mean(f for _, _, f in f1s[name]),
                }
            )
    print(f"PP-OCRv6 small, rapidocr {rapidocr_version()}; token F1 = mean over images")
    print("| set | variant | images | median s | p90 s | median CPU s | precision | recall | token F1 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['set']} | {r['variant']} | {r['images']} | {r['median_s']:.3f} | {r['p90_s']:.3f} | "
            f"{r['median_cpu_s']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} |"
        )
    write_result(
        args.out,
        {
            "rapidocr": rapidocr_version(),
            "variants": {n: asdict(c) for n, c in VARIANTS.items()},
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
