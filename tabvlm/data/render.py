"""Draw a table grid as an image: `render(table, rng, cfg, fonts) -> Rendered`.

Layout first, then paint. Every cell's text is measured (long text wraps within a random maximum
column width), column widths and row heights grow to fit their cells (spanning cells spread what
they lack over the slots they cover), and if the table comes out too wide or tall the font shrinks
and the layout is redone, so the image stays 300-1600 px wide by default. Text is drawn at its
final size, inside its own cell's box: the cell boxes returned are the ground truth of where each
cell is, and the text boxes of where its text is.

Styles: full grid lines, three-line academic (booktabs), no lines, zebra stripes, header
underline only, horizontal rules only; fonts of each class (serif, sans, mono, CJK), sizes,
padding, alignment (numbers often right-aligned), bold or shaded headers, tinted backgrounds,
line widths and colours. Degradations, each with its own probability: slight rotation,
downscaling, blur, noise, JPEG. Boxes follow rotation and downscaling.
"""

from __future__ import annotations

import io
import math
import random
import re
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tabvlm import config as config_io
from tabvlm.data.fonts import FontFace, FontSet, Glyphs, draws_text
from tabvlm.data.synth import SynthConfig, has_cjk, synthesize
from tabvlm.errors import ConfigError, DataError
from tabvlm.tables.grid import Table

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), x1 and y1 exclusive
STYLES = ("grid", "booktabs", "none", "zebra", "underline", "horizontal")
_NUMERIC = re.compile(r"^[-+(<>=\s$€£¥￥]*[\d.,]+[%)]?\s*(元|USD|万元)?\)?$")
# Wrap units: one CJK character, or a run of non-space non-CJK characters with its leading space.
_WRAP_TOKEN = re.compile(r"\s*[\u2e80-\u9fff\uf900-\uffef]|\s*[^\s\u2e80-\u9fff\uf900-\uffef]+")


@dataclass
class RenderConfig:
    """Controls of the renderer. Rates are probabilities in [0, 1]."""

    font_dirs: list[str] = field(default_factory=list)  # searched before $TABVLM_FONT_DIR and system folders
    use_system_fonts: bool = True
    styles: list[str] = field(default_factory=lambda: list(STYLES))
    font_size: tuple[int, int] = (12, 26)  # px, before shrinking a table to fit
    # Cell padding above and below the text, and line height, in font sizes. Real documents set
    # rows as tight as a cell's own lines (a row gap no wider than a cell's line gap) and wrap
    # long text with wide leading: (0.02, 0.6) and (1.1, 1.7) draw those too.
    pad_y: tuple[float, float] = (0.15, 0.6)
    line_em: tuple[float, float] = (1.15, 1.45)
    wrap_em: tuple[float, float] = (6, 18)  # max column content width (before the column-count scaling)
    min_font_size: int = 7
    width: tuple[int, int] = (300, 1600)  # image width bounds before degradations
    max_height: int = 2000
    margin: tuple[int, int] = (4, 48)  # page margin around the table, px
    cjk_font_rate: float = 0.1  # English tables drawn with a CJK font's Latin glyphs
    bold_header_rate: float = 0.5
    shade_header_rate: float = 0.35
    tint_rate: float = 0.15  # tinted page backgrounds
    rotate_rate: float = 0.1
    max_rotate_deg: float = 1.5
    downscale_rate: float = 0.15
    blur_rate: float = 0.15
    noise_rate: float = 0.15
    jpeg_rate: float = 0.25
    # Multi-line text cells set justified (as in typeset reports): wide, uneven word gaps inside a
    # cell, which a column-band guess splits into columns. 0 draws no extra random number, so
    # the default stream (the standard synthetic test) is unchanged.
    justify_rate: float = 0.0

    def __post_init__(self) -> None:
        unknown = [s for s in self.styles if s not in STYLES]
        if unknown or not self.styles:
            raise ConfigError(f"render.styles: expected a non-empty subset of {STYLES}, found {self.styles}")
        lo, hi = self.font_size
        if not 4 <= lo <= hi:
            raise ConfigError(f"render.font_size: expected an increasing range >= 4, found ({lo}, {hi})")
        if not 0 < self.width[0] <= self.width[1]:
            raise ConfigError(f"render.width: expected an increasing range, found {self.width}")


