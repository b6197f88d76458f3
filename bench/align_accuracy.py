"""How well `tabvlm.data.align.align_words` puts a reader's words into their cells, on synthetic
tables where the renderer says where every cell is.

Run as: .venv/bin/python bench/align_accuracy.py [--n 200] [--seed 1234] [--readers noise,ppocr]

`noise`: the renderer's true words with simulated reader noise (`tabvlm.data.noise`), whose cells
are known. `ppocr`: PP-OCRv6's words on the same images (cached: set TABVLM_READ_CACHE to reuse
the words of an earlier pass); a word's true cell is the cell whose box holds its centre (-1:
none). Accuracy = the share of words aligned to their true cell; also the share left outside
(-1) and the seconds per table of the alignment alone. Samples are `tabvlm synth --seed SEED`'s
first n (default settings), so the words of `data/synth-test` are reused.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_result  # noqa: E402

from tabvlm.data.align import align_words  # noqa: E402
from tabvlm.data.fonts import discover_fonts  # noqa: E402
from tabvlm.data.noise import NoiseConfig, add_reader_noise  # noqa: E402
from tabvlm.data.render import RenderConfig, make_sample  # noqa: E402
from tabvlm.data.synth import SynthConfig  # noqa: E402
from tabvlm.read import read_words  # noqa: E402
from tabvlm.read.truth import cell_of, truth_words  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--readers", default="noise,ppocr")
    args = ap.parse_args()
    fonts = discover_fonts(need_cjk=True)
    rows = []
    for reader in args.readers.split(","):
        ok = total = outside = 0
        seconds = 0.0
        for i in range(args.n):
            table, rendered = make_sample(args.seed, i, SynthConfig(), RenderConfig(), fonts)
            if reader == "noise":
                words, cells = truth_words(rendered, table)
                words, cells = add_reader_noise(words, cells, random.Random(i), NoiseConfig())
            else:
                words = read_words(rendered.image, reader)
                cells = [cell_of(w.box, rendered.cell_boxes) for w in words]
                cells = [c if c >= 0 and table.cells[c].text else -1 for c in cells]
            t0 = time.perf_counter()
            got = align_words(words, table)
            seconds += time.perf_counter() - t0
            ok += sum(g == c for g, c in zip(got, cells))
            outside += sum(g == -1 for g in got)
            total += len(words)
        rows.append(
            {
                "reader": reader,
                "tables": args.n,
                "words": total,
                "accuracy": round(ok / max(1, total), 4),
                "left_outside": round(outside / max(1, total), 4),
                "ms_per_table": round(1000 * seconds / args.n, 2),
            }
        )
    print("| reader | tables | words | accuracy | left outside | ms / table |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['reader']} | {r['tables']} | {r['words']} | {r['accuracy']:.4f} | {r['left_outside']:.4f} | {r['ms_per_table']} |"
        )
    write_result(ROOT / "bench" / "results" / "align_accuracy.json", {"seed": args.seed, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
