"""Importers: other datasets' formats -> canonical `Record`s (see records.py).

Images stay where they are: an importer only resolves each image's path (relative ones against
`image_root`, by default the input file's folder); `write_records` then writes them relative to
the output jsonl. Nothing is copied.

- `paddle`: PaddleOCR-VL / ERNIEKit SFT-VL jsonl.
  `{"image_info": [{"matched_text_index": 0, "image_url": "a.jpg"}],
    "text_info": [{"text": "Table Recognition:", "tag": "mask"}, {"text": "<fcel>..", "tag": "no_mask"}]}`
  `mask` text is the prompt (user turn), `no_mask` text the answer (assistant turn). The image goes
  at the start of the first user turn. PaddleOCR-VL's four task prompts become tabvlm's
  (`OCR:` -> ocr, `Table Recognition:` -> otsl: its tables are OTSL, `Formula Recognition:` ->
  formula, `Chart Recognition:` -> chart), recorded in `meta.task`; other prompts are kept.
- `llava`: LLaVA / MiniMind-V (jsonl, or one JSON array as LLaVA ships it).
  `{"id": "1", "image": "a.jpg", "conversations": [{"from": "human", "value": "<image>\\nQ"},
  {"from": "gpt", "value": "A"}]}`; `human` -> user, `gpt` -> assistant (role/content turns are
  accepted too). As LLaVA's own preprocessing does, the placeholder is moved to the front of the
  first user turn.
- `pubtabnet`: PubTabNet jsonl. `{"filename": "PMC1.png", "split": "train", "imgid": 0,
  "html": {"structure": {"tokens": ["<thead>", "<tr>", "<td>", "</td>", ...]},
  "cells": [{"tokens": ["N", "o", "."], "bbox": [1, 2, 30, 12]}, ...]}}`. The image is
  `image_root/<split>/<filename>`. The HTML is rebuilt from the structure tokens (each `<td>` or
  the `>` closing a `<td colspan=..` opens a cell) and the cell tokens (single characters
  escaped, multi-character ones are inline tags such as `<b>`); a cell without a bbox is empty.
  The answer is that table canonicalised by `tabvlm.tables.html` (strict: a table that would need
  a repair is reported, not guessed at); the prompt is the html task's.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tabvlm.data.records import Record, iter_json_items, validate_record
from tabvlm.errors import DataError, TableError
from tabvlm.tables.html import parse_html, to_html
from tabvlm.tasks import IMAGE_PLACEHOLDER, user_prompt

PADDLE_TASKS = {
    "OCR:": "ocr",
    "Table Recognition:": "otsl",
    "Formula Recognition:": "formula",
    "Chart Recognition:": "chart",
}
LLAVA_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}


def _image_path(value: Any, image_root: Path, check_images: bool, what: str) -> Path:
    """Resolve one image reference; DataError when it is not a local path or (checked) missing."""
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{what} must be a non-empty path string, found {value!r}")
    if value.startswith(("http://", "https://")):
        raise DataError(f"{what} is a URL ({value}); download the images and point at the files")
    path = (image_root / value).resolve()
    if check_images and not path.is_file():
        raise DataError(f"image not found: {path}")
    return path


def convert_paddle(obj: Any, image_root: Path, check_images: bool = True) -> Record:
    """One ERNIEKit SFT-VL object -> Record (see the module docstring)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("text_info"), list):
        raise DataError("expected an object with a 'text_info' list (ERNIEKit SFT-VL format)")
    infos = obj.get("image_info") or []
    if not isinstance(infos, list) or len(infos) > 1 or (infos and not isinstance(infos[0], dict)):
        raise DataError(
            f"'image_info' must be a list of at most one {{'image_url': ...}}, found {infos!r:.80}"
        )
    image = _image_path(infos[0].get("image_url"), image_root, check_images, "image_url") if infos else None
    turns, meta = [], {"source": "paddle"}
    for i, item in enumerate(obj["text_info"]):
        tag = item.get("tag") if isinstance(item, dict) else None
        if tag not in ("mask", "no_mask") or not isinstance(item.get("text"), str):
            raise DataError(
                f"text_info[{i}]: expected {{'text': str, 'tag': 'mask' (prompt) or "
                f"'no_mask' (answer)}}, found {item!r:.80}"
            )
        turns.append({"role": "user" if tag == "mask" else "assistant", "content": item["text"]})
    first_user = next((t for t in turns if t["role"] == "user"), None)
    if image is not None and first_user is not None:
        task = PADDLE_TASKS.get(first_user["content"].strip())
        if task:
            first_user["content"] = user_prompt(task)
            meta["task"] = task
        else:
            first_user["content"] = f"{IMAGE_PLACEHOLDER}\n{first_user['content']}"
    return Record(image=image, conversations=turns, meta=meta)


