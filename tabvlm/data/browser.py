"""Draw a table grid as HTML/CSS in headless Chromium: `BrowserRenderer(cfg, fonts).render(table,
rng) -> Rendered`, the same result as the PIL renderer's (`tabvlm.data.render`), so every target
(the HTML, the reading targets) works unchanged.

One browser and one page serve many tables: each render swaps the page's CSS and HTML (a style
family's, `tabvlm.data.families`), shrinks the font until the page fits the size bounds, then in
one call reads back every cell's box (`getBoundingClientRect` of its <td>/<th>) and every drawn
character's box (a DOM Range around the character: its advance wide, its line box tall), and
takes a PNG screenshot of the page. Only cell text is in `glyph_boxes`; captions, notes and
neighbouring paragraphs are drawn but belong to no cell and to no target.

Fonts: Chromium sees exactly the folders of the font search path (`tabvlm.data.fonts`): it is
started with a fontconfig file that lists them and nothing else, and the page names faces by
family. At start every face is drawn once and Chromium is asked (DevTools
`CSS.getPlatformFontsForNode`) which font it really used; faces it does not resolve to
themselves are never used, and a missing browser, or no CJK face when Chinese is needed, is a
DataError at start, never a silent fallback. Each table's font stack draws all its characters.

Needs Chromium (Debian: `apt-get install chromium`, /usr/bin/chromium) and the `playwright`
package (its driver only: no browser download).
"""

from __future__ import annotations

import io
import logging
import math
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from PIL import Image

from tabvlm.data.families import FAMILIES, FAMILY_SYNTH, build_page
from tabvlm.data.fonts import COMMON_CJK, FontSet
from tabvlm.data.render import Box, Rendered
from tabvlm.data.synth import SynthConfig
from tabvlm.errors import ConfigError, DataError
from tabvlm.tables.grid import Table

log = logging.getLogger(__name__)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--font-render-hinting=none",  # the same glyph shapes on every machine
]
_BASE_HTML = """<!doctype html><html><head><meta charset="utf-8"><style>
html, body { margin: 0; padding: 0; background: #fff; }
#page { display: inline-block; box-sizing: border-box; vertical-align: top; }
#page table { border-collapse: collapse; border-spacing: 0; }
#page th, #page td { font-weight: normal; text-align: left; vertical-align: middle; }
#page .ip, #page .fr { display: inline-block; }
#page .ip { text-align: right; }
#page .fr { text-align: left; }
#page sup, #page sub { font-size: 0.7em; line-height: 0; }
</style><style id="family"></style></head><body><div id="page"></div></body></html>"""

# One call a table: set the page, shrink the font until it fits, measure cells and characters.
_MEASURE_JS = """async (p) => {
  document.getElementById('family').textContent = p.css;
  const page = document.getElementById('page');
  page.style.width = p.width ? p.width + 'px' : '';
  page.style.maxWidth = p.maxW + 'px';
  page.innerHTML = p.html;
  const table = page.querySelector('table');
  let fs = p.fs;
  for (let k = 0; k < 12; k++) {
    page.style.fontSize = fs + 'px';
    await document.fonts.ready;
    const pr = page.getBoundingClientRect(), tr = table.getBoundingClientRect();
    const st = getComputedStyle(page);
    const pad = parseFloat(st.paddingLeft) + parseFloat(st.paddingRight);
    const scale = Math.max((tr.width + pad) / Math.max(1, pr.width), pr.height / p.maxH);
    if (scale <= 1.0001 || fs <= p.minFs) break;
    fs = Math.max(p.minFs, Math.min(fs - 1, Math.floor(fs / scale)));
  }
  const pr = page.getBoundingClientRect();
  const ox = pr.left, oy = pr.top;
  const cells = [], chars = [], hidden = [];
  const range = document.createRange();
  for (const el of page.querySelectorAll('[data-i]')) {
    const i = Number(el.dataset.i), r = el.getBoundingClientRect();
    cells.push([i, r.left - ox, r.top - oy, r.right - ox, r.bottom - oy]);
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    let node;
    while ((node = walker.nextNode())) {
      let at = 0;
      for (const ch of node.data) {
        if (ch.trim()) {
          range.setStart(node, at);
          range.setEnd(node, at + ch.length);
          const b = range.getBoundingClientRect();
          if (b.width > 0 && b.height > 0) chars.push([i, ch, b.left - ox, b.top - oy, b.right - ox, b.bottom - oy]);
          else hidden.push(ch);
        }
        at += ch.length;
      }
    }
  }
  const t = table.getBoundingClientRect();
  return {w: pr.width, h: pr.height, x: pr.left, y: pr.top, fs, cells, chars, hidden,
          table: [t.left - ox, t.top - oy, t.right - ox, t.bottom - oy]};
}"""

