"""The reader: a table image in, its words out (text, box in pixels, score), in reading order.

    from tabvlm.read import read_words, read_text
    words = read_words("table.png")              # PP-OCRv6 small, one thread, cached
    print(read_text("table.png", threads=2))     # the text, one line per visual line

Backends live in `READERS` (name -> factory taking the backend's options):
- `ppocr` (default): PP-OCRv6 small det + rec from the rapidocr wheel, offline
  (`tabvlm.read.ppocr`; options are the fields of `PPOCRConfig`);
- `truth`: the renderer's own words and boxes. It reads no image: its words come from a drawing,
  through `tabvlm.read.truth.truth_words(rendered, table)`, so `get_reader("truth")` says so.
More (Tesseract, ...) are one `register_reader` call: a reader has a `name`, a `cache_id` (what
its words depend on) and `read(pil_image, name=None) -> list[Word]`.

`read_words` reads each distinct image once per process (`tabvlm.read.cache`: keyed by the
image's bytes and the reader's options; on disk too with `TABVLM_READ_CACHE=DIR`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tabvlm.errors import ConfigError, DataError
from tabvlm.read.cache import WordCache, cache_key, default_cache, image_digest, pixels_digest
from tabvlm.read.words import (
    Box,
    Word,
    join_words,
    line_groups,
    reading_order,
    sort_words,
    split_text,
    text_lines,
)

if TYPE_CHECKING:
    from PIL import Image

    from tabvlm.image import ImageSource

__all__ = [
    "READERS",
    "Box",
    "Reader",
    "Word",
    "get_reader",
    "join_words",
    "line_groups",
    "read_text",
    "read_words",
    "reading_order",
    "register_reader",
    "sort_words",
    "split_text",
    "text_lines",
]


class Reader(Protocol):
    """What every backend provides."""

    name: str

    @property
    def cache_id(self) -> str:
        """A string that changes whenever the words it reads could (name, version, options)."""
        ...

    def read(self, image: Image.Image, name: str | None = None) -> list[Word]:
        """The words of an RGB image in reading order; a failure is a DataError naming `name`."""
        ...


def _ppocr(**options: Any) -> Reader:
    from tabvlm.config import from_dict
    from tabvlm.read.ppocr import PPOCRConfig, PPOCRReader

    return PPOCRReader(from_dict(PPOCRConfig, options, where="reader ppocr"))


def _truth(**options: Any) -> Reader:
    raise ConfigError(
        "reader 'truth' reads no image: its words come from the renderer's drawing, through "
        "tabvlm.read.truth.truth_words(rendered, table); to read an image use reader 'ppocr'"
    )


READERS: dict[str, Callable[..., Reader]] = {"ppocr": _ppocr, "truth": _truth}


def register_reader(name: str, factory: Callable[..., Reader]) -> None:
    """Add (or replace) a backend: `factory(**options)` returns a `Reader`."""
    READERS[name] = factory


def get_reader(name: str = "ppocr", **options: Any) -> Reader:
    """A reader of backend `name` with `options` (unknown names and options: ConfigError)."""
    try:
        factory = READERS[name]
    except KeyError:
        raise ConfigError(f"unknown reader {name!r}; known: {', '.join(READERS)}") from None
    return factory(**options)


def _keyed(image: ImageSource, where: str | None) -> tuple[str, ImageSource]:
    """(the image's digest for the cache key, the image to decode): a file is read once, its
    bytes both hashed and decoded; bytes and a decoded image are hashed where they are."""
    from PIL import Image

    from tabvlm.image import load_image

    if isinstance(image, Image.Image):
        pil = load_image(image)
        return pixels_digest(pil), pil
    if isinstance(image, bytes | bytearray | memoryview):
        return image_digest(image), image
    try:
        data = Path(image).read_bytes()
    except OSError:
        load_image(image, name=where)  # raises the loader's DataError (missing, a folder, no access)
        raise DataError("cannot read the image file", where) from None
    return image_digest(data), data


def read_words(
    image: ImageSource,
    reader: str = "ppocr",
    *,
    name: str | None = None,
    cache: WordCache | bool = True,
    **options: Any,
) -> list[Word]:
    """The words of `image` (a path, bytes or a PIL image) in reading order; [] when it holds no
    text. `options` go to the backend (ppocr: `PPOCRConfig`'s fields, e.g. threads=2).
    `cache`: True (the process's `default_cache()`), a `WordCache`, or False (always read).
    A missing, corrupt or unreadable image, or a failure inside the reader, is a DataError naming
    it (`name`, else the path)."""
    from PIL import Image

    from tabvlm.image import load_image

    backend = get_reader(reader, **options)
    in_memory = isinstance(image, Image.Image | bytes | bytearray | memoryview)
    where = name or (None if in_memory else str(image))  # the name errors use
    store = default_cache() if cache is True else cache if isinstance(cache, WordCache) else None
    if store is None:  # no key to make: the image is decoded and read, and nothing is hashed
        return backend.read(load_image(image, name=where), name=where)
    digest, source = _keyed(image, where)
    key = cache_key(digest, backend.cache_id)
    hit = store.get(key)
    if hit is not None:
        return hit
    return store.put(key, backend.read(load_image(source, name=where), name=where))


def read_text(image: ImageSource, reader: str = "ppocr", **kwargs: Any) -> str:
    """The text of `image` in reading order: one line per visual line, words joined by
    `join_words` (a space between Latin words, none beside CJK). Arguments as `read_words`."""
    return "\n".join(text_lines(read_words(image, reader, **kwargs)))
