"""Request bodies to PIL images, entirely in memory, with the server's limits.

Nothing here touches the file system but `read_image_file` (the web UI's uploads, which Gradio
has already written to its upload folder): the body is read into one bytearray (counted as it
arrives, never copied whole), multipart forms are split by python-multipart's streaming parser
into bytearrays (Starlette's own form parser would spool large files to a temporary file), base64
is decoded without another copy of its text where it holds no line breaks, and images decode from
BytesIO. A body that stops arriving is cut off (408) after the body timeout, so a stalled client
cannot hold a connection and its half body for ever. Each failure is an `InputError` carrying the
HTTP status the API answers with.
"""

from __future__ import annotations

import asyncio
import binascii
import os
from collections.abc import AsyncIterator
from pathlib import Path

from PIL import Image
from python_multipart.multipart import MultipartParser, parse_options_header

from tabvlm.errors import DataError
from tabvlm.image import load_image

# Formats worth accepting for a table picture; a short list keeps PIL's rarer decoders out of reach.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
MULTIPART_SLACK = 64 * 1024  # form boundaries and headers around the file
# base64 inflates by 4/3, and by 78/76 more when wrapped at 76 columns with CRLF (MIME, `base64`);
# the JSON around it is small
JSON_BODY_FACTOR = 4 / 3 * 78 / 76
BASE64_WHITESPACE = str.maketrans("", "", " \t\r\n")  # what wrapped base64 holds besides its alphabet


class InputError(DataError):
    """A request the server refuses; `status` is the HTTP code (400, 413, ...)."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


def body_limit(max_image_bytes: int) -> int:
    """The most body bytes read for an image limit: room for base64 or multipart framing."""
    return int(max_image_bytes * JSON_BODY_FACTOR) + MULTIPART_SLACK


def check_content_length(content_length: str | None, limit: int) -> None:
    """Refuse (413) a body whose declared length is over `limit` before reading any of it."""
    if content_length is None:
        return
    try:
        declared = int(content_length)
    except ValueError as e:
        raise InputError(400, f"Content-Length is not a number: {content_length!r}") from e
    if declared > limit:
        raise InputError(413, f"request body of {declared} bytes is over the limit of {limit} bytes")


async def read_body(
    content_length: str | None, chunks: AsyncIterator[bytes], limit: int, timeout: float | None = None
) -> bytearray:
    """The whole body, refusing (413) as soon as Content-Length or the bytes counted so far pass
    `limit` (a client may lie about, or leave out, Content-Length), and (408) when it has not all
    arrived within `timeout` seconds (a stalled or trickling client). A bytearray, not bytes: the
    caller frees it with `.clear()` once parsed, and no whole-body copy is ever made."""
    check_content_length(content_length, limit)
    buf = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in chunks:
                buf += chunk
                if len(buf) > limit:
                    raise InputError(413, f"request body is over the limit of {limit} bytes")
    except TimeoutError as e:
        raise InputError(
            408, f"the request body did not arrive within {timeout} s ({len(buf)} bytes came)"
        ) from e
    return buf


def parse_multipart(content_type: str, body: bytes | bytearray) -> dict[str, bytearray]:
    """Form fields by name (the first of each), values as bytearrays, parsed in memory."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise InputError(400, "multipart/form-data without a boundary")
    fields: dict[str, bytearray] = {}
    state: dict[str, object] = {"name": None, "data": bytearray(), "hfield": b"", "hvalue": b""}

    def on_part_begin() -> None:
        state.update(name=None, data=bytearray())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["hfield"] = state["hfield"] + data[start:end]  # type: ignore[operator]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["hvalue"] = state["hvalue"] + data[start:end]  # type: ignore[operator]

    def on_header_end() -> None:
        if state["hfield"].lower() == b"content-disposition":  # type: ignore[union-attr]
            _, opts = parse_options_header(state["hvalue"])  # type: ignore[arg-type]
            name = opts.get(b"name")
            state["name"] = name.decode("utf-8", "replace") if name else None
        state.update(hfield=b"", hvalue=b"")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        state["data"] += data[start:end]  # type: ignore[operator]

    def on_part_end() -> None:
        name = state["name"]
        if isinstance(name, str) and name not in fields:
            fields[name] = state["data"]  # type: ignore[assignment]

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except Exception as e:  # python-multipart raises its own error types, and ValueError
        raise InputError(400, f"malformed multipart/form-data body ({e})") from e
    return fields


def decode_base64_image(text: str) -> bytes:
    """Image bytes from plain base64 or a `data:image/...;base64,` URI. Line breaks and spaces
    inside are ignored (`base64 FILE` wraps at 76 columns); any other character outside the
    base64 alphabet is refused (400). The text is copied at most twice (the part after a data
    URI's comma; the text without its line breaks), never re-encoded."""
    if text.startswith("data:"):
        comma = text.find(",")
        if comma < 0 or ";base64" not in text[:comma]:
            raise InputError(400, "expected a base64 data URI (data:image/png;base64,...)")
        text = text[comma + 1 :]
    if any(c in text for c in " \t\r\n"):
        text = text.translate(BASE64_WHITESPACE)
    try:
        # an ASCII str is read in place (base64.b64decode would first encode a copy of it)
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as e:
        raise InputError(400, f"the image is not valid base64 ({e})") from e


def decode_image(data: bytes | bytearray, max_bytes: int, max_pixels: int) -> Image.Image:
    """An RGB PIL image from bytes, through `tabvlm.image.load_image` (the loader predict and
    training use: EXIF orientation applied, alpha on white): 413 over `max_bytes`; 400 for
    empty, unknown, corrupt or too-many-pixel images, the pixel count checked from the header
    before decoding."""
    if len(data) > max_bytes:
        raise InputError(413, f"image of {len(data)} bytes is over the limit of {max_bytes} bytes")
    try:
        return load_image(data, max_pixels=max_pixels, formats=IMAGE_FORMATS)
    except DataError as e:
        raise InputError(400, e.reason) from e


def read_image_file(path: str | Path, max_bytes: int, max_pixels: int) -> Image.Image:
    """`decode_image` of a file's bytes (the web UI's uploads; the API never reads a file). A file
    over `max_bytes` is refused (413) from its size, without reading it."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise InputError(413, f"image of {size} bytes is over the limit of {max_bytes} bytes")
            data = f.read(max_bytes + 1)  # + 1: a file that grew since is still refused
    except OSError as e:
        raise InputError(400, f"cannot read the uploaded image ({e.strerror or e})") from e
    return decode_image(data, max_bytes, max_pixels)
