"""The reader's unit: a `Word` (text, box, score), and reading order.

A word is a run of non-space Latin characters (a number, a token) or one CJK character, with its
box in the image's pixels. Every reader backend returns `list[Word]` in reading order; the layout
model takes one token per word.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) in image pixels, x1 / y1 exclusive


@dataclass(frozen=True, slots=True)  # no __dict__: a page of words (and the cache's) stays small
class Word:
    text: str
    box: Box
    score: float = 1.0  # the reader's confidence in [0, 1]; 1.0 for the renderer's truth

    def to_dict(self) -> dict:
        return {"text": self.text, "box": [round(v, 1) for v in self.box], "score": round(self.score, 4)}

    @classmethod
    def from_dict(cls, d: dict) -> Word:
        x0, y0, x1, y1 = (float(v) for v in d["box"])
        return cls(str(d["text"]), (x0, y0, x1, y1), float(d.get("score", 1.0)))


def is_cjk_char(ch: str) -> bool:
    """CJK ideographs, kana, hangul and full-width forms: each such character is a word."""
    return "\u2e80" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" or "\uf900" <= ch <= "\uffef"


def line_groups(words: Sequence[Word]) -> list[list[int]]:
    """Indices of `words` as visual lines, top to bottom, each left to right: a word joins the
    current line when its vertical centre lies inside the line's first word's span (so a slightly
    rotated or baseline-shifted line stays one line)."""
    order = sorted(range(len(words)), key=lambda i: (words[i].box[1] + words[i].box[3], words[i].box[0]))
    lines: list[list[int]] = []
    for i in order:
        x0, y0, x1, y1 = words[i].box
        cy = (y0 + y1) / 2
        if lines:
            a = words[lines[-1][0]].box
            if a[1] <= cy <= a[3]:
                lines[-1].append(i)
                continue
        lines.append([i])
    return [sorted(line, key=lambda j: words[j].box[0]) for line in lines]


def reading_order(words: Sequence[Word]) -> list[int]:
    """Indices of `words` top to bottom, then left to right (the lines of `line_groups`)."""
    return [i for line in line_groups(words) for i in line]


def sort_words(words: Sequence[Word]) -> list[Word]:
    """`words` in reading order (see `reading_order`)."""
    return [words[i] for i in reading_order(words)]


def join_words(texts: Sequence[str]) -> str:
    """A cell's text from its words in order: a space between two words unless either side is CJK."""
    out = ""
    for t in texts:
        if out and t and not (is_cjk_char(out[-1]) or is_cjk_char(t[0])):
            out += " "
        out += t
    return out


def text_lines(words: Sequence[Word]) -> list[str]:
    """The text of `words`, one string per visual line (`line_groups`), words joined by `join_words`."""
    return [join_words([words[i].text for i in line]) for line in line_groups(words)]


def split_text(text: str) -> list[str]:
    """`text` cut into the reader's unit: runs of non-space non-CJK characters, and each CJK
    character alone ("Q3 收入 12.5" -> ["Q3", "收", "入", "12.5"])."""
    out: list[str] = []
    run = ""
    for ch in text:
        if ch.isspace() or is_cjk_char(ch):
            if run:
                out.append(run)
            run = ""
            if not ch.isspace():
                out.append(ch)
        else:
            run += ch
    if run:
        out.append(run)
    return out
