"""The reader cache: a second read of the same bytes costs no engine call; memory LRU; disk files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tabvlm.read import Word, read_words
from tabvlm.read.cache import WordCache, cache_key, image_digest
from tabvlm.read.ppocr import PPOCRReader

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "examples" / "en-span.png"


@pytest.fixture()
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The names the real reader is called with."""
    seen: list[str | None] = []
    real = PPOCRReader.read

    def counting(self, image, name=None):  # noqa: ANN001, ANN202
        seen.append(name)
        return real(self, image, name)

    monkeypatch.setattr(PPOCRReader, "read", counting)
    return seen


def test_a_second_read_of_the_same_image_is_a_cache_hit(calls: list) -> None:
    cache = WordCache()
    first = read_words(IMAGE, cache=cache)
    again = read_words(IMAGE.read_bytes(), cache=cache)  # the same bytes, given another way
    assert calls == [str(IMAGE)] and again == first and cache.hits == 1 and cache.misses == 1
    assert any(w.text == "Lewis," for w in first)
    read_words(IMAGE, cache=cache, use_cls=True)  # other options: another entry
    read_words(IMAGE, cache=cache, threads=2)  # threads change speed, not words: a hit
    assert len(calls) == 2 and len(cache) == 2


def test_the_disk_cache_serves_another_process_and_survives_a_bad_file(
    calls: list, tmp_path: Path, caplog
) -> None:
    first = read_words(IMAGE, cache=WordCache(folder=tmp_path))
    files = list(tmp_path.glob("*/*.json"))
    assert len(files) == 1 and not list(tmp_path.glob("**/*.tmp"))
    assert [Word.from_dict(d) for d in json.loads(files[0].read_text())["words"]] == first
    assert read_words(IMAGE, cache=WordCache(folder=tmp_path)) == first  # a fresh cache: from the file
    assert len(calls) == 1
    files[0].write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="tabvlm.read.cache"):
        assert read_words(IMAGE, cache=WordCache(folder=tmp_path)) == first
    assert len(calls) == 2 and "unreadable reader-cache entry" in caplog.text


def test_memory_is_a_bounded_lru() -> None:
    cache = WordCache(max_items=2)
    word = [Word("a", (0, 0, 1, 1))]
    for key in ("k1", "k2"):
        cache.put(key, word)
    assert cache.get("k1") == word  # k1 used: k2 is now the oldest
    cache.put("k3", word)
    assert len(cache) == 2 and cache.get("k2") is None and cache.get("k1") == word


def test_keys_depend_on_bytes_and_reader() -> None:
    d1, d2 = image_digest(b"png-1"), image_digest(b"png-2")
    assert d1 != d2 and len(d1) == 64
    assert cache_key(d1, "ppocr/a") != cache_key(d1, "ppocr/b") != cache_key(d2, "ppocr/b")
    assert cache_key(d1, "ppocr/a") == cache_key(image_digest(b"png-1"), "ppocr/a")


class CountingReader:
    """A reader backend with no engine: one word, and a count of its reads."""

    name = "counting"
    cache_id = "counting/1"

    def __init__(self) -> None:
        self.reads = 0

    def read(self, image, name=None) -> list[Word]:  # noqa: ANN001
        self.reads += 1
        return [Word("w", (0.0, 0.0, float(image.size[0]), float(image.size[1])))]


def test_no_cache_no_key_and_a_cache_key_hashes_a_decoded_image_in_strips(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import hashlib

    import numpy as np
    from PIL import Image

    import tabvlm.read
    from tabvlm.read import READERS, cache

    backend = CountingReader()
    monkeypatch.setitem(READERS, "counting", lambda **options: backend)
    rng = np.random.default_rng(0)
    page = Image.fromarray(rng.integers(0, 256, (700, 1000, 3), dtype=np.uint8), "RGB")  # 2.1 MB
    page.save(tmp_path / "page.png")

    def no_key(*args):  # noqa: ANN002, ANN202
        raise AssertionError("a cache key was made with cache=False")

    with monkeypatch.context() as m:
        m.setattr(tabvlm.read, "pixels_digest", no_key)
        m.setattr(tabvlm.read, "image_digest", no_key)
        for source in (page, tmp_path / "page.png", (tmp_path / "page.png").read_bytes()):
            assert tabvlm.read.read_words(source, "counting", cache=False)[0].box == (0, 0, 1000, 700)
    assert backend.reads == 3
    # in strips of rows (3 here), the key the whole image's bytes gave: caches on disk stay valid
    whole = hashlib.sha256(f"{page.mode}:{page.size}:".encode() + page.tobytes()).hexdigest()
    assert cache.pixels_digest(page) == whole and 1000 * 3 * 700 > 2 * cache.STRIP_BYTES
    store = WordCache()
    first = tabvlm.read.read_words(page, "counting", cache=store)
    assert tabvlm.read.read_words(page.copy(), "counting", cache=store) == first and backend.reads == 4
