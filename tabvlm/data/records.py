"""The canonical record: one jsonl line = one image + one conversation about it.

```
{"image": "images/t1.png",
 "conversations": [{"role": "user", "content": "<image>\\nConvert the table in the image to HTML."},
                   {"role": "assistant", "content": "<table>...</table>"}],
 "meta": {"source": "synth"}}
```

- `image` (optional: text-only records train the LM alone) is relative to the jsonl file's folder;
  an absolute path is allowed.
- `conversations`: turns with `role` user / assistant / system and a string `content`; at least
  one assistant turn, none of them empty. With an image, the first user turn holds exactly one
  `<image>` placeholder and no other turn holds any; without one, no turn may hold it.
- `meta` (optional): a JSON object, free-form (source, split, category, ...).

`read_records` yields `Record`s (image path resolved) and raises, or collects, `DataError`s that
carry file and line; `check_records` is the thorough pass behind `tabvlm data check` (images
opened and verified too); `write_records` writes atomically.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from tabvlm.errors import DataError
from tabvlm.tasks import IMAGE_PLACEHOLDER

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
KEYS = ("image", "conversations", "meta")
# Above this an image is almost surely a mistake (a whole scanned page at 600 dpi is ~35 Mpx).
DEFAULT_MAX_PIXELS = 40_000_000


@dataclass
class Record:
    """One training/eval sample: the image (absolute path, or None), its chat turns, free meta."""

    image: Path | None
    conversations: list[dict[str, str]]
    meta: dict[str, Any] = field(default_factory=dict)
    file: str | None = None  # where the record was read from (None when built in memory)
    line: int | None = None

    @property
    def prompt(self) -> str:
        """The first user turn's content."""
        return next(t["content"] for t in self.conversations if t["role"] == "user")

    @property
    def answer(self) -> str:
        """The last assistant turn's content (the target for single-turn table records)."""
        return [t["content"] for t in self.conversations if t["role"] == "assistant"][-1]

    def to_json(self, base_dir: str | Path) -> dict[str, Any]:
        """The jsonl object, with the image path made relative to `base_dir` (the jsonl's folder)."""
        obj: dict[str, Any] = {}
        if self.image is not None:
            obj["image"] = Path(os.path.relpath(self.image, Path(base_dir).resolve())).as_posix()
        obj["conversations"] = [{"role": t["role"], "content": t["content"]} for t in self.conversations]
        if self.meta:
            obj["meta"] = self.meta
        return obj


