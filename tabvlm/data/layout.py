"""Inputs and targets of the layout model (`tabvlm.model.layout`), for training and inference alike.

`encode_inputs(image, words, cfg, tokenizer)`: the page as a gray square (fit as `fit_image`
does: longer side to `image_size`, the table at the top left), each word's box as a share of the
longer side, each word's text as token ids, its grid hints, the gaps and rulings around it.
`layout_targets(table, word_cells, inputs)`: each word's grid head labels (`layout_grid.grid_targets`).
`SynthLayoutSamples`: sample i of a seed, rendered, read by the truth reader and noised.
`collate_layout` pads a list of samples into one batch.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageDraw

from tabvlm.data.fonts import FontSet, discover_fonts
from tabvlm.data.noise import NoiseConfig, add_reader_noise
from tabvlm.data.render import RenderConfig, make_sample
from tabvlm.data.synth import SynthConfig
from tabvlm.errors import ConfigError, DataError, TableError
from tabvlm.image import resize_to_fit
from tabvlm.layout_grid import GRID_FIELDS, grid_targets
from tabvlm.model.layout import RULE_BINS, LayoutConfig
from tabvlm.read.truth import truth_words
from tabvlm.read.words import Word, is_cjk_char, line_groups, reading_order, split_text
from tabvlm.tables.grid import Table
from tabvlm.tokenizer import TableTokenizer

if TYPE_CHECKING:
    from tabvlm.data.shards import ShardSample

MAX_WORD_TOKENS = 8  # a word's text embedding averages at most its first 8 token ids


@dataclass
class LayoutInputs:
    pixels: torch.Tensor  # (1,S,S) uint8 gray
    boxes: torch.Tensor  # (W,4) float, share of the image's longer side
    text_ids: list[list[int]]
    lines: torch.Tensor | None = None  # (W,) long: each word's visual line (`grid_hints`)
    bands: torch.Tensor | None = None  # (W,) long: each word's column band
    # (W, 4) long: quantised space above / below (`vertical_gaps`), left / right (`horizontal_gaps`)
    gaps: torch.Tensor | None = None
    rules: torch.Tensor | None = (
        None  # (W, 4) long: ink of a ruling above / below / left / right (`ruling_marks`)
    )


GAP_BINS = 32  # gaps in eighths of a word's height, 0 .. 4 heights; bin GAP_BINS: nothing there


def vertical_gaps(words: Sequence[Word]) -> np.ndarray:
    """(W, 2): for each word, the space to the nearest word above and below it that overlaps it
    in x, in eighths of its height (GAP_BINS: none). A cell's next line sits closer than the next
    row's text (cell padding, a ruling between): the model learns the threshold per table."""
    if not words:
        return np.zeros((0, 2), np.int64)
    b = np.array([w.box for w in words], np.float32)  # (W,4)
    h = np.maximum(1.0, b[:, 3] - b[:, 1])
    overlap = (b[:, None, 0] < b[None, :, 2]) & (b[None, :, 0] < b[:, None, 2])  # (i, j)
    down = b[None, :, 1] - b[:, None, 3]  # from i's bottom to j's top
    out = np.full((len(words), 2), GAP_BINS, np.int64)
    for col, dist in ((0, down.T), (1, down)):  # above: j's bottom to i's top
        valid = overlap & (dist > -0.3 * h[:, None]) & ~np.eye(len(words), dtype=bool)
        best = np.where(valid, dist, np.inf).min(1)
        found = np.isfinite(best)
        out[found, col] = np.clip(np.round(np.maximum(best[found], 0) / h[found] * 8), 0, GAP_BINS - 1)
    return out


def side_gaps(words: Sequence[Word], lines: Sequence[int]) -> np.ndarray:
    """(W, 2) float: for each word, the space in pixels to the nearest word left and right of it
    on its visual line (`grid_hints`; inf: none)."""
    out = np.full((len(words), 2), np.inf)
    by_line: dict[int, list[int]] = {}
    for i, k in enumerate(lines):
        by_line.setdefault(k, []).append(i)
    for members in by_line.values():
        members.sort(key=lambda i: words[i].box[0])
        for i, j in zip(members, members[1:]):
            out[i, 1] = out[j, 0] = max(0.0, words[j].box[0] - words[i].box[2])
    return out