_PROBE_JS = """(p) => {
  const page = document.getElementById('page');
  page.innerHTML = '<span id="probe"></span>';
  const s = document.getElementById('probe');
  s.style.fontFamily = JSON.stringify(p.family);
  s.textContent = p.text;
  return s.getBoundingClientRect().width;  // lays the probe out before DevTools is asked
}"""


@dataclass
class BrowserConfig:
    """Controls of the browser renderer (fonts come from `render.font_dirs` and the search path)."""

    chromium: str = CHROMIUM
    families: dict[str, float] = field(default_factory=lambda: dict.fromkeys(FAMILIES, 1.0))
    width: tuple[int, int] = (300, 1600)  # page width bounds (px), before page_crop's downscale
    max_height: int = 2000
    min_font_size: int = 8
    timeout_s: float = 60.0  # one page operation; a browser that hangs longer is an error

    def __post_init__(self) -> None:
        unknown = sorted(set(self.families) - set(FAMILIES))
        weights = list(self.families.values())
        if unknown or not weights or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(
                f"browser.families: expected weights >= 0 (positive sum) over {list(FAMILIES)}, "
                f"found {self.families}"
            )
        if not 0 < self.width[0] <= self.width[1]:
            raise ConfigError(f"browser.width: expected an increasing range, found {self.width}")
        if self.min_font_size < 4:
            raise ConfigError(f"browser.min_font_size: expected >= 4, found {self.min_font_size}")


def check_chromium(path: str) -> None:
    """DataError unless `path` is an executable (the message says how to install Chromium)."""
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise DataError(
            f"Chromium not found at {path}: install it (Debian/Ubuntu: apt-get install -y chromium) "
            "or set browser.chromium to its path"
        )


def family_synth(base: SynthConfig, family: str) -> SynthConfig:
    """`base` with the document-content rates that style `family` asks for."""
    import dataclasses

    return dataclasses.replace(base, **FAMILY_SYNTH[family])


def _fontconfig(folders: tuple[str, ...], where: Path) -> Path:
    """A fontconfig file that shows Chromium these folders and nothing else."""
    dirs = "".join(f"<dir>{escape(f)}</dir>" for f in folders)
    path = where / "fonts.conf"
    path.write_text(
        '<?xml version="1.0"?><!DOCTYPE fontconfig SYSTEM "fonts.dtd"><fontconfig>'
        f"{dirs}<cachedir>{escape(str(where / 'cache'))}</cachedir></fontconfig>",
        encoding="utf-8",
    )
    return path


def _crop(img: Image.Image, table: Box, crop: dict) -> tuple[Image.Image, float, float, float, float]:
    """page_crop: cut the table out with `crop['margin']` around it (neighbouring text comes
    along), then downscale by `crop['scale']`; returns the image and (x0, y0, fx, fy): a point
    (x, y) of the page is at ((x - x0) fx, (y - y0) fy) in it."""
    ml, mt, mr, mb = crop["margin"]
    x0, y0 = max(0, table[0] - ml), max(0, table[1] - mt)
    x1, y1 = min(img.width, table[2] + mr), min(img.height, table[3] + mb)
    img = img.crop((x0, y0, x1, y1))
    w, h = max(1, round(img.width * crop["scale"])), max(1, round(img.height * crop["scale"]))
    fx, fy = w / img.width, h / img.height
    return img.resize((w, h), Image.Resampling.BILINEAR), x0, y0, fx, fy


def _move(box: Box, x0: float, y0: float, fx: float, fy: float, w: int, h: int, outward: bool) -> Box:
    """`box` after a crop at (x0, y0) and a scale (fx, fy): rounded (cell boxes: shared edges
    stay shared) or floored / ceiled outward (glyph boxes: the ink stays inside)."""
    a, b, c, d = (box[0] - x0) * fx, (box[1] - y0) * fy, (box[2] - x0) * fx, (box[3] - y0) * fy
    if outward:
        a, b, c, d = math.floor(a), math.floor(b), math.ceil(c), math.ceil(d)
    else:
        a, b, c, d = round(a), round(b), round(c), round(d)
    return (max(0, a), max(0, b), min(w, c), min(h, d))


