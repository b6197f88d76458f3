"""What PP-OCRv6 does to the true words of our renders: the figures `tabvlm.data.noise` is
calibrated against (merges, splits, drops, misreads, box offsets, how much taller the boxes are
than the line), and the same figures for the
simulated noise, side by side.

Run as: TABVLM_READ_CACHE=data/read-cache .venv/bin/python bench/reader_noise.py [--n 200] [--seed 1234]

Samples are `tabvlm synth --seed SEED`'s first n (default settings): with the cache of an earlier
pass over data/synth-test (`tabvlm predict --task ocr data/synth-test`), no image is read again.
Each reader word is matched to the true words whose centres it covers (same cell or not):
one true word = a match (misread when the text differs), several = a merge (across cells when
they lie in two cells); a true word covered by several reader words = a split; a true word no
reader word covers = a drop. Box offsets are in units of the true word's height.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_result  # noqa: E402

from tabvlm.data.fonts import discover_fonts  # noqa: E402
from tabvlm.data.noise import NoiseConfig, add_reader_noise  # noqa: E402
from tabvlm.data.render import RenderConfig, make_sample  # noqa: E402
from tabvlm.data.synth import SynthConfig  # noqa: E402
from tabvlm.read import Word, read_words  # noqa: E402
from tabvlm.read.truth import truth_words  # noqa: E402


def _inside(p: tuple[float, float], box: tuple) -> bool:
    return box[0] <= p[0] <= box[2] and box[1] <= p[1] <= box[3]


def compare(truth: list[Word], cells: list[int], read: list[Word]) -> dict[str, float]:
    """Counts of each kind of difference between `read` and the true words."""
    centre = [((w.box[0] + w.box[2]) / 2, (w.box[1] + w.box[3]) / 2) for w in truth]
    covered_by: list[list[int]] = [[] for _ in truth]
    out = {"true": len(truth), "read": len(read), "match": 0, "misread": 0, "merge": 0, "cross_merge": 0}
    dx, dy, top, bottom, tall = [], [], [], [], []
    for k, r in enumerate(read):
        hits = [i for i, c in enumerate(centre) if _inside(c, r.box)]
        for i in hits:
            covered_by[i].append(k)
        if len(hits) == 1:
            t = truth[hits[0]]
            out["match"] += 1
            out["misread"] += r.text != t.text
            h = max(1.0, t.box[3] - t.box[1])
            dx += [(r.box[0] - t.box[0]) / h, (r.box[2] - t.box[2]) / h]
            dy += [(r.box[1] - t.box[1]) / h, (r.box[3] - t.box[3]) / h]
            top.append((t.box[1] - r.box[1]) / h)  # > 0: the reader's box reaches higher
            bottom.append((r.box[3] - t.box[3]) / h)
            tall.append((r.box[3] - r.box[1]) / h)
        elif len(hits) > 1:
            out["merge"] += 1
            out["cross_merge"] += len({cells[i] for i in hits}) > 1
    out["split"] = sum(len(c) > 1 for c in covered_by)
    out["drop"] = sum(not c for c in covered_by)
    out["dx"], out["dy"], out["top"], out["bottom"], out["tall"] = dx, dy, top, bottom, tall
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    fonts = discover_fonts(need_cjk=True)
    totals = {name: {} for name in ("ppocr", "noise")}
    for i in range(args.n):
        table, rendered = make_sample(args.seed, i, SynthConfig(), RenderConfig(), fonts)
        truth, cells = truth_words(rendered, table)
        noisy, _ = add_reader_noise(truth, cells, random.Random(i), NoiseConfig())
        for name, read in (("ppocr", read_words(rendered.image)), ("noise", noisy)):
            for k, v in compare(truth, cells, read).items():
                totals[name][k] = totals[name].get(k, 0 if not isinstance(v, list) else []) + v
    rows = []
    for name, t in totals.items():
        rows.append(
            {
                "words": name,
                "true_words": t["true"],
                "read_words": t["read"],
                "drop": t["drop"] / t["true"],
                "split": t["split"] / t["true"],
                "merge": t["merge"] / t["read"],
                "cross_cell_merge": t["cross_merge"] / t["read"],
                "misread": t["misread"] / max(1, t["match"]),
                "median_abs_dx": statistics.median(abs(v) for v in t["dx"]),
                "median_abs_dy": statistics.median(abs(v) for v in t["dy"]),
                "median_grow_top": statistics.median(t["top"]),
                "median_grow_bottom": statistics.median(t["bottom"]),
                "median_height_ratio": statistics.median(t["tall"]),
            }
        )
    keys = [
        "drop", "split", "merge", "cross_cell_merge", "misread", "median_abs_dx", "median_abs_dy",
        "median_grow_top", "median_grow_bottom", "median_height_ratio",
    ]  # fmt: skip
    print("| words | true | read | " + " | ".join(keys) + " |")
    print("|---|---:|---:|" + "---:|" * len(keys))
    for r in rows:
        print(
            f"| {r['words']} | {r['true_words']} | {r['read_words']} | "
            + " | ".join(f"{r[k]:.4f}" for k in keys)
            + " |"
        )
    write_result(
        ROOT / "bench" / "results" / "reader_noise.json", {"seed": args.seed, "n": args.n, "rows": rows}
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