def horizontal_gaps(
    words: Sequence[Word], lines: Sequence[int], sides: np.ndarray | None = None
) -> np.ndarray:
    """(W, 2): for each word, the space to the nearest word left and right of it on its visual
    line (`side_gaps`, or `sides` already computed), in eighths of its height (GAP_BINS: none). A
    word space inside a cell's text is a fraction of a height, a gap between columns several:
    where a header's words make column bands of their own (its text wider than the column's
    data), this says the bands hold one phrase."""
    sides = side_gaps(words, lines) if sides is None else sides
    out = np.full((len(words), 2), GAP_BINS, np.int64)
    for w, word in enumerate(words):
        h = max(1.0, word.box[3] - word.box[1])
        for col in (0, 1):
            if np.isfinite(sides[w, col]):
                out[w, col] = min(GAP_BINS - 1, round(sides[w, col] / h * 8))
    return out


def ruling_marks(
    gray: np.ndarray,
    words: Sequence[Word],
    lines: Sequence[int],
    gaps: np.ndarray,
    sides: np.ndarray | None = None,
) -> np.ndarray:
    """(W, 4): for each word, how much of a ruling lies above, below, left and right of it: the
    darkest single pixel row (above / below) or column (left / right) in a strip along that edge,
    as the share of dark pixels over the word's span widened by half a height each way, in
    RULE_BINS bins. The strip reaches from a third of a height inside the box (PP-OCRv6's boxes
    are taller than the text and often take in the rule beside it) out to the neighbouring word,
    at most one height. A rule runs past the word, so it covers the widened span; the word's own
    strokes cover much less of it. A ruling between two lines says "a new row" where the gap
    alone cannot (real rows sit as close as a cell's own lines); the pooled image tokens are too
    coarse to show a one-pixel rule. `lines` and `gaps` are the words' `grid_hints` lines and
    `vertical_gaps` (eighths of a height; GAP_BINS: none), `sides` their `side_gaps` (computed
    from `lines` when not given)."""
    out = np.zeros((len(words), 4), np.int64)
    if not words:
        return out
    ink = gray < 140  # (H, W) bool
    H, Wd = ink.shape
    b = np.array([w.box for w in words], np.float32)
    h = np.maximum(1.0, b[:, 3] - b[:, 1])
    sides = side_gaps(words, lines) if sides is None else sides

    def darkest(r0: float, r1: float, c0: float, c1: float, axis: int) -> float:
        """The largest share of dark pixels along one row (axis 1) or column (axis 0) of the
        clipped rectangle rows r0..r1, columns c0..c1."""
        r0, r1 = max(0, int(r0)), min(H, int(np.ceil(r1)))
        c0, c1 = max(0, int(c0)), min(Wd, int(np.ceil(c1)))
        if r1 <= r0 or c1 <= c0:
            return 0.0
        return float(ink[r0:r1, c0:c1].mean(axis=axis).max())

    for i in range(len(words)):
        x0, y0, x1, y1 = (float(v) for v in b[i])
        hi = float(h[i])
        inner = hi / 3
        up = hi if gaps[i, 0] == GAP_BINS else gaps[i, 0] * hi / 8
        down = hi if gaps[i, 1] == GAP_BINS else gaps[i, 1] * hi / 8
        lg, rg = min(hi, float(sides[i, 0])), min(hi, float(sides[i, 1]))
        xa, xb = x0 - hi / 2, x1 + hi / 2  # the widened spans
        ya, yb = y0 - hi / 2, y1 + hi / 2
        vals = (
            darkest(y0 - up, y0 + inner, xa, xb, 1),
            darkest(y1 - inner, y1 + down, xa, xb, 1),
            darkest(ya, yb, x0 - lg, x0 + inner / 2, 0),
            darkest(ya, yb, x1 - inner / 2, x1 + rg, 0),
        )
        out[i] = [min(RULE_BINS - 1, int(v * (RULE_BINS - 1) / 0.9)) for v in vals]
    return out


