"""A cache of what a reader read, keyed by the image's bytes, so no image is read twice.

    cache = WordCache(max_items=4096, folder="runs/read-cache")   # folder optional
    key = cache_key(image_digest(data), reader.cache_id)   # a PIL image: pixels_digest(pil)
    words = cache.get(key)          # None on a miss
    cache.put(key, words)

The key is the sha256 of the reader's id (name, version and the options that change its words)
and the sha256 of the image's bytes (a file's or a request's bytes; a PIL image's mode, size and
pixels). Memory holds the `max_items` most recently used entries (LRU); with a `folder`, every
entry is also a small JSON file `folder/ab/abcdef....json`, written to a temporary name and then
renamed (`os.replace`), so a reader that is killed leaves no half file and many processes may
share the folder. An unreadable file there is logged and read again from the image.

`default_cache()` is the process's cache that `tabvlm.read.read_words` uses; its folder is
`TABVLM_READ_CACHE` when that is set (memory only otherwise).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tabvlm.errors import ConfigError
from tabvlm.read.words import Word

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)

ENV_VAR = "TABVLM_READ_CACHE"
STRIP_BYTES = 1 << 20  # `pixels_digest` hashes a decoded image this many bytes of rows at a time


def image_digest(data: bytes | bytearray | memoryview) -> str:
    """sha256 hex digest of an image's bytes."""
    return hashlib.sha256(data).hexdigest()


def pixels_digest(image: Image.Image) -> str:
    """sha256 hex digest of a decoded image: its mode, size and pixels (`f"{mode}:{size}:"` then
    `image.tobytes()`), hashed a strip of rows at a time, so no copy of the whole image is made."""
    digest = hashlib.sha256(f"{image.mode}:{image.size}:".encode())
    width, height = image.size
    rows = max(1, STRIP_BYTES // max(1, width * len(image.getbands())))
    for top in range(0, height, rows):
        digest.update(image.crop((0, top, width, min(height, top + rows))).tobytes())
    return digest.hexdigest()


def cache_key(digest: str, reader_id: str) -> str:
    """The cache key of one image (its `image_digest`) read by one reader (`reader.cache_id`)."""
    return hashlib.sha256(f"{reader_id}\n{digest}".encode()).hexdigest()


class WordCache:
    """In-memory LRU of `max_items` entries, optionally backed by a folder of JSON files."""

    def __init__(self, max_items: int = 4096, folder: str | Path | None = None):
        if max_items < 0:
            raise ConfigError(f"WordCache: max_items must be >= 0, found {max_items}")
        self.max_items = max_items
        self.folder = Path(folder) if folder else None
        self.hits = self.misses = 0
        self._items: OrderedDict[str, tuple[Word, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> list[Word] | None:
        """The words stored under `key` (memory first, then the folder), or None."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return list(self._items[key])
        words = self._read_file(key) if self.folder is not None else None
        with self._lock:
            if words is None:
                self.misses += 1
                return None
            self.hits += 1
            self._remember(key, words)
        return list(words)

    def put(self, key: str, words: Sequence[Word]) -> list[Word]:
        """Store `words` under `key` (and write its file when there is a folder). Returns them as
        stored: rounded as `Word.to_dict` rounds (boxes to 0.1 px), so a word read from memory,
        from the folder or just now is the same word."""
        frozen = tuple(Word.from_dict(wd.to_dict()) for wd in words)
        with self._lock:
            self._remember(key, frozen)
        if self.folder is not None:
            self._write_file(key, frozen)
        return list(frozen)

    def clear(self) -> None:
        """Forget the in-memory entries (the folder's files stay)."""
        with self._lock:
            self._items.clear()

    def _remember(self, key: str, words: tuple[Word, ...]) -> None:
        if self.max_items == 0:
            return
        self._items[key] = words
        self._items.move_to_end(key)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def _read_file(self, key: str) -> tuple[Word, ...] | None:
        path = self._path(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return tuple(Word.from_dict(d) for d in data["words"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            logger.warning("%s: unreadable reader-cache entry, reading the image again (%s)", path, e)
            return None

    def _write_file(self, key: str, words: tuple[Word, ...]) -> None:
        path = self._path(key)
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:8]}.", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"words": [wd.to_dict() for wd in words]}, f, ensure_ascii=False)
            os.replace(tmp, path)
        except OSError as e:  # a full or read-only disk costs a re-read later, not this result
            logger.warning("%s: cannot write the reader cache (%s)", path, e)
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)


_DEFAULT: WordCache | None = None
_DEFAULT_LOCK = threading.Lock()


def default_cache() -> WordCache:
    """The process's cache (folder from `TABVLM_READ_CACHE`, if set), made on first use."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = WordCache(folder=os.environ.get(ENV_VAR) or None)
        return _DEFAULT