@dataclass
class Rendered:
    """An image of a table and where each cell (and its text) lies, aligned with table.cells."""

    image: Image.Image  # RGB
    cell_boxes: list[Box]
    text_boxes: list[Box | None]  # None for an empty cell
    style: dict
    # Every drawn character (spaces skipped) and its box: pen advance wide, line ascent + descent tall.
    glyph_boxes: list[tuple[str, Box]] = field(default_factory=list)


@dataclass
class _Look:
    """Random choices of one rendering, fixed before layout."""

    style: str
    face: FontFace
    size: int
    wrap_em: float  # max column content width, in font sizes
    pad_x: float  # paddings and line height, in font sizes
    pad_y: float
    line_em: float
    line_w: int
    bold_header: bool


def _pick_face(rng: random.Random, table: Table, fonts: FontSet, cfg: RenderConfig) -> FontFace:
    """A face that draws every character of the table (CJK text needs a CJK face)."""
    text = "".join(c.text for c in table.cells)
    cjk = fonts.of_kind("cjk")
    if has_cjk(text):
        if not cjk:
            raise DataError("the table holds Chinese text but no CJK font was found; see tabvlm.data.fonts")
        candidates = cjk
    else:
        kind = rng.choices(["latin-sans", "latin-serif", "latin-mono"], [5, 4, 1])[0]
        candidates = fonts.of_kind(kind) or [f for f in fonts.faces if f.kind != "cjk"] or cjk
        if cjk and rng.random() < cfg.cjk_font_rate:
            candidates = cjk
    order = rng.sample(candidates, len(candidates)) + [f for f in fonts.faces if f not in candidates]
    for face in order:
        if draws_text(face, text):
            return face
    missing = sorted({ch for ch in text if not any(draws_text(f, ch) for f in fonts.faces)})
    raise DataError(f"no font found draws the characters {''.join(missing)!r}")


def _wrap(text: str, glyphs: Glyphs, max_w: float) -> list[str]:
    """Greedy line breaking at spaces and between CJK characters; a long word keeps its line."""
    if not text:
        return []
    if glyphs.width(text) <= max_w:
        return [text]
    lines: list[str] = []
    line, line_w = "", 0.0
    for token in _WRAP_TOKEN.findall(text):
        tok_w = glyphs.width(token)
        if line and line_w + tok_w > max_w:
            lines.append(line)
            token = token.lstrip()
            line, line_w = token, glyphs.width(token)
        elif not line:
            token = token.lstrip()
            line, line_w = token, glyphs.width(token)
        else:
            line, line_w = line + token, line_w + tok_w
    lines.append(line)
    return lines


def _draw_line(
    alpha: np.ndarray, glyphs: Glyphs, text: str, x: int, baseline: int
) -> list[tuple[str, float, float]]:
    """Compose `text` from cached glyph bitmaps into the coverage layer `alpha` (max-blend);
    returns each drawn character with its pen span (x0, x1)."""
    pen = float(x)
    spans = []
    for ch in text:
        mask, dx, dy, advance = glyphs.get(ch)
        h, w = mask.shape
        if h and w:
            gx, gy = round(pen) + dx, baseline + dy
            region = alpha[gy : gy + h, gx : gx + w]
            np.maximum(region, mask[: region.shape[0], : region.shape[1]], out=region)
            spans.append((ch, pen, pen + advance))
        pen += advance
    return spans


@dataclass
class _Layout:
    size: int
    lines: list[list[str]]  # per cell
    widths: list[list[float]]  # per cell, per line
    col_x: list[int]  # n_cols + 1 boundaries, relative to the table's left edge
    row_y: list[int]
    pad_x: int
    pad_y: int
    line_h: int
    ascent: int
    descent: int