def grid_hints(words: Sequence[Word]) -> tuple[list[int], list[int]]:
    """Where each word sits in a first guess of the grid, from geometry alone (no learning):
    its visual line (`line_groups`, top to bottom) and its column band (left to right). Bands
    are the runs of x covered by the words, split at x positions that almost no line covers:
    a gap covered by at most a tenth of the lines (a header spanning two columns, say) still
    splits. The model reads these as hints beside the boxes; it learns where they are wrong
    (multi-line cells, spans, ragged columns)."""
    n = len(words)
    if not n:
        return [], []
    line_of = [0] * n
    groups = line_groups(words)
    for k, line in enumerate(groups):
        for i in line:
            line_of[i] = k
    x0 = min(w.box[0] for w in words)
    x1 = max(w.box[2] for w in words)
    bins = 512
    scale = bins / max(1e-6, x1 - x0)
    cover = np.zeros(bins + 1, np.int32)
    for line in groups:  # coverage counted once per line, so a long line counts as one
        hit = np.zeros(bins + 1, bool)
        for i in line:
            a, b = int((words[i].box[0] - x0) * scale), int(np.ceil((words[i].box[2] - x0) * scale))
            hit[a : max(a + 1, b)] = True
        cover += hit
    gap = cover <= len(groups) // 10
    band_at = np.cumsum(np.diff(gap.astype(np.int8), prepend=1) == -1) - 1  # band index of each bin
    band_of = []
    for w in words:
        c = int(((w.box[0] + w.box[2]) / 2 - x0) * scale)
        band_of.append(max(0, int(band_at[min(bins, max(0, c))])))
    return line_of, band_of


@dataclass
class LayoutTargets:
    grid: list[list[int]] = field(
        default_factory=list
    )  # per word: the grid head's labels (`layout_grid.grid_targets`); none at inference


@dataclass
class LayoutSample:
    inputs: LayoutInputs
    targets: LayoutTargets
    words: list[Word] = field(default_factory=list)


def encode_inputs(
    image: Image.Image, words: Sequence[Word], cfg: LayoutConfig, tokenizer: TableTokenizer
) -> LayoutInputs:
    """The model's view of a page and its words (see the module docstring)."""
    w, h = image.size
    side = max(w, h)
    small = resize_to_fit(image, cfg.image_size).convert("L")
    canvas = np.full((cfg.image_size, cfg.image_size), 255, np.uint8)
    arr = np.asarray(small)
    canvas[: arr.shape[0], : arr.shape[1]] = arr
    boxes = torch.tensor([list(wd.box) for wd in words], dtype=torch.float32).reshape(-1, 4) / side
    ids = tokenizer.encode_batch([wd.text for wd in words]) if words else []
    lines, bands = grid_hints(words)
    sides = side_gaps(words, lines)
    gaps = np.concatenate([vertical_gaps(words), horizontal_gaps(words, lines, sides)], 1)
    return LayoutInputs(
        torch.from_numpy(canvas)[None],
        boxes.clamp(0, 1),
        [i[:MAX_WORD_TOKENS] for i in ids],
        torch.tensor(lines, dtype=torch.long),
        torch.tensor(bands, dtype=torch.long),
        torch.from_numpy(gaps),
        torch.from_numpy(ruling_marks(np.asarray(image.convert("L")), words, lines, gaps, sides)),
    )


