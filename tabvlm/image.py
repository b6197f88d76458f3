"""Images in: the one way a picture becomes model pixels, for every path that reads one.

    from tabvlm.image import load_image, fit_image, preprocess_image
    img = load_image("photo.jpg")            # RGB, upright (EXIF applied), checked
    x = preprocess_image(img, 512)           # (3, 512, 512) float32 in [-1, 1]

`tabvlm predict` and `TableRecognizer` (files), the server (request bytes and the web UI's
uploads), the training records (`tabvlm.data.dataset.JsonlDataset`) and the transformers export
(give its processor `fit_image`) all go through this module, so one photo gives the same pixels
everywhere. Steps:

    path or bytes --load_image--> RGB, EXIF orientation applied
                  --resize_to_fit--> longer side = size (aspect kept)
                  --fit_image--> size x size, white padding right and bottom
                  --preprocess_image--> (3, size, size) float32 in [-1, 1]

`fit_image(resize_to_fit(img, s), s)` is `fit_image(img, s)` pixel for pixel, so a caller that
holds images for a while (the server's queue) can shrink them right after decoding.
This module imports neither `tabvlm.data` nor `tabvlm.train`.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from tabvlm.errors import DataError

logger = logging.getLogger(__name__)

ImageSource = str | Path | bytes | Image.Image
EXIF_ORIENTATION = 0x0112


def load_image(
    source: ImageSource,
    *,
    max_pixels: int | None = None,
    formats: Sequence[str] | None = None,
    name: str | None = None,
) -> Image.Image:
    """An RGB PIL image, fully decoded and upright, from a path, bytes or a PIL image.

    - The EXIF orientation is applied (a phone photo comes upright); a PIL image given in gets
      it too, so `load_image(Image.open(p))` equals `load_image(p)`.
    - Transparency is composited on white, 16-bit grey keeps its range (`to_rgb`).
    - `max_pixels`: width x height read from the header, refused before any decoding. Without
      it PIL's own decompression-bomb guard (`Image.MAX_IMAGE_PIXELS`) still applies.
    - `formats`: the PIL format names accepted (None: every format PIL reads).
    Every failure (missing file, not an image, corrupt or truncated data, too many pixels) is a
    DataError naming the file (`name`, else the path; bytes without a name are unnamed).
    """
    if isinstance(source, Image.Image):
        return to_rgb(_upright(source))
    if isinstance(source, bytes | bytearray | memoryview):
        where, empty = name, not len(source)
        opener: object = io.BytesIO(source)
    else:
        where, path = name or str(source), Path(source)
        if path.is_dir():
            raise DataError("is a directory, not an image", file=where)
        empty, opener = path.is_file() and path.stat().st_size == 0, path
    if empty:
        raise DataError("the image is empty (0 bytes)", file=where)
    try:
        with Image.open(opener, formats=list(formats) if formats else None) as img:  # type: ignore[arg-type]
            w, h = img.size
            if max_pixels is not None and w * h > max_pixels:
                raise DataError(
                    f"image of {w}x{h} = {w * h} pixels is over the limit of {max_pixels} pixels",
                    file=where,
                )
            img.load()  # decode now, inside the try: a truncated file fails here
            return to_rgb(_upright(img))  # the pixels live in memory now; closing the file is fine
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError("no such image file", file=where) from e
    # the Warning is raised, not warned, only where warnings are errors; both mean a bomb
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(
            f"cannot read the image: too many pixels (decompression bomb guard: {e})", where
        ) from e
    except UnidentifiedImageError as e:
        accepted = f", or not one of the accepted formats ({', '.join(formats)})" if formats else ""
        raise DataError(f"cannot read the image: not an image, or a corrupt image{accepted}", where) from e
    except OSError as e:
        if e.errno is not None:  # the file system's error (permission, I/O), not PIL's
            raise DataError(f"cannot read the image file ({e.strerror})", where) from e
        raise DataError(f"cannot read the image: corrupt or truncated image ({e})", where) from e
    except (ValueError, SyntaxError) as e:  # PIL's other ways of saying "corrupt"
        raise DataError(f"cannot read the image: corrupt or truncated image ({e})", where) from e


def _upright(img: Image.Image) -> Image.Image:
    """`img` turned as its EXIF orientation says (itself when there is nothing to turn). A
    malformed EXIF block is logged and the pixels are kept as stored."""
    try:
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
        if orientation in (2, 3, 4, 5, 6, 7, 8):
            return ImageOps.exif_transpose(img)
    except Exception as e:  # noqa: BLE001 (PIL's EXIF parser raises many kinds on bad blocks)
        logger.warning("EXIF orientation not applied (%s: %s)", type(e).__name__, e)
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with transparent parts composited on white (a plain convert would make them black)."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16"):  # 16-bit grey: keep the top byte (a plain convert clips to white)
        return Image.fromarray((np.asarray(img) >> 8).astype(np.uint8)).convert("RGB")
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")  # no copy of a large RGBA page
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return img.convert("RGB")


def resize_to_fit(img: Image.Image, size: int) -> Image.Image:
    """RGB image whose longer side is `size` (aspect kept): `fit_image` before its padding.

    Applying it again changes nothing, so `fit_image(resize_to_fit(img, size), size)` equals
    `fit_image(img, size)` exactly: a holder of many images can keep this small copy instead."""
    img = to_rgb(img)
    w, h = img.size
    if w < 1 or h < 1:
        raise DataError(f"image is {w}x{h}; expected a non-empty image")
    scale = size / max(w, h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    if (new_w, new_h) == (w, h):
        return img
    # reducing_gap=2: a cheap box reduce first on large downscales, then bicubic (Pillow: "close
    # to fair resampling"); ~1.5x faster on page-sized inputs
    return img.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=2.0)


def fit_image(img: Image.Image, size: int) -> Image.Image:
    """RGB `size` x `size` PIL image: longer side resized to `size` (aspect kept), then padded
    with white on the right and bottom.

    The table sits at the top-left corner so that text positions stay where a top-left origin
    puts them whatever the aspect; padding only ever extends the right or bottom edge.
    """
    img = resize_to_fit(img, size)
    if img.size == (size, size):
        return img
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(img, (0, 0))
    return canvas


def normalise(arr: np.ndarray) -> torch.Tensor:
    """uint8 (..., S, S, 3) -> float32 (..., 3, S, S) in [-1, 1] (SigLIP: mean = std = 0.5)."""
    # numpy, not torch: on a few busy CPU cores torch's threaded permute+cast is ~50x slower here
    chw = np.ascontiguousarray(np.moveaxis(arr, -1, -3)).astype(np.float32)
    return torch.from_numpy(chw / np.float32(127.5) - np.float32(1.0))


def preprocess_image(img: Image.Image, size: int) -> torch.Tensor:
    """Image -> (3, size, size) float32 in [-1, 1]: `fit_image` then SigLIP normalisation
    (x / 127.5 - 1). White padding is exactly 1.0."""
    return normalise(np.asarray(fit_image(img, size), dtype=np.uint8))  # (3, S, S)


def preprocess_images(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """Batched `preprocess_image`: (N, 3, size, size)."""
    if not images:
        return torch.empty(0, 3, size, size)
    return normalise(np.stack([np.asarray(fit_image(im, size), dtype=np.uint8) for im in images]))
