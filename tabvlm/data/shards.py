"""Pre-rendered samples in shards: tar files in webdataset layout, written atomically, read by index.

Browser rendering is slower than PIL drawing, so its samples are rendered once (`tabvlm synth
--renderer browser --shard-size K`) and streamed by training (`data.shards`, `data.shard_ratio`).

Layout (webdataset's: https://github.com/webdataset/webdataset): `shard-NNNNNN.tar`, plain
(uncompressed) tar; each sample is two consecutive members sharing a key, `KEY.png` (the image,
PNG bytes) and `KEY.json`: the grid (`table`: n_rows, n_cols, header_rows, cells as
[text, row, col, rowspan, colspan]), its canonical `html` (for people and other tools; the grid is
what is read back), `cell_boxes`, `text_boxes`, `glyphs` ([char, x0, y0, x1, y1] a drawn
character), `style`, and `seed` / `index` (sample i of a run depends on (seed, i) only). Any
webdataset reader reads these shards; this module reads them by sample index, which is what exact
resume needs.

A shard is written under `shard-NNNNNN.tar.tmp` and renamed when complete (`os.replace`, atomic on
one filesystem), so a file under a final name is always whole; a killed writer leaves at most a
`.tmp`, which the next run overwrites and readers never match.
"""

from __future__ import annotations

import glob
import io
import json
import os
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from tabvlm.data.render import Rendered
from tabvlm.errors import DataError
from tabvlm.tables.grid import Cell, Table
from tabvlm.tables.html import to_html

SHARD_NAME = "shard-{:06d}.tar"


def shard_path(folder: Path, number: int) -> Path:
    """The final name of shard `number` in `folder`."""
    return folder / SHARD_NAME.format(number)


def table_to_json(table: Table) -> dict:
    return {
        "n_rows": table.n_rows,
        "n_cols": table.n_cols,
        "header_rows": table.header_rows,
        "cells": [[c.text, c.row, c.col, c.rowspan, c.colspan] for c in table.cells],
    }


def table_from_json(data: dict) -> Table:
    cells = [Cell(text, row, col, rs, cs) for text, row, col, rs, cs in data["cells"]]
    table = Table(data["n_rows"], data["n_cols"], cells, data["header_rows"])
    table.validate()
    return table


@dataclass
class ShardSample:
    """One sample read back: the grid, its drawing, and the run it came from."""

    key: str
    table: Table
    rendered: Rendered
    meta: dict  # seed, index


def encode_sample(table: Table, rendered: Rendered, seed: int, index: int) -> tuple[bytes, bytes]:
    """(PNG bytes, JSON bytes) of one sample."""
    buf = io.BytesIO()
    rendered.image.save(buf, format="PNG", compress_level=3)
    record = {
        "seed": seed,
        "index": index,
        "table": table_to_json(table),
        "html": to_html(table),
        "cell_boxes": [list(b) for b in rendered.cell_boxes],
        "text_boxes": [None if b is None else list(b) for b in rendered.text_boxes],
        "glyphs": [[ch, *b] for ch, b in rendered.glyph_boxes],
        "style": rendered.style,
    }
    return buf.getvalue(), json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_sample(key: str, png: bytes, data: bytes) -> ShardSample:
    """The inverse of `encode_sample`."""
    rec = json.loads(data)
    with Image.open(io.BytesIO(png)) as im:
        image = im.convert("RGB")
    rendered = Rendered(
        image,
        [tuple(b) for b in rec["cell_boxes"]],
        [None if b is None else tuple(b) for b in rec["text_boxes"]],
        rec["style"],
        [(g[0], tuple(g[1:])) for g in rec["glyphs"]],
    )
    return ShardSample(
        key, table_from_json(rec["table"]), rendered, {"seed": rec["seed"], "index": rec["index"]}
    )


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed metadata: same samples, same bytes
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: Path, samples: Iterable[tuple[Table, Rendered, int, int]]) -> int:
    """Write (table, rendered, seed, index) samples to shard `path`, atomically; returns the count.
    Keys are the zero-padded sample indices."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "wb") as f:
        with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for table, rendered, seed, index in samples:
                png, data = encode_sample(table, rendered, seed, index)
                key = f"{index:09d}"
                _add(tar, f"{key}.png", png)
                _add(tar, f"{key}.json", data)
                n += 1
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return n


def expand_shards(patterns: Sequence[str]) -> list[Path]:
    """The shard files the glob `patterns` match, sorted, without duplicates; DataError when a
    pattern matches no file (a typo would otherwise train on PIL tables alone)."""
    out: list[Path] = []
    for pattern in patterns:
        found = sorted(p for p in glob.glob(os.path.expanduser(pattern)) if p.endswith(".tar"))
        if not found:
            raise DataError(f"data.shards: {pattern!r} matches no .tar file")
        out += [Path(p) for p in found if Path(p) not in out]
    return out


class ShardReader:
    """The samples of some shards, by index (0 .. len-1, shard after shard, in file order).

    The tar headers are read once here (a seek a member: fast for uncompressed tar); a sample is
    two reads at known offsets. File handles are opened per process (safe in DataLoader workers).
    """

    def __init__(self, paths: Sequence[str | Path]):
        self.paths = [str(p) for p in paths]
        self.index: list[tuple[int, str, int, int, int, int]] = []  # (file, key, png at, size, json at, size)
        for f, path in enumerate(self.paths):
            try:
                with tarfile.open(path, mode="r:") as tar:
                    members = tar.getmembers()
            except (OSError, tarfile.TarError) as e:
                raise DataError(f"not a readable tar shard ({e})", path) from e
            parts: dict[str, dict[str, tuple[int, int]]] = {}
            for m in members:
                key, _, ext = m.name.partition(".")
                parts.setdefault(key, {})[ext] = (m.offset_data, m.size)
            for key, p in parts.items():
                if set(p) != {"png", "json"}:
                    raise DataError(f"sample {key!r} has members {sorted(p)}; expected png and json", path)
                self.index.append((f, key, *p["png"], *p["json"]))
        if not self.index:
            raise DataError(f"no samples in shards {self.paths}")
        self._files: dict[int, object] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.index)

    def _read(self, f: int, at: int, size: int) -> bytes:
        if self._pid != os.getpid():  # a forked worker: its own handles
            self._files, self._pid = {}, os.getpid()
        fh = self._files.get(f)
        if fh is None:
            fh = self._files[f] = open(self.paths[f], "rb")  # noqa: SIM115 (kept open for reuse)
        fh.seek(at)
        data = fh.read(size)
        if len(data) != size:
            raise DataError(f"truncated shard: wanted {size} bytes at {at}, got {len(data)}", self.paths[f])
        return data

    def __getitem__(self, k: int) -> ShardSample:
        if not 0 <= k < len(self.index):
            raise IndexError(f"sample {k} out of range for {len(self.index)} shard samples")
        f, key, png_at, png_size, json_at, json_size = self.index[k]
        return decode_sample(key, self._read(f, png_at, png_size), self._read(f, json_at, json_size))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_files"] = {}  # handles do not cross process boundaries
        return state
