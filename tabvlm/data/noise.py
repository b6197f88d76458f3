"""Reader noise: make the renderer's true words look like what PP-OCRv6 returns on a real page.

A real reader's words differ from the truth in a few measurable ways: boxes are taller than the
line (PP-OCRv6's detector grows each text region, so the lines of a multi-line cell and
neighbouring rows touch or overlap: `bench/reader_noise.py`) and wobble by a few pixels; two words of a line come back as one (and, rarely, a
line runs across two cells); a long word is split; a faint word is lost; a character is misread.
`add_reader_noise` applies each at its own rate and keeps every word's cell target (a merged word
keeps the first word's cell), so the layout model trains on inputs like those it will see.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tabvlm.read.words import Word, is_cjk_char, sort_words

_CONFUSIONS = {
    "0": "O", "O": "0", "1": "l", "l": "1", "I": "l", "5": "S", "S": "5", "8": "B", "B": "8",
    ".": ",", ",": ".", "-": "_", "e": "c", "c": "e", "m": "rn", "%": "9", "(": "C", ")": "]",
}  # fmt: skip


@dataclass
class NoiseConfig:
    """Rates are per word (or per character for `char_error_rate`); jitter is a share of the box height."""

    box_jitter: float = 0.12
    # boxes grow above and below by a page's share of their height (drawn once a page from
    # these ranges, as one detector treats a page alike) plus +-0.05 a word. PP-OCRv6 on our
    # renders: a median x1.125 the line height (+0.053 above, +0.059 below; bench/reader_noise.py);
    # these draw x1.18, as real pages are set tighter than our renders (docs/BENCHMARKS.md)
    grow_top: tuple[float, float] = (-0.02, 0.24)
    grow_bottom: tuple[float, float] = (-0.02, 0.18)
    merge_rate: float = 0.06  # a word joins the next word of its line in the same cell
    cross_merge_rate: float = 0.004  # ... or in the next cell of the line
    split_rate: float = 0.02  # a Latin word of 4+ characters splits in two
    drop_rate: float = 0.01
    char_error_rate: float = 0.01


def add_reader_noise(
    words: list[Word], cells: list[int], rng: random.Random, cfg: NoiseConfig
) -> tuple[list[Word], list[int]]:
    """Noisy copies of `words` (in reading order) and their cells; see the module docstring."""
    grow = (rng.uniform(*cfg.grow_top), rng.uniform(*cfg.grow_bottom))
    merged: list[tuple[Word, int]] = []
    i = 0
    while i < len(words):
        w, c = words[i], cells[i]
        while i + 1 < len(words):
            n, nc = words[i + 1], cells[i + 1]
            same_line = abs((n.box[1] + n.box[3]) - (w.box[1] + w.box[3])) < (w.box[3] - w.box[1])
            latin = not (is_cjk_char(w.text[-1]) or is_cjk_char(n.text[0]))
            rate = cfg.merge_rate if nc == c else cfg.cross_merge_rate
            if not (same_line and latin and n.box[0] >= w.box[2] - 2 and rng.random() < rate):
                break
            box = (
                min(w.box[0], n.box[0]),
                min(w.box[1], n.box[1]),
                max(w.box[2], n.box[2]),
                max(w.box[3], n.box[3]),
            )
            w = Word(w.text + " " + n.text, box)
            i += 1
        merged.append((w, c))
        i += 1
    out: list[tuple[Word, int]] = []
    for w, c in merged:
        if rng.random() < cfg.drop_rate:
            continue
        pieces = [w]
        if (
            len(w.text) >= 4
            and " " not in w.text
            and not is_cjk_char(w.text[0])
            and rng.random() < cfg.split_rate
        ):
            k = rng.randint(1, len(w.text) - 1)
            x = w.box[0] + (w.box[2] - w.box[0]) * k / len(w.text)
            pieces = [
                Word(w.text[:k], (w.box[0], w.box[1], x, w.box[3])),
                Word(w.text[k:], (x, w.box[1], w.box[2], w.box[3])),
            ]
        for p in pieces:
            out.append(
                (
                    Word(
                        _misread(p.text, rng, cfg.char_error_rate),
                        _jitter(p.box, rng, cfg, grow),
                        rng.uniform(0.6, 1.0),
                    ),
                    c,
                )
            )
    ws = sort_words([w for w, _ in out])
    cell_of = {id(w): c for w, c in out}
    return ws, [cell_of[id(w)] for w in ws]


def _misread(text: str, rng: random.Random, rate: float) -> str:
    if rate <= 0:
        return text
    return "".join(_CONFUSIONS.get(ch, ch) if rng.random() < rate else ch for ch in text)


def _jitter(
    box: tuple, rng: random.Random, cfg: NoiseConfig, grow: tuple[float, float]
) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    h = max(1.0, y1 - y0)
    j = cfg.box_jitter * h
    up = (grow[0] + rng.uniform(-0.05, 0.05)) * h if any(cfg.grow_top) else 0.0
    down = (grow[1] + rng.uniform(-0.05, 0.05)) * h if any(cfg.grow_bottom) else 0.0
    x0, x1 = x0 + rng.uniform(-j, j), x1 + rng.uniform(-j, j)
    y0, y1 = y0 - up + rng.uniform(-j, j) / 2, y1 + down + rng.uniform(-j, j) / 2
    if x1 <= x0:
        x0, x1 = min(x0, x1), max(x0, x1) + 1
    if y1 <= y0:
        y0, y1 = min(y0, y1), max(y0, y1) + 1
    return (x0, y0, x1, y1)