class BrowserRenderer:
    """One headless Chromium and one page, reused for every table; close it (or use `with`)."""

    def __init__(self, cfg: BrowserConfig, fonts: FontSet, need_cjk: bool = True):
        check_chromium(cfg.chromium)
        try:
            from playwright.sync_api import sync_playwright
        except ImportError as e:
            raise DataError("the browser renderer needs playwright: pip install playwright") from e
        self.cfg = cfg
        self._tmp = Path(tempfile.mkdtemp(prefix="tabvlm-browser-"))
        conf = _fontconfig(fonts.searched, self._tmp)
        self._pw = sync_playwright().start()
        try:
            self._browser = self._pw.chromium.launch(
                executable_path=cfg.chromium,
                headless=True,
                args=CHROMIUM_ARGS,
                env={**os.environ, "FONTCONFIG_FILE": str(conf)},
                timeout=cfg.timeout_s * 1000,
            )
            size = {"width": cfg.width[1] + 100, "height": cfg.max_height + 400}
            self._page = self._browser.new_page(viewport=size, device_scale_factor=1)
            self._page.set_default_timeout(cfg.timeout_s * 1000)
            self._page.route("**/*", lambda route: route.abort())  # nothing is fetched, ever
            self._page.set_content(_BASE_HTML)
            self.fonts = self._verified(fonts)
        except Exception:
            self.close()
            raise
        if need_cjk and not self.fonts.has_cjk:
            self.close()
            raise DataError(
                "Chromium resolves no CJK face of the font search path, and the data asks for Chinese; "
                f"searched: {', '.join(fonts.searched)}"
            )

    def _verified(self, fonts: FontSet) -> FontSet:
        """The faces Chromium draws as themselves (one face a family name: that is how CSS names them)."""
        cdp = self._page.context.new_cdp_session(self._page)
        cdp.send("DOM.enable")
        cdp.send("CSS.enable")
        kept, seen, dropped = [], set(), []
        for face in fonts.faces:
            if face.family in seen:
                continue
            seen.add(face.family)
            text = COMMON_CJK[:16] if face.kind == "cjk" else "AaBbQq0123"
            self._page.evaluate(_PROBE_JS, {"family": face.family, "text": text})
            root = cdp.send("DOM.getDocument")["root"]["nodeId"]
            node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": "#probe"})["nodeId"]
            used = {
                f["familyName"] for f in cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
            }
            if used == {face.family}:
                kept.append(face)
            else:
                dropped.append(f"{face.family} (drawn with {', '.join(sorted(used))})")
        cdp.detach()
        if dropped:
            log.warning(
                "Chromium does not resolve these faces to their files; not used: %s", "; ".join(dropped)
            )
        if not kept:
            raise DataError(
                f"Chromium resolves none of the fonts found; searched: {', '.join(fonts.searched)}"
            )
        return FontSet(tuple(kept), fonts.searched)

    def pick_family(self, rng: random.Random) -> str:
        """A style family drawn by the configured weights."""
        names = [f for f, w in self.cfg.families.items() if w > 0]
        return rng.choices(names, [self.cfg.families[f] for f in names])[0]

    def render(self, table: Table, rng: random.Random, family: str | None = None) -> Rendered:
        """Draw `table` in style `family` (None: drawn from the weights); boxes follow table.cells."""
        family = family or self.pick_family(rng)
        page = build_page(family, table, rng, self.fonts)
        width = None if page.width is None else min(max(page.width, self.cfg.width[0]), self.cfg.width[1])
        out = self._page.evaluate(
            _MEASURE_JS,
            {
                "css": page.css,
                "html": page.html,
                "fs": page.font_size,
                "width": width,
                "maxW": self.cfg.width[1],
                "maxH": self.cfg.max_height,
                "minFs": self.cfg.min_font_size,
            },
        )
        if out["hidden"]:
            raise DataError(f"characters of the table are not drawn: {''.join(out['hidden'])!r} ({family})")
        w, h = max(1, math.ceil(out["w"])), max(1, math.ceil(out["h"]))
        png = self._page.screenshot(clip={"x": out["x"], "y": out["y"], "width": w, "height": h}, type="png")
        img = Image.open(io.BytesIO(png)).convert("RGB")
        if img.width < self.cfg.width[0]:  # a small table on a wider page of its background
            wide = Image.new("RGB", (self.cfg.width[0], img.height), img.getpixel((0, 0)))
            wide.paste(img, (0, 0))
            img = wide

        cell_boxes: list[Box] = [(0, 0, 0, 0)] * len(table.cells)
        for i, x0, y0, x1, y1 in out["cells"]:
            cell_boxes[i] = (round(x0), round(y0), round(x1), round(y1))
        glyph_cells = [i for i, *_ in out["chars"]]
        # A character's box is its advance by the font's content height, cut to its cell (a tight
        # line height lets the content area, not the ink, reach past the cell's edge).
        glyph_boxes: list[tuple[str, Box]] = []
        for i, ch, x0, y0, x1, y1 in out["chars"]:
            cx0, cy0, cx1, cy1 = cell_boxes[i]
            box = (
                max(cx0, math.floor(x0)),
                max(cy0, math.floor(y0)),
                min(cx1, math.ceil(x1)),
                min(cy1, math.ceil(y1)),
            )
            glyph_boxes.append((ch, box))
        applied = []
        if page.crop is not None:
            t = out["table"]
            table_box = (math.floor(t[0]), math.floor(t[1]), math.ceil(t[2]), math.ceil(t[3]))
            img, *at = _crop(img, table_box, page.crop)
            cell_boxes = [_move(b, *at, img.width, img.height, False) for b in cell_boxes]
            glyph_boxes = [(ch, _move(b, *at, img.width, img.height, True)) for ch, b in glyph_boxes]
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=page.crop["quality"])
            img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
            applied = [
                f"crop:{page.crop['margin']}",
                f"downscale:{page.crop['scale']:.2f}",
                f"jpeg:{page.crop['quality']}",
            ]
        text_boxes: list[Box | None] = [None] * len(table.cells)
        for i, (_, (x0, y0, x1, y1)) in zip(glyph_cells, glyph_boxes):
            b = text_boxes[i]
            text_boxes[i] = (
                (x0, y0, x1, y1)
                if b is None
                else (min(b[0], x0), min(b[1], y0), max(b[2], x1), max(b[3], y1))
            )
        _check_text(table, glyph_cells, glyph_boxes)
        style = {**page.info, "renderer": "browser", "font_size": out["fs"], "degradations": applied}
        return Rendered(img, cell_boxes, text_boxes, style, glyph_boxes)

    def close(self) -> None:
        """Stop the browser and remove the fontconfig folder (safe to call twice)."""
        for step in (lambda: self._browser.close(), lambda: self._pw.stop()):
            try:
                step()
            except Exception:  # noqa: BLE001 (already closed or never started)
                pass
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> BrowserRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_text(table: Table, glyph_cells: list[int], glyph_boxes: list[tuple[str, Box]]) -> None:
    """Every cell's drawn characters, in order, are its text (spaces aside): the target is what
    the picture shows. A mismatch is a bug in a family's markup, raised, never trained on."""
    drawn: dict[int, list[str]] = {}
    for i, (ch, _) in zip(glyph_cells, glyph_boxes):
        drawn.setdefault(i, []).append(ch)
    for i, c in enumerate(table.cells):
        want = "".join(c.text.split())
        if "".join(drawn.get(i, [])) != want:
            raise DataError(f"cell {i} draws {''.join(drawn.get(i, []))!r}, its text is {want!r}")


def make_browser_sample(
    seed: int, index: int, synth_cfg: SynthConfig, renderer: BrowserRenderer
) -> tuple[Table, Rendered]:
    """Sample `index` of run `seed` drawn by the browser: the family comes from the drawing
    generator, the grid from the grid generator under that family's content rates."""
    from tabvlm.data.render import sample_rngs
    from tabvlm.data.synth import synthesize

    grid_rng, draw_rng = sample_rngs(seed, index)
    family = renderer.pick_family(draw_rng)
    table = synthesize(grid_rng, family_synth(synth_cfg, family))
    return table, renderer.render(table, draw_rng, family)