def convert_llava(obj: Any, image_root: Path, check_images: bool = True) -> Record:
    """One LLaVA / MiniMind-V object -> Record (see the module docstring)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("conversations"), list):
        raise DataError("expected an object with a 'conversations' list (LLaVA format)")
    value = obj.get("image")
    if isinstance(value, list):  # LLaVA-OneVision style; tabvlm records hold one image
        if len(value) > 1:
            raise DataError(f"{len(value)} images; a tabvlm record holds one")
        value = value[0] if value else None
    image = _image_path(value, image_root, check_images, "'image'") if value is not None else None
    turns = []
    for i, turn in enumerate(obj["conversations"]):
        if not isinstance(turn, dict):
            raise DataError(f"conversations[{i}]: expected an object, found {turn!r:.80}")
        speaker, text = turn.get("from", turn.get("role")), turn.get("value", turn.get("content"))
        if speaker not in LLAVA_ROLES or not isinstance(text, str):
            raise DataError(
                f"conversations[{i}]: expected 'from' human/gpt/system and a string "
                f"'value', found {turn!r:.80}"
            )
        turns.append({"role": LLAVA_ROLES[speaker], "content": text})
    if image is not None:
        first = next((t for t in turns if t["role"] == "user"), None)
        if any(IMAGE_PLACEHOLDER in t["content"] for t in turns if t is not first):
            raise DataError(
                f"{IMAGE_PLACEHOLDER} outside the first user turn; a tabvlm record "
                "holds one image, in the first user turn"
            )
        if first is not None:
            text = first["content"].replace(IMAGE_PLACEHOLDER, "").strip()
            first["content"] = f"{IMAGE_PLACEHOLDER}\n{text}"
    meta: dict[str, Any] = {"source": "llava"}
    if "id" in obj:
        meta["id"] = obj["id"]
    return Record(image=image, conversations=turns, meta=meta)


def pubtabnet_html(annotation: Any) -> str:
    """PubTabNet's `html` field -> the raw table HTML (`<table>...</table>`, not canonical)."""
    if not isinstance(annotation, dict):
        raise DataError("no 'html' annotation (the PubTabNet test split has none)")
    tokens = (annotation.get("structure") or {}).get("tokens")
    cells = annotation.get("cells")
    if not isinstance(tokens, list) or not isinstance(cells, list):
        raise DataError("'html' must hold 'structure': {'tokens': [...]} and 'cells': [...]")
    slots = sum(1 for t in tokens if t in ("<td>", ">"))
    if slots != len(cells):
        raise DataError(f"structure has {slots} cells but 'cells' has {len(cells)}")
    out, cell_iter = [], iter(cells)
    for tok in tokens:
        out.append(tok)
        if tok in ("<td>", ">"):
            cell = next(cell_iter)
            if isinstance(cell, dict) and "bbox" in cell:  # no bbox: an empty cell in PubTabNet
                out.extend(html.escape(t) if len(t) == 1 else t for t in cell.get("tokens", []))
    return f"<table>{''.join(out)}</table>"


def convert_pubtabnet(obj: Any, image_root: Path, check_images: bool = True) -> Record:
    """One PubTabNet object -> Record with the canonical table HTML as the answer."""
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, found {type(obj).__name__}")
    split, filename = obj.get("split"), obj.get("filename")
    if not isinstance(split, str) or not isinstance(filename, str):
        raise DataError(f"'split' and 'filename' must be strings, found {split!r} and {filename!r}")
    image = _image_path(f"{split}/{filename}", image_root, check_images, "split/filename")
    try:
        answer = to_html(parse_html(pubtabnet_html(obj.get("html")), strict=True))
    except TableError as e:
        raise DataError(f"table does not parse: {e}") from e
    meta: dict[str, Any] = {"source": "pubtabnet", "split": split}
    if "imgid" in obj:
        meta["imgid"] = obj["imgid"]
    return Record(
        image=image,
        conversations=[
            {"role": "user", "content": user_prompt("html")},
            {"role": "assistant", "content": answer},
        ],
        meta=meta,
    )


CONVERTERS: dict[str, Callable[[Any, Path, bool], Record]] = {
    "paddle": convert_paddle,
    "llava": convert_llava,
    "pubtabnet": convert_pubtabnet,
}


def _convert_one(
    convert: Callable[[Any, Path, bool], Record],
    item: Any,
    root: Path,
    check_images: bool,
    file: str,
    line: int,
) -> tuple[Record | None, list[DataError]]:
    """Convert one item and hold the result to the canonical schema: (record, []) or (None, errors)."""
    if isinstance(item, DataError):
        return None, [item]
    try:
        rec = convert(item, root, check_images)
    except DataError as e:
        return None, [DataError(e.reason, file, line)]
    problems = validate_record(rec.to_json(root), root)  # e.g. a source line with no answer
    if problems:
        return None, [DataError(p, file, line) for p in problems]
    rec.file, rec.line = file, line
    return rec, []


def import_records(
    path: str | Path,
    fmt: str,
    *,
    image_root: str | Path | None = None,
    check_images: bool = True,
    split: str | None = None,
    errors: list[DataError] | None = None,
) -> Iterator[Record]:
    """Records converted from a file in format `fmt` (a key of CONVERTERS), each one valid.

    `image_root` defaults to the input file's folder; `check_images` makes a missing image a
    problem. `split` keeps only PubTabNet items of that split. A bad item raises its DataError
    (file and line attached) or, with an `errors` list, is appended to it and skipped.
    """
    if fmt not in CONVERTERS:
        raise DataError(f"unknown format {fmt!r}; known: {', '.join(CONVERTERS)}")
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    for line, item in iter_json_items(path):
        if split is not None and isinstance(item, dict) and item.get("split") != split:
            continue
        rec, errs = _convert_one(CONVERTERS[fmt], item, root, check_images, str(path), line)
        if rec is not None:
            yield rec
        elif errors is None:
            raise errs[0]
        else:
            errors.extend(errs)