def layout_targets(table: Table, word_cells: Sequence[int], inputs: LayoutInputs) -> LayoutTargets:
    """The grid head's labels of each word of a page: `word_cells` are indices in table.cells
    (-1: outside the table), `inputs` the page's (their grid hints)."""
    grid = (
        grid_targets(table, word_cells, inputs.lines.tolist(), inputs.bands.tolist())
        if inputs.lines is not None
        else []
    )
    return LayoutTargets(grid)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def collate_layout(samples: Sequence[LayoutSample], pad_to: int = 1) -> dict[str, torch.Tensor]:
    """Pad samples into one batch: the model's `grid_logits` keywords plus `grid_targets`
    (IGNORE -100 at padding). `pad_to` rounds the word length up (training: fewer distinct
    shapes for the CPU kernels' caches)."""
    B = len(samples)
    W = _round_up(max(1, max(len(s.inputs.text_ids) for s in samples)), pad_to)
    pixels = torch.stack([s.inputs.pixels for s in samples]).float() / 255.0
    boxes = torch.zeros(B, W, 4)
    word_mask = torch.zeros(B, W, dtype=torch.bool)
    lines = torch.zeros(B, W, dtype=torch.long)
    bands = torch.zeros(B, W, dtype=torch.long)
    gaps = torch.full((B, W, 4), GAP_BINS, dtype=torch.long)
    rules = torch.zeros(B, W, 4, dtype=torch.long)
    grid_labels = torch.full((B, W, len(GRID_FIELDS)), -100, dtype=torch.long)
    flat: list[int] = []
    offsets: list[int] = []
    for b, s in enumerate(samples):
        n = len(s.inputs.text_ids)
        boxes[b, :n] = s.inputs.boxes
        word_mask[b, :n] = True
        if s.inputs.lines is not None and n:
            lines[b, :n] = s.inputs.lines
            bands[b, :n] = s.inputs.bands
        if s.inputs.gaps is not None and n:
            gaps[b, :n] = s.inputs.gaps
        if s.inputs.rules is not None and n:
            rules[b, :n] = s.inputs.rules
        if s.targets.grid and n:
            grid_labels[b, :n] = torch.tensor(s.targets.grid, dtype=torch.long)
        for k in range(W):
            offsets.append(len(flat))
            if k < n:
                flat.extend(s.inputs.text_ids[k])
    return {
        "pixels": pixels,
        "boxes": boxes,
        "word_mask": word_mask,
        "lines": lines,
        "bands": bands,
        "gaps": gaps,
        "rules": rules,
        "text_ids": torch.tensor(flat, dtype=torch.long),
        "text_offsets": torch.tensor(offsets, dtype=torch.long),
        "grid_targets": grid_labels,
    }