def _spread(sizes: list[int], lo: int, hi: int, need: int) -> None:
    """Grow sizes[lo:hi] so their sum reaches `need`, spreading the extra evenly."""
    have = sum(sizes[lo:hi])
    if need > have:
        extra, n = need - have, hi - lo
        for i in range(lo, hi):
            sizes[i] += extra // n + (1 if i - lo < extra % n else 0)


def _snap(size: int) -> int:
    """Even sizes above 13 px: fewer (face, size) glyph caches to fill, no visible loss."""
    return size - size % 2 if size > 13 else size


def _layout(table: Table, look: _Look, fonts: FontSet, size: int) -> _Layout:
    font = fonts.glyphs(look.face, size)
    bold = fonts.glyphs(look.face, size, bold=True) if look.bold_header else font
    ascent, descent = font.font.getmetrics()
    ascent, descent = max(ascent, bold.font.getmetrics()[0]), max(descent, bold.font.getmetrics()[1])
    pad_x = max(look.line_w + 2, round(look.pad_x * size))
    pad_y = max(look.line_w + 1, round(look.pad_y * size))
    line_h = max(ascent + descent, round(look.line_em * size))
    wrap_w = look.wrap_em * size
    lines, widths = [], []
    for cell in table.cells:
        f = bold if cell.row < table.header_rows else font
        ls = _wrap(cell.text, f, wrap_w * cell.colspan)
        lines.append(ls)
        widths.append([f.width(s) for s in ls])
    col_w = [2 * pad_x + size // 2] * table.n_cols
    row_h = [2 * pad_y + line_h] * table.n_rows
    # Single slots first, then spanning cells (small spans before large) spread what they lack.
    order = sorted(range(len(table.cells)), key=lambda i: table.cells[i].colspan)
    for i in order:
        c = table.cells[i]
        _spread(col_w, c.col, c.end_col, math.ceil(max(widths[i], default=0)) + 2 * pad_x)
    for i in sorted(range(len(table.cells)), key=lambda i: table.cells[i].rowspan):
        c = table.cells[i]
        _spread(row_h, c.row, c.end_row, max(1, len(lines[i])) * line_h + 2 * pad_y)
    col_x, row_y = [0], [0]
    for w in col_w:
        col_x.append(col_x[-1] + w)
    for h in row_h:
        row_y.append(row_y[-1] + h)
    return _Layout(size, lines, widths, col_x, row_y, pad_x, pad_y, line_h, ascent, descent)


def _fit(table: Table, look: _Look, fonts: FontSet, cfg: RenderConfig, margin: int) -> _Layout:
    """Lay out, shrinking the font until the table fits the width and height bounds (and growing
    it once when the table is smaller than the minimum width)."""
    size = _snap(look.size)
    lay = _layout(table, look, fonts, size)
    max_w, max_h = cfg.width[1] - 2 * margin, cfg.max_height - 2 * margin
    for _ in range(2):
        # Tall and narrow (long text wrapped many times): wrap wider, the model sees a square.
        if lay.row_y[-1] <= 1.4 * lay.col_x[-1] or not any(len(ls) > 1 for ls in lay.lines):
            break
        look.wrap_em *= 1.7
        lay = _layout(table, look, fonts, size)
    for _ in range(6):
        scale = min(max_w / lay.col_x[-1], max_h / lay.row_y[-1])
        if scale >= 1 or size <= cfg.min_font_size:
            break
        size = max(cfg.min_font_size, _snap(min(size - 1, int(size * scale))))
        lay = _layout(table, look, fonts, size)
    grow = (cfg.width[0] - 2 * margin) / lay.col_x[-1]
    if grow > 1.1 and size < cfg.font_size[1]:
        bigger = _snap(min(cfg.font_size[1], int(size * grow)))
        if bigger > size:
            cand = _layout(table, look, fonts, bigger)
            if cand.col_x[-1] <= max_w and cand.row_y[-1] <= max_h:
                lay = cand
    return lay


def _rgb(rng: random.Random, lo: int, hi: int) -> tuple[int, int, int]:
    base = rng.randint(lo, hi)
    return tuple(min(255, max(0, base + rng.randint(-12, 12))) for _ in range(3))  # type: ignore[return-value]


def _hline(draw: ImageDraw.ImageDraw, x0: int, x1: int, y: int, w: int, color: tuple) -> None:
    """A horizontal rule of thickness w centred on boundary y (filled rectangle: exact pixels)."""
    top = y - w // 2
    draw.rectangle((x0 - w // 2, top, x1 + (w - 1) // 2, top + w - 1), fill=color)


def _vline(draw: ImageDraw.ImageDraw, y0: int, y1: int, x: int, w: int, color: tuple) -> None:
    left = x - w // 2
    draw.rectangle((left, y0 - w // 2, left + w - 1, y1 + (w - 1) // 2), fill=color)


def _rotate(img: Image.Image, boxes: list[Box], angle: float, fill: tuple) -> tuple[Image.Image, list[Box]]:
    """Rotate counter-clockwise by `angle` degrees with expansion; boxes become the axis-aligned
    boxes around their rotated corners."""
    w, h = img.size
    out = img.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=fill)
    nw, nh = out.size
    a = math.radians(angle)
    cos, sin = math.cos(a), math.sin(a)

    def move(x: float, y: float) -> tuple[float, float]:
        dx, dy = x - w / 2, y - h / 2
        return cos * dx + sin * dy + nw / 2, -sin * dx + cos * dy + nh / 2

    new = []
    for x0, y0, x1, y1 in boxes:
        pts = [move(x, y) for x, y in ((x0, y0), (x1, y0), (x0, y1), (x1, y1))]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        new.append((max(0, math.floor(min(xs))), max(0, math.floor(min(ys))),
                    min(nw, math.ceil(max(xs))), min(nh, math.ceil(max(ys)))))  # fmt: skip
    return out, new


def _scale(boxes: list[Box], fx: float, fy: float) -> list[Box]:
    return [(math.floor(x0 * fx), math.floor(y0 * fy), math.ceil(x1 * fx), math.ceil(y1 * fy))
            for x0, y0, x1, y1 in boxes]  # fmt: skip


def render(table: Table, rng: random.Random, cfg: RenderConfig, fonts: FontSet) -> Rendered:
    """Draw `table` with random style choices from `rng`; boxes are aligned with table.cells."""
    header = table.header_rows
    style = rng.choice(cfg.styles)
    look = _Look(
        style=style,
        face=_pick_face(rng, table, fonts, cfg),
        size=rng.randint(*cfg.font_size),
        wrap_em=rng.uniform(*cfg.wrap_em) * min(1.0, 8 / max(1, table.n_cols)) + 4,
        pad_x=rng.uniform(0.25, 0.9),
        pad_y=rng.uniform(*cfg.pad_y),
        line_em=rng.uniform(*cfg.line_em),
        line_w=rng.choice([1, 1, 1, 2, 2, 3]),
        bold_header=header > 0 and rng.random() < cfg.bold_header_rate,
    )
    margin = rng.randint(*cfg.margin)
    lay = _fit(table, look, fonts, cfg, margin)
    font = fonts.glyphs(look.face, lay.size)
    head_font = fonts.glyphs(look.face, lay.size, bold=True) if look.bold_header else font

    # Colours: mostly white pages and dark ink; sometimes tints; shaded headers light or dark.
    tinted = rng.random() < cfg.tint_rate
    page = _rgb(rng, 225, 250) if tinted else (255, 255, 255)
    ink = _rgb(rng, 0, 60)
    rule = ink if rng.random() < 0.6 else _rgb(rng, 60, 160)
    head_fill = head_ink = None
    if header and rng.random() < cfg.shade_header_rate:
        if rng.random() < 0.3:
            head_fill, head_ink = _rgb(rng, 40, 110), (255, 255, 255)
        else:
            head_fill = tuple(rng.randint(200, 240) for _ in range(3))
    stripe = tuple(max(0, v - rng.randint(12, 30)) for v in page) if style == "zebra" else None

    tw, th = lay.col_x[-1], lay.row_y[-1]
    width = max(cfg.width[0], tw + 2 * margin)
    height = max(th + 2 * margin, min(cfg.max_height, th + 2 * margin + rng.randint(0, margin)))
    left = margin + rng.randint(0, width - tw - 2 * margin)
    top = margin
    img = Image.new("RGB", (width, height), page)
    draw = ImageDraw.Draw(img)

    boxes: list[Box] = []
    for c in table.cells:
        boxes.append((left + lay.col_x[c.col], top + lay.row_y[c.row],
                      left + lay.col_x[c.end_col], top + lay.row_y[c.end_row]))  # fmt: skip

    # Fills under everything.
    for c, (x0, y0, x1, y1) in zip(table.cells, boxes):
        fill = None
        if c.row < header and head_fill:
            fill = head_fill
        elif stripe and c.row >= header and (c.row - header) % 2 == 1:
            fill = stripe
        if fill:
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)

    # Rules.
    lw = look.line_w
    x_l, x_r, y_t, y_b = left, left + tw, top, top + th
    y_h = top + lay.row_y[header]
    if style == "grid":
        _hline(draw, x_l, x_r, y_t, lw, rule)
        _vline(draw, y_t, y_b, x_l, lw, rule)
        for x0, y0, x1, y1 in boxes:
            _hline(draw, x0, x1, y1, lw, rule)
            _vline(draw, y0, y1, x1, lw, rule)
    elif style == "booktabs":
        heavy = lw + 1
        _hline(draw, x_l, x_r, y_t, heavy, rule)
        _hline(draw, x_l, x_r, y_b, heavy, rule)
        if header:
            _hline(draw, x_l, x_r, y_h, lw, rule)
        for c, (x0, _, x1, y1) in zip(table.cells, boxes):
            if c.colspan > 1 and c.end_row < header:  # cmidrule under a grouped header
                _hline(draw, x0 + lay.pad_x // 2, x1 - lay.pad_x // 2, y1, 1, rule)
    elif style in ("underline", "zebra"):
        if header:
            _hline(draw, x_l, x_r, y_h, lw, rule)
        if rng.random() < 0.5:
            _hline(draw, x_l, x_r, y_t, lw, rule)
            _hline(draw, x_l, x_r, y_b, lw, rule)
    elif style == "horizontal":
        _hline(draw, x_l, x_r, y_t, lw, rule)
        for x0, _, x1, y1 in boxes:
            _hline(draw, x0, x1, y1, lw, rule)

    # Text: numbers right-aligned (often), words left or centred, headers centred (often).
    num_align = rng.choices(["right", "center", "left"], [6, 3, 1])[0]
    word_align = rng.choices(["left", "center"], [7, 3])[0]
    head_align = rng.choices(["center", "left"], [6, 4])[0]
    v_align = rng.choices(["middle", "top"], [7, 3])[0]
    if cfg.justify_rate and rng.random() < cfg.justify_rate:
        word_align = "justify"
    # Text goes into coverage layers (one per ink colour), pasted over fills and rules at the end.
    layers: dict[tuple, np.ndarray] = {}
    text_boxes: list[Box | None] = []
    glyph_boxes: list[tuple[str, Box]] = []
    for i, (c, (x0, y0, x1, y1)) in enumerate(zip(table.cells, boxes)):
        lines = lay.lines[i]
        if not lines:
            text_boxes.append(None)
            continue
        is_head = c.row < header
        f = head_font if is_head else font
        color = head_ink if is_head and head_ink else ink
        if is_head or c.colspan > 1:
            align = "center" if c.colspan > 1 else head_align
        else:
            align = num_align if _NUMERIC.match(c.text) else word_align
        block_h = len(lines) * lay.line_h
        ty = y0 + lay.pad_y if v_align == "top" else y0 + (y1 - y0 - block_h) // 2
        tx0, tx1 = x1, x0
        for k, (line, lw_) in enumerate(zip(lines, lay.widths[i])):
            spread = None  # justify: the gap to add after each space of a line that is not the last
            if align == "justify" and k < len(lines) - 1 and line.count(" "):
                spread = (x1 - x0 - 2 * lay.pad_x - lw_) / line.count(" ")
            if align in ("left", "justify"):
                x = x0 + lay.pad_x
            elif align == "right":
                x = x1 - lay.pad_x - math.ceil(lw_)
            else:
                x = x0 + (x1 - x0 - math.ceil(lw_)) // 2
            baseline = ty + k * lay.line_h + (lay.line_h - lay.ascent - lay.descent) // 2 + lay.ascent
            if color not in layers:
                layers[color] = np.zeros((height, width), np.uint8)
            g_top, g_bottom = baseline - lay.ascent, baseline + lay.descent
            if spread is not None and spread > 0:
                drawn, pen = [], float(x)
                for word in line.split(" "):
                    drawn += _draw_line(layers[color], f, word, round(pen), baseline)
                    pen += f.width(word) + f.width(" ") + spread
                lw_ = x1 - x0 - 2 * lay.pad_x
            else:
                drawn = _draw_line(layers[color], f, line, x, baseline)
            for ch, gx0, gx1 in drawn:
                glyph_boxes.append((ch, (math.floor(gx0), g_top, math.ceil(gx1), g_bottom)))
            tx0, tx1 = min(tx0, x), max(tx1, x + math.ceil(lw_))
        text_boxes.append((tx0, ty, tx1, ty + block_h))
    for color, alpha in layers.items():
        img.paste(color, (0, 0, width, height), Image.fromarray(alpha))

    # Degradations (each with its own probability); boxes follow the geometry.
    applied: list[str] = []
    if rng.random() < cfg.rotate_rate:
        angle = rng.uniform(-cfg.max_rotate_deg, cfg.max_rotate_deg)
        texts = [b for b in text_boxes if b]
        img, both = _rotate(img, boxes + texts + [b for _, b in glyph_boxes], angle, page)
        boxes, rest = both[: len(boxes)], iter(both[len(boxes) : len(boxes) + len(texts)])
        text_boxes = [next(rest) if b else None for b in text_boxes]
        glyph_boxes = [(ch, b) for (ch, _), b in zip(glyph_boxes, both[len(boxes) + len(texts) :])]
        applied.append(f"rotate:{angle:.2f}")
    if rng.random() < cfg.downscale_rate:
        factor = rng.uniform(0.5, 0.85)
        w, h = img.size
        nw, nh = max(1, round(w * factor)), max(1, round(h * factor))
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
        boxes = _scale(boxes, nw / w, nh / h)
        text_boxes = [_scale([b], nw / w, nh / h)[0] if b else None for b in text_boxes]
        glyph_boxes = list(
            zip([ch for ch, _ in glyph_boxes], _scale([b for _, b in glyph_boxes], nw / w, nh / h))
        )
        applied.append(f"downscale:{factor:.2f}")
    if rng.random() < cfg.blur_rate:
        radius = rng.uniform(0.3, 1.0)
        img = img.filter(ImageFilter.GaussianBlur(radius))
        applied.append(f"blur:{radius:.2f}")
    if rng.random() < cfg.noise_rate:
        sigma = rng.uniform(2, 9)
        noise_rng = np.random.default_rng(rng.getrandbits(63))  # numpy draws, seeded from rng
        arr = np.asarray(img, dtype=np.int16)
        arr = arr + noise_rng.normal(0, sigma, arr.shape[:2])[..., None].astype(np.int16)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        applied.append(f"noise:{sigma:.1f}")
    if rng.random() < cfg.jpeg_rate:
        quality = rng.randint(30, 85)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
        applied.append(f"jpeg:{quality}")

    style_info = {
        "style": style,
        "font": look.face.family,
        "font_kind": look.face.kind,
        "font_size": lay.size,
        "bold_header": look.bold_header,
        "shaded_header": head_fill is not None,
        "tinted": tinted,
        "line_width": lw,
        "degradations": applied,
    }
    return Rendered(img, boxes, text_boxes, style_info, glyph_boxes)


def sample_rngs(seed: int, index: int, attempt: int = 0) -> tuple[random.Random, random.Random]:
    """The (grid, drawing) generators of sample `index` of a run seeded `seed`: the one seeding
    scheme of synthetic samples (training, `tabvlm synth`, the web UI, the benches, shards).

    Derived from (seed, index) alone (string seeds hash with SHA-512, stable across processes),
    so any worker can make any sample; separate streams keep a sample's grid unchanged when only
    render settings change. `attempt` > 0 gives the redraws training makes of a sample whose
    target is over its max_len.
    """
    tag = f"{seed}:{index}" + (f":{attempt}" if attempt else "")
    return random.Random(f"synth:{tag}"), random.Random(f"render:{tag}")


def make_sample(
    seed: int, index: int, synth_cfg: SynthConfig, render_cfg: RenderConfig, fonts: FontSet, attempt: int = 0
) -> tuple[Table, Rendered]:
    """Sample `index` of run `seed`: a random grid and its drawing."""
    grid_rng, draw_rng = sample_rngs(seed, index, attempt)
    table = synthesize(grid_rng, synth_cfg)
    return table, render(table, draw_rng, render_cfg, fonts)


@dataclass
class Variant:
    """A share (`weight`) of a run's synthetic samples drawn with other settings: the keys of
    SynthConfig / RenderConfig that differ from the run's, e.g. a reading curriculum's small
    tables, drawn narrow so that their text comes out large after fitting to the model's input."""

    weight: float
    synth: dict = field(default_factory=dict)
    render: dict = field(default_factory=dict)


def resolve_variants(
    synth_cfg: SynthConfig, render_cfg: RenderConfig, variants: list[Variant], where: str = "variants"
) -> list[tuple[float, SynthConfig, RenderConfig]]:
    """(weight, synth, render) of each variant merged over the run's settings, then the run's own
    settings with the weight left; a bad key or weight is a ConfigError naming `where[i]`."""
    choices = []
    for i, v in enumerate(variants):
        if not 0.0 <= v.weight <= 1.0:  # also false for nan
            raise ConfigError(f"{where}[{i}].weight: expected a share in [0, 1], found {v.weight}")
        synth = _merged(synth_cfg, v.synth, f"{where}[{i}].synth")
        rend = _merged(render_cfg, v.render, f"{where}[{i}].render")
        choices.append((v.weight, synth, rend))
    left = 1.0 - sum(w for w, _, _ in choices)
    if left < -1e-9:
        raise ConfigError(f"{where}: weights sum to {1 - left:g}, over 1")
    return choices + [(max(left, 0.0), synth_cfg, render_cfg)]


def variants_need_cjk(choices: list[tuple[float, SynthConfig, RenderConfig]]) -> bool:
    """Whether any of `resolve_variants`' choices can draw Chinese text (a CJK font is needed)."""
    return any(synth.zh_rate > 0 for _, synth, _ in choices)


def _merged(base, changes: dict, where: str):
    """Dataclass `base` with the keys `changes` names replaced; errors name `where`."""
    try:
        return config_io.from_dict(type(base), {**config_io.to_dict(base), **changes}, where)
    except ConfigError as e:
        raise e if str(e).startswith(where) else ConfigError(f"{where}: {e}") from e


def draw_variant(
    seed: int, index: int, choices: list[tuple[float, SynthConfig, RenderConfig]]
) -> tuple[SynthConfig, RenderConfig]:
    """The settings of sample `index` of run `seed` (`resolve_variants`' choices), drawn by its own
    generator; with no variants, the run's settings and no draw (the samples stay as they were)."""
    if len(choices) == 1:
        return choices[0][1], choices[0][2]
    weights = [w for w, _, _ in choices]
    _, synth, rend = random.Random(f"variant:{seed}:{index}").choices(choices, weights)[0]
    return synth, rend
