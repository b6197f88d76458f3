"""Images with known words for the reader tests, drawn with the system's fonts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from PIL import Image, ImageDraw

from tabvlm.data.fonts import FontFace, FontSet, discover_fonts

Draw = Callable[..., Image.Image]


@pytest.fixture(scope="session")
def fonts() -> FontSet:
    return discover_fonts(need_cjk=True)


@pytest.fixture(scope="session")
def draw(fonts: FontSet) -> Draw:
    """draw((w, h), [(text, (x, y), px), ...], cjk=False): black text on white."""
    latin: FontFace = fonts.of_kind("latin-sans")[0]
    cjk: FontFace = fonts.of_kind("cjk")[0]

    def _draw(size: tuple[int, int], items: list[tuple[str, tuple[int, int], int]], cjk_font: bool = False):
        img = Image.new("RGB", size, "white")
        d = ImageDraw.Draw(img)
        for text, xy, px in items:
            d.text(xy, text, fill="black", font=fonts.font(cjk if cjk_font else latin, px))
        return img

    return _draw