@dataclass
class LayoutDataConfig:
    """The synthetic stream of the layout stage."""

    seed: int = 0
    synth: SynthConfig = field(default_factory=SynthConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    noise_rate: float = 0.9  # share of samples whose words get reader noise (the rest: the truth)
    # User records (jsonl of image + HTML answer, e.g. PaddleOCR-VL fine-tuning data): words from
    # the reader (cached: read once), cells by aligning their text (tabvlm.data.align).
    files: list[str] = field(default_factory=list)
    files_ratio: float = 0.0  # share of samples drawn from `files`
    reader: str = "ppocr"
    read_cache: str | None = None  # a folder: the reader's words of each record image, kept on disk
    # Pre-rendered samples (`tabvlm synth --renderer browser --shard-size K`: the browser families,
    # whose pages look like documents): globs of .tar shards and their share of the samples.
    shards: list[str] = field(default_factory=list)
    shard_ratio: float = 0.0
    # The shards' words: "truth" (the drawing's, with reader noise as `noise_rate` says) or
    # "reader" (`reader`'s words, kept in `read_cache` by scripts/read_shards.py; each put into
    # the cell whose true words its box covers most).
    shard_words: str = "truth"
    # A caption above and / or a note below a PIL table, as on a page crop: words outside the table.
    page_text_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("files_ratio", "shard_ratio", "page_text_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:  # also false for nan
                raise ConfigError(f"data.{name}: expected a share in [0, 1], found {getattr(self, name)}")
        if self.files_ratio + self.shard_ratio > 1.0:
            raise ConfigError(
                f"data.files_ratio + data.shard_ratio: expected at most 1, found {self.files_ratio + self.shard_ratio}"
            )
        if self.files_ratio > 0 and not self.files:
            raise ConfigError("data.files_ratio > 0 but data.files is empty")
        if self.shard_words not in ("truth", "reader"):
            raise ConfigError(f"data.shard_words: expected 'truth' or 'reader', found {self.shard_words!r}")
        if self.shard_words == "reader" and not self.read_cache:
            raise ConfigError(
                "data.shard_words: reader needs data.read_cache (scripts/read_shards.py fills it)"
            )
        if self.shard_ratio > 0 and not self.shards:
            raise ConfigError("data.shard_ratio > 0 but data.shards is empty: name the shard files (globs)")


def layout_sample(
    table: Table,
    image: Image.Image,
    words: list[Word],
    cells: list[int],
    cfg: LayoutConfig,
    tokenizer: TableTokenizer,
) -> LayoutSample:
    """A page (`raw` of a sample source: grid, image, words, their cells) as inputs and targets."""
    inputs = encode_inputs(image, words, cfg, tokenizer)
    return LayoutSample(inputs, layout_targets(table, cells, inputs), words)


def noised(
    words: list[Word], cells: list[int], rng: random.Random, cfg: LayoutDataConfig
) -> tuple[list[Word], list[int]]:
    """The true words with reader noise on `cfg.noise_rate` of the pages (drawn from `rng`)."""
    if rng.random() < cfg.noise_rate:
        return add_reader_noise(words, cells, rng, cfg.noise)
    return words, cells


class RecordLayoutSamples:
    """Layout samples from canonical records (image + HTML answer): the reader's words of the
    image, each put into a cell by `align_words`. Records are read once, at construction."""

    def __init__(
        self,
        files: Sequence[str],
        model_cfg: LayoutConfig,
        tokenizer: TableTokenizer,
        reader: str = "ppocr",
        read_cache: str | None = None,
    ):
        from tabvlm.data.records import read_records
        from tabvlm.read.cache import WordCache

        self.records = [r for f in files for r in read_records(f)]
        if not self.records:
            raise DataError(f"no records in {list(files)}")
        self.model_cfg, self.tokenizer, self.reader = model_cfg, tokenizer, reader
        self.cache = WordCache(folder=read_cache) if read_cache else True

    def __len__(self) -> int:
        return len(self.records)

    def raw(self, index: int) -> tuple[Table, Image.Image, list[Word], list[int]]:
        from tabvlm.data.align import align_words
        from tabvlm.image import load_image
        from tabvlm.read import read_words
        from tabvlm.tables.html import parse_html

        rec = self.records[index]
        if rec.image is None:
            raise DataError("a layout record needs an image", rec.file, rec.line)
        try:
            table = parse_html(rec.answer)
        except TableError as e:
            raise DataError(f"the answer holds no table: {e}", rec.file, rec.line) from e
        image = load_image(rec.image)
        words = read_words(image, self.reader, name=str(rec.image), cache=self.cache)
        return table, image, words, align_words(words, table)

    def __getitem__(self, index: int) -> LayoutSample:
        return layout_sample(*self.raw(index), self.model_cfg, self.tokenizer)


class ShardLayoutSamples:
    """Layout samples from pre-rendered shards (`tabvlm.data.shards`): the drawing's true words
    and cells, with reader noise as `SynthLayoutSamples` adds it, or (`shard_words: reader`) the
    reader's words of the image, each in the cell whose true words it covers. Sample i is shard
    sample i mod n; one that exceeds the model's limits gives way to the next."""

    def __init__(self, cfg: LayoutDataConfig, model_cfg: LayoutConfig, tokenizer: TableTokenizer):
        from tabvlm.data.shards import ShardReader, expand_shards
        from tabvlm.read.cache import WordCache

        self.cfg, self.model_cfg, self.tokenizer = cfg, model_cfg, tokenizer
        self.reader = ShardReader(expand_shards(cfg.shards))
        self.cache = WordCache(max_items=0, folder=cfg.read_cache) if cfg.read_cache else None

    def _words(self, s: ShardSample, index: int, attempt: int) -> tuple[list[Word], list[int]]:
        from tabvlm.data.align import cells_by_overlap
        from tabvlm.read import read_words

        words, cells = truth_words(s.rendered, s.table)
        if self.cfg.shard_words == "reader":
            read = read_words(s.rendered.image, self.cfg.reader, name=s.key, cache=self.cache)
            return read, cells_by_overlap(read, words, cells)
        rng = random.Random(f"shard-noise:{self.cfg.seed}:{index}:{attempt}")
        return noised(words, cells, rng, self.cfg)

    def __len__(self) -> int:
        return len(self.reader)

    def raw(self, index: int) -> tuple[Table, Image.Image, list[Word], list[int]]:
        n = len(self.reader)
        for attempt in range(min(n, 20)):
            s = self.reader[(index + attempt) % n]
            words, cells = self._words(s, index, attempt)
            if fits_model(s.table, words, self.model_cfg):
                return s.table, s.rendered.image, words, cells
        raise DataError(
            f"shard sample {index}: 20 samples in a row exceed the model's limits", self.reader.paths[0]
        )

    def __getitem__(self, index: int) -> LayoutSample:
        return layout_sample(*self.raw(index), self.model_cfg, self.tokenizer)


_CAPTION_HEADS = {"en": ("Table", "TABLE", "Tab."), "zh": ("表", "续表")}
_NOTE_HEADS = {"en": ("Note:", "Source:", "*", "a", "Notes:"), "zh": ("注：", "资料来源：", "*")}


def add_page_text(
    image: Image.Image,
    words: list[Word],
    cells: list[int],
    table: Table,
    rng: random.Random,
    fonts: FontSet,
) -> tuple[Image.Image, list[Word], list[int]]:
    """The page grown by a caption above and / or a note below the table, as a crop of a page
    shows them, and their words (cell -1: outside the table), in reading order with the rest.
    The text is drawn from the table's own words, so it looks like the page's language."""
    pool = [w for c in table.cells if c.text for w in split_text(c.text)] or ["Table"]
    zh = any(is_cjk_char(ch) for t in pool for ch in t)
    faces = fonts.of_kind("cjk") if zh and fonts.has_cjk else [f for f in fonts.faces if f.kind != "cjk"]
    face = rng.choice(faces or list(fonts.faces))
    heights = sorted(w.box[3] - w.box[1] for w in words)
    size = max(8, int((heights[len(heights) // 2] if heights else 16) * rng.uniform(0.7, 1.0)))
    font = fonts.font(face, size, bold=rng.random() < 0.3)
    ascent, descent = font.getmetrics()
    line_h = ascent + descent
    W, H = image.size
    lang = "zh" if zh else "en"

    def line(head: str) -> list[str]:
        n = rng.randint(2, 12)
        return [head] + [rng.choice(pool) for _ in range(n)]

    above = [line(f"{rng.choice(_CAPTION_HEADS[lang])} {rng.randint(1, 12)}")] if rng.random() < 0.7 else []
    below = [line(rng.choice(_NOTE_HEADS[lang])) for _ in range(rng.choice((0, 1, 1, 2)))]
    if not above and not below:
        below = [line(rng.choice(_NOTE_HEADS[lang]))]
    gap = int(line_h * rng.uniform(0.3, 1.5))
    top = (line_h * 1.3 * len(above) + gap) if above else 0
    bottom = (line_h * 1.3 * len(below) + gap) if below else 0
    page = Image.new("RGB", (W, int(H + top + bottom)), image.getpixel((0, 0)))
    page.paste(image, (0, int(top)))
    draw = ImageDraw.Draw(page)
    space = font.getlength(" ")
    shifted = [
        Word(w.text, (w.box[0], w.box[1] + int(top), w.box[2], w.box[3] + int(top)), w.score) for w in words
    ]
    extra: list[Word] = []
    for k, parts in enumerate(above + below):
        y = k * line_h * 1.3 if k < len(above) else int(top) + H + gap + (k - len(above)) * line_h * 1.3
        x = rng.uniform(0, 0.1) * W
        for part in parts:
            for piece in split_text(part):
                width = font.getlength(piece)
                if x + width > W - 2:
                    break
                draw.text((x, y), piece, font=font, fill=(30, 30, 30))
                extra.append(Word(piece, (x, y, x + width, y + line_h)))
                x += width + (0 if zh and is_cjk_char(piece[-1]) else space)
    all_words = shifted + extra
    all_cells = list(cells) + [-1] * len(extra)
    order = reading_order(all_words)
    return page, [all_words[i] for i in order], [all_cells[i] for i in order]


def fits_model(table: Table, words: Sequence[Word], m: LayoutConfig) -> bool:
    """Whether a page's words and grid fit the model's limits (words, OTSL tags, rows, columns)."""
    n_tags = table.n_rows * (table.n_cols + 1) + 1
    return (
        len(words) <= m.max_words
        and n_tags <= m.max_tags
        and table.n_rows <= m.max_rows
        and table.n_cols <= m.max_cols
    )


class LayoutSamples:
    """The training stream: sample i is a user record with probability `files_ratio` (records in
    a fresh shuffle each pass, from `records:{seed}:{pass}`), a shard sample with probability
    `shard_ratio`, else synthetic sample i."""

    def __init__(self, cfg: LayoutDataConfig, model_cfg: LayoutConfig, tokenizer: TableTokenizer):
        self.cfg = cfg
        self.synth = SynthLayoutSamples(cfg, model_cfg, tokenizer)
        self.records = (
            RecordLayoutSamples(cfg.files, model_cfg, tokenizer, cfg.reader, cfg.read_cache)
            if cfg.files_ratio > 0
            else None
        )
        self.shards = ShardLayoutSamples(cfg, model_cfg, tokenizer) if cfg.shard_ratio > 0 else None

    @functools.lru_cache(maxsize=2)  # noqa: B019 (one stream per trainer; a pass's shuffle, made once)
    def _order(self, epoch: int) -> list[int]:
        order = list(range(len(self.records)))
        random.Random(f"records:{self.cfg.seed}:{epoch}").shuffle(order)
        return order

    def __getitem__(self, index: int) -> LayoutSample:
        u = random.Random(f"source:{self.cfg.seed}:{index}").random()
        if self.records is not None and u < self.cfg.files_ratio:
            n = len(self.records)
            k = int(index * self.cfg.files_ratio)  # the k-th record drawn, roughly: passes advance with i
            return self.records[self._order(k // n)[k % n]]
        if self.shards is not None and u < self.cfg.files_ratio + self.cfg.shard_ratio:
            return self.shards[int(index * self.cfg.shard_ratio)]  # the k-th shard sample drawn, roughly
        return self.synth[index]


class SynthLayoutSamples:
    """Sample i of `cfg.seed`: the grid and drawing of `render.make_sample`, its true words and
    cells, reader noise from the `noise:{seed}:{i}` stream. A sample whose words or tags exceed
    the model's limits is redrawn (next attempt), so every index gives a usable sample."""

    def __init__(
        self,
        cfg: LayoutDataConfig,
        model_cfg: LayoutConfig,
        tokenizer: TableTokenizer,
        fonts: FontSet | None = None,
    ):
        self.cfg = cfg
        self.model_cfg = model_cfg
        self.tokenizer = tokenizer
        self.fonts = (
            fonts
            if fonts is not None
            else discover_fonts(cfg.render.font_dirs, cfg.render.use_system_fonts, need_cjk=True)
        )

    def raw(self, index: int) -> tuple[Table, Image.Image, list[Word], list[int]]:
        """The grid, image, (noised) words and their cells of sample `index`."""
        cfg, m = self.cfg, self.model_cfg
        for attempt in range(20):
            table, rendered = make_sample(cfg.seed, index, cfg.synth, cfg.render, self.fonts, attempt)
            words, cells = truth_words(rendered, table)
            rng = random.Random(f"noise:{cfg.seed}:{index}:{attempt}")
            words, cells = noised(words, cells, rng, cfg)
            image = rendered.image
            if cfg.page_text_rate and rng.random() < cfg.page_text_rate:
                image, words, cells = add_page_text(image, words, cells, table, rng, self.fonts)
            if fits_model(table, words, m):
                return table, image, words, cells
        raise RuntimeError(
            f"sample {index}: 20 draws exceeded the model's limits; lower synth.max_rows / max_cols"
        )

    def __getitem__(self, index: int) -> LayoutSample:
        return layout_sample(*self.raw(index), self.model_cfg, self.tokenizer)
