"""Image files that tests build: the smallest PNG that claims a huge size."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming `width` x `height` (the IHDR patched, CRC fixed): ~70 bytes,
    what PIL's decompression-bomb guard reads before any pixel is decoded."""
    buf = io.BytesIO()
    Image.new("1", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)
