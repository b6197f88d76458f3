"""Font discovery for the renderer: which fonts can draw which text.

Search path, in order: `RenderConfig.font_dirs`, then `TABVLM_FONT_DIR` (os.pathsep-separated),
then the system folders (/usr/share/fonts, ~/.fonts, ...) unless turned off. A training machine
without system fonts works from a copied folder of .ttf/.otf/.ttc files.

Each face is put in one class: latin-serif / latin-sans / latin-mono (by family name) or cjk. A
face is cjk only if it really draws common Chinese characters: its glyphs are rendered and
compared with the face's "missing glyph" box (tofu), so a font that merely claims a CJK name, or
a Latin font, never draws Chinese in the data. Loaded `ImageFont` objects are cached by
(path, index, size).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tabvlm.errors import DataError

log = logging.getLogger(__name__)

ENV_VAR = "TABVLM_FONT_DIR"
SYSTEM_DIRS = (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "~/.fonts",
    "~/.local/share/fonts",
    "/Library/Fonts",
    "/System/Library/Fonts",
    "C:/Windows/Fonts",
)
FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")
KINDS = ("latin-serif", "latin-sans", "latin-mono", "cjk")
# Common Chinese characters a CJK face must draw (the most frequent ones, plus full-width marks).
COMMON_CJK = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处府，。、：（）"  # noqa: E501
_LATIN_PROBE = "AaBbQq09%$"
_SKIP_STYLE_WORDS = ("italic", "oblique", "light", "thin", "black", "heavy")
_SERIF_NAMES = ("serif", "times", "georgia", "garamond", "roman", "cambria", "palatino", "book antiqua")
_PROBE_SIZE = 24
_MISSING = "\U0010fffd"  # a private-use code point no text font maps: renders the .notdef box


@dataclass(frozen=True)
class FontFace:
    """One usable face (a file, and the index inside a .ttc collection) and its bold partner."""

    path: str
    index: int
    family: str
    kind: str  # one of KINDS
    bold_path: str | None = None
    bold_index: int = 0


@functools.lru_cache(maxsize=1024)
def load_font(path: str, index: int, size: int) -> ImageFont.FreeTypeFont:
    """The PIL font for (path, index, size), cached: opening a face costs milliseconds."""
    # Basic layout: no shaping needed for Latin/Chinese, and much faster than raqm per call.
    return ImageFont.truetype(path, size, index=index, layout_engine=ImageFont.Layout.BASIC)


@functools.lru_cache(maxsize=65536)
def _draws_char(path: str, index: int, char: str) -> bool:
    font = load_font(path, index, _PROBE_SIZE)
    mask = font.getmask(char)
    if mask.size[0] == 0 or not mask.getbbox():
        return char.isspace()  # an empty glyph is only right for spaces
    tofu = font.getmask(_MISSING)
    return not (mask.size == tofu.size and bytes(mask) == bytes(tofu))


def draws_text(face: FontFace, text: str) -> bool:
    """True when `face` has a real glyph (not the tofu box) for every character of `text`."""
    return all(_draws_char(face.path, face.index, ch) for ch in set(text))


def font_search_path(font_dirs: Sequence[str] = (), use_system: bool = True) -> list[Path]:
    """Folders searched for fonts: config folders, then $TABVLM_FONT_DIR, then system folders."""
    raw = list(font_dirs) + [p for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    if use_system:
        raw += SYSTEM_DIRS
    out: list[Path] = []
    for item in raw:
        path = Path(item).expanduser()
        if path.is_dir() and path not in out:
            out.append(path)
    return out


def _faces_of(path: Path) -> list[tuple[int, str, str]]:
    """(index, family, style) of every face in a font file; unreadable files give []."""
    out = []
    for index in range(64):  # a .ttc holds a handful of faces; the loop ends at the first missing one
        try:
            family, style = load_font(str(path), index, _PROBE_SIZE).getname()
        except OSError:
            break
        out.append((index, family or path.stem, style or "Regular"))
        if path.suffix.lower() not in (".ttc", ".otc"):
            break
    return out


def _latin_kind(family: str) -> str:
    low = family.lower()
    if "mono" in low or "courier" in low or "code" in low:
        return "latin-mono"
    if any(n in low for n in _SERIF_NAMES) and "sans" not in low:
        return "latin-serif"
    return "latin-sans"


def _classify_file(path: Path) -> list[tuple[str, str, int, str, bool]]:
    """(kind, family key, index, family, is_bold) for the usable faces of one file."""
    faces = []
    for index, family, style in _faces_of(path):
        low = style.lower()
        if any(w in low for w in _SKIP_STYLE_WORDS) or "math" in family.lower():
            continue
        width = " ".join(w for w in low.split() if w not in ("bold", "regular", "book", "roman", "normal"))
        faces.append((index, family, width, "bold" in low))
    if not faces:
        return []
    # One CJK face a file: Simplified Chinese first, proportional before mono.
    ranked = sorted(faces, key=lambda f: (not f[1].endswith(" SC"), "mono" in f[1].lower(), f[0]))
    index, family, width, bold = ranked[0]
    probe = FontFace(str(path), index, family, "cjk")
    if draws_text(probe, COMMON_CJK[:8]) and draws_text(probe, COMMON_CJK):
        return [("cjk", f"{family}|{width}", index, family, bold)]
    out = []
    for index, family, width, bold in faces:
        if draws_text(FontFace(str(path), index, family, "latin-sans"), _LATIN_PROBE):
            out.append((_latin_kind(family), f"{family}|{width}", index, family, bold))
    return out


@dataclass(frozen=True)
class FontSet:
    """The faces found on the search path, by class."""

    faces: tuple[FontFace, ...]
    searched: tuple[str, ...]

    def of_kind(self, kind: str) -> list[FontFace]:
        """Faces of one class (see KINDS)."""
        return [f for f in self.faces if f.kind == kind]

    @property
    def has_cjk(self) -> bool:
        return any(f.kind == "cjk" for f in self.faces)

    def font(self, face: FontFace, size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
        """The PIL font of `face` at `size` px (its bold partner when asked and present)."""
        if bold and face.bold_path:
            return load_font(face.bold_path, face.bold_index, size)
        return load_font(face.path, face.index, size)

    def glyphs(self, face: FontFace, size: int, bold: bool = False) -> Glyphs:
        """The glyph cache of `face` at `size` px (bold partner when asked and present)."""
        if bold and face.bold_path:
            return load_glyphs(face.bold_path, face.bold_index, size)
        return load_glyphs(face.path, face.index, size)


@functools.lru_cache(maxsize=16)
def _discover(folders: tuple[str, ...]) -> tuple[FontFace, ...]:
    regular: dict[str, tuple[str, int, str, str]] = {}
    bold: dict[str, tuple[str, int]] = {}
    seen_names: set[str] = set()
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.suffix.lower() not in FONT_SUFFIXES or not path.is_file():
                continue
            if path.name in seen_names:  # the same file copied twice (liberation and liberation2)
                continue
            seen_names.add(path.name)
            for kind, key, index, family, is_bold in _classify_file(path):
                if is_bold:
                    bold.setdefault(key, (str(path), index))
                else:
                    regular.setdefault(key, (str(path), index, family, kind))
    faces = []
    for key, (path, index, family, kind) in sorted(regular.items()):
        bold_path, bold_index = bold.get(key, (None, 0))
        faces.append(FontFace(path, index, family, kind, bold_path, bold_index))
    return tuple(faces)


def install_hint(folders: Sequence[Path | str]) -> str:
    """How to make fonts available, naming the folders that were searched."""
    where = ", ".join(str(f) for f in folders) or "(no existing folder)"
    return (
        f"searched: {where}. Install fonts (Debian/Ubuntu: apt-get install fonts-noto-cjk fonts-wqy-microhei "
        f"fonts-dejavu-core fonts-liberation) or copy .ttf/.otf/.ttc files into a folder and point "
        f"{ENV_VAR} (or render.font_dirs) at it"
    )


def discover_fonts(font_dirs: Sequence[str] = (), use_system: bool = True, need_cjk: bool = False) -> FontSet:
    """Find and classify the fonts on the search path (cached per path).

    Raises DataError when no font is found, or when `need_cjk` (the data will hold Chinese) and no
    face draws common Chinese characters: a clear stop at start, never tofu boxes in the data.
    """
    folders = font_search_path(font_dirs, use_system)
    faces = _discover(tuple(str(f) for f in folders))
    fonts = FontSet(faces, tuple(str(f) for f in folders))
    if not faces:
        raise DataError(f"no usable font (.ttf/.otf/.ttc) found; {install_hint(folders)}")
    if need_cjk and not fonts.has_cjk:
        raise DataError(
            "no CJK font that draws Chinese was found, but the data asks for Chinese tables "
            f"(synth.zh_rate > 0); {install_hint(folders)}; or set synth.zh_rate=0 for English only"
        )
    log.debug("fonts: %s", ", ".join(f"{f.family} ({f.kind})" for f in faces))
    return fonts


class Glyphs:
    """Rasterised glyphs and advances of one font at one size, made once per character.

    PIL re-rasterises every glyph on every `draw.text` call (~30 us a glyph); tables repeat the
    same few hundred characters, so the renderer composes lines from these cached bitmaps
    instead. Widths are sums of advances: layout and drawing use the same numbers.
    """

    def __init__(self, font: ImageFont.FreeTypeFont):
        self.font = font
        self._cache: dict[str, tuple[np.ndarray, int, int, float]] = {}
        self._advance: dict[str, float] = {}

    def get(self, ch: str) -> tuple[np.ndarray, int, int, float]:
        """(coverage mask (h, w) uint8, left offset from the pen, top offset from the baseline,
        advance) of one character."""
        hit = self._cache.get(ch)
        if hit is None:
            x0, y0, x1, y1 = self.font.getbbox(ch, anchor="ls")
            mask = Image.new("L", (max(0, x1 - x0), max(0, y1 - y0)), 0)
            if x1 > x0 and y1 > y0:
                ImageDraw.Draw(mask).text((-x0, -y0), ch, font=self.font, fill=255, anchor="ls")
            hit = (np.asarray(mask), x0, y0, self.font.getlength(ch))
            self._cache[ch] = hit
            self._advance[ch] = hit[3]
        return hit

    def width(self, text: str) -> float:
        """Advance width of `text` (no kerning: the renderer draws without it too)."""
        try:
            return sum(map(self._advance.__getitem__, text))  # C-speed when all are cached
        except KeyError:
            for ch in text:
                self.get(ch)
            return sum(map(self._advance.__getitem__, text))


@functools.lru_cache(maxsize=160)  # bounded: ~0.5 KB a character; CJK faces x sizes fill it
def load_glyphs(path: str, index: int, size: int) -> Glyphs:
    """The glyph cache of (path, index, size)."""
    return Glyphs(load_font(path, index, size))