def iter_json_items(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line, parsed JSON or DataError) for each item of a jsonl file or of a JSON array file.

    A file whose first non-blank character is `[` is read as one JSON array (LLaVA's and
    MiniMind-V's `.json`), each item numbered by the line it starts on; otherwise one JSON value
    per line, blank lines skipped. A last line with no newline that does not parse is reported as
    a truncated file rather than as plain bad JSON: it is what a killed writer leaves behind.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read: {e.strerror or e}", str(path)) from e
    if data.lstrip()[:1] == b"[":
        yield from _iter_array(data, str(path))
        return
    lines = data.split(b"\n")
    last = len(lines)
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            yield n, json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            yield n, DataError(f"not UTF-8 text (byte {e.start + 1} of the line)", str(path), n)
        except RecursionError:  # Python's parser recurses once per [ or {
            yield n, DataError("JSON nested too deeply to parse", str(path), n)
        except json.JSONDecodeError as e:
            if n == last:  # no newline after it
                yield (
                    n,
                    DataError(
                        "truncated file: the last line has no newline and is not valid JSON "
                        f"({e.msg}: column {e.colno}); was the writer interrupted?",
                        str(path),
                        n,
                    ),
                )
            else:
                yield n, DataError(f"bad JSON: {e.msg}: column {e.colno}", str(path), n)


def _iter_array(data: bytes, file: str) -> Iterator[tuple[int, Any]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        n = data.count(b"\n", 0, e.start) + 1
        yield n, DataError("not UTF-8 text", file, n)
        return
    decoder = json.JSONDecoder()
    pos, line, counted = text.index("[") + 1, 1, 0

    def skip_ws(p: int) -> int:
        while p < len(text) and text[p] in " \t\r\n":
            p += 1
        return p

    def line_at(p: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, p)  # incremental: the array can be large
        counted = p
        return line

    while True:
        pos = skip_ws(pos)
        if pos < len(text) and text[pos] == "]":
            return
        start = line_at(pos)
        try:
            item, pos = decoder.raw_decode(text, pos)
        except RecursionError:
            yield (
                start,
                DataError("JSON nested too deeply to parse; the rest of the file is not read", file, start),
            )
            return
        except json.JSONDecodeError as e:
            # After a broken item the rest of the array cannot be resynchronised.
            yield (
                e.lineno,
                DataError(
                    f"bad JSON in the array: {e.msg}: column {e.colno}; the rest of the file is not read",
                    file,
                    e.lineno,
                ),
            )
            return
        yield start, item
        pos = skip_ws(pos)
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos >= len(text) or text[pos] != "]":
            n = line_at(min(pos, len(text)))
            yield n, DataError("truncated file: the JSON array is not closed with ']'", file, n)
            return


def validate_record(
    obj: Any, base_dir: str | Path, *, images: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS
) -> list[str]:
    """Every problem of one parsed jsonl object as a short sentence; [] when it is a good record.

    With `images`, the image is also opened: missing, unreadable, corrupt (PIL verify, then a full
    decode) or over `max_pixels` (read from the header, before any decoding) are problems.
    """
    if not isinstance(obj, dict):
        return [f"expected a JSON object, found {type(obj).__name__}"]
    problems = [f"unknown key {k!r} (expected {', '.join(KEYS)})" for k in obj if k not in KEYS]
    image = obj.get("image")
    if "image" in obj and (not isinstance(image, str) or not image.strip()):
        problems.append(f"'image' must be a non-empty path string, found {image!r}")
        image = None
    if "meta" in obj and not isinstance(obj["meta"], dict):
        problems.append(f"'meta' must be a JSON object, found {type(obj['meta']).__name__}")
    problems += _conversation_problems(obj.get("conversations"), has_image="image" in obj)
    if images and image:
        problems += image_problems(Path(base_dir) / image, max_pixels)
    return problems


def _conversation_problems(conv: Any, has_image: bool) -> list[str]:
    if not isinstance(conv, list) or not conv:
        return [f"'conversations' must be a non-empty list of turns, found {conv!r:.60}"]
    problems: list[str] = []
    turns: list[tuple[int, str, str]] = []  # (1-based turn number, role, content)
    for i, turn in enumerate(conv, 1):
        if not isinstance(turn, dict):
            problems.append(f"turn {i}: expected an object with 'role' and 'content', found {turn!r:.60}")
            continue
        role, content = turn.get("role"), turn.get("content")
        if role not in ROLES:
            problems.append(f"turn {i}: role {role!r}, expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            problems.append(f"turn {i}: 'content' must be a string, found {type(content).__name__}")
            continue
        turns.append((i, role, content))
    assistant = [(i, c) for i, r, c in turns if r == "assistant"]
    if not any(isinstance(t, dict) and t.get("role") == "assistant" for t in conv):
        problems.append("no assistant turn (nothing to learn from)")
    problems += [
        f"turn {i}: empty answer (assistant content is blank)" for i, c in assistant if not c.strip()
    ]
    first_user = next((i for i, r, _ in turns if r == "user"), None)
    for i, _role, content in turns:
        n = content.count(IMAGE_PLACEHOLDER)
        if has_image and i == first_user and n != 1:
            what = "missing" if n == 0 else f"{n} copies of"
            problems.append(
                f"turn {i}: {what} the {IMAGE_PLACEHOLDER} placeholder; the first user turn "
                "of a record with an image holds exactly one"
            )
        elif n and (not has_image or i != first_user):
            where = "a record without an image" if not has_image else "a turn other than the first user turn"
            problems.append(f"turn {i}: {IMAGE_PLACEHOLDER} placeholder in {where}")
    if has_image and first_user is None and turns:
        problems.append(f"no user turn to hold the {IMAGE_PLACEHOLDER} placeholder")
    return problems


def image_problems(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[str]:
    """Problems of one image file: missing, unreadable, over `max_pixels`, corrupt. [] when fine."""
    if not path.is_file():
        return [f"image not found: {path}"]
    try:
        with Image.open(path) as im:  # reads the header only
            w, h = im.size
            if w * h > max_pixels:
                return [f"image {path} is {w}x{h} = {w * h} px, over the limit of {max_pixels} px"]
            im.verify()  # chunk structure and checksums, no pixel decoding
        with Image.open(path) as im:  # verify() leaves the image unusable: decode a fresh one
            im.load()  # catches truncated pixel data, which verify() misses for JPEG
    except Image.DecompressionBombError as e:
        return [f"image {path} is over PIL's decompression-bomb limit ({e})"]
    except OSError as e:  # UnidentifiedImageError is an OSError
        return [f"unreadable or corrupt image {path}: {e}"]
    except (SyntaxError, ValueError) as e:  # what some PIL plugins raise on broken files
        return [f"corrupt image {path}: {e}"]
    return []


def record_from_json(
    obj: dict[str, Any], base_dir: str | Path, file: str | None = None, line: int | None = None
) -> Record:
    """A `Record` from a jsonl object already found valid by `validate_record`."""
    image = obj.get("image")
    return Record(
        image=(Path(base_dir) / image).resolve() if image else None,
        conversations=[{"role": t["role"], "content": t["content"]} for t in obj["conversations"]],
        meta=dict(obj.get("meta") or {}),
        file=file,
        line=line,
    )


def read_records(
    path: str | Path,
    *,
    images: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    errors: list[DataError] | None = None,
) -> Iterator[Record]:
    """The good records of a jsonl file, in order.

    Without `errors`, the first bad line raises its DataError; with a list, every problem is
    appended to it (one DataError each, with file and line) and bad lines are skipped.
    `images=True` also opens every image (slow; what `tabvlm data check` does).
    """
    path = Path(path)
    base = path.parent
    for line, item in iter_json_items(path):
        if isinstance(item, DataError):
            problems = [item]
        else:
            try:
                found = validate_record(item, base, images=images, max_pixels=max_pixels)
            except RecursionError:  # parsed, but too deep to print in a message
                found = ["JSON nested too deeply to check"]
            problems = [DataError(p, str(path), line) for p in found]
        if problems:
            if errors is None:
                raise problems[0]
            errors.extend(problems)
            continue
        yield record_from_json(item, base, str(path), line)


def check_records(
    path: str | Path, *, images: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[int, list[DataError]]:
    """(number of records read, every problem) for one jsonl file; nothing is raised per line."""
    errors: list[DataError] = []
    good = sum(1 for _ in read_records(path, images=images, max_pixels=max_pixels, errors=errors))
    bad_lines = {e.line for e in errors}
    return good + len(bad_lines), errors


def write_records(path: str | Path, records: Iterable[Record]) -> int:
    """Write records as jsonl (image paths relative to the file's folder); returns the count.

    Atomic: a temporary file beside `path` is filled, flushed to disk, then renamed over it, so
    an interrupted run never leaves a half-written dataset (or clobbers the old one).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for rec in records:
                f.write(json.dumps(rec.to_json(path.parent), ensure_ascii=False) + "\n")
                n += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("wrote %d records to %s", n, path)
    return n
