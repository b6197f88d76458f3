"""tabvlm.image: loading (EXIF, errors naming the file), fitting, normalisation; and that every path
that reads a picture (predict, the API, the web UI, training records, the export's processor)
gives the same pixels for the same EXIF-rotated photo."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from images import bomb_png
from PIL import Image, ImageDraw

from tabvlm.errors import DataError
from tabvlm.image import fit_image, load_image, preprocess_image, preprocess_images, resize_to_fit

SIZE = 128  # configs/tiny.yaml's input size


def photo(width: int = 90, height: int = 40, orientation: int = 6) -> bytes:
    """A JPEG stored `width` x `height`, a dark block at its stored top-left, whose EXIF says:
    turn 90 degrees clockwise to show it (orientation 6)."""
    img = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(img).rectangle([0, 0, width // 3, height // 4], fill=(20, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def upright_reference(data: bytes) -> torch.Tensor:
    """The pixels a person sees: the stored JPEG turned by hand (ROTATE_270 is orientation 6)."""
    with Image.open(io.BytesIO(data)) as im:
        return preprocess_image(im.convert("RGB").transpose(Image.Transpose.ROTATE_270), SIZE)


# --- load_image -------------------------------------------------------------------------------


def test_exif_orientation_is_applied_from_a_path_bytes_and_a_pil_image(tmp_path: Path) -> None:
    data = photo()
    (tmp_path / "p.jpg").write_bytes(data)
    from_path = load_image(tmp_path / "p.jpg")
    from_bytes = load_image(data)
    from_pil = load_image(Image.open(io.BytesIO(data)))
    assert from_path.size == from_bytes.size == from_pil.size == (40, 90)  # upright: portrait
    assert from_path.mode == "RGB"
    assert from_path.tobytes() == from_bytes.tobytes() == from_pil.tobytes()
    assert torch.equal(preprocess_image(from_path, SIZE), upright_reference(data))


def test_load_image_makes_rgb_with_transparency_on_white() -> None:
    buf = io.BytesIO()
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(buf, "PNG")
    img = load_image(buf.getvalue())
    assert img.mode == "RGB" and img.getcolors() == [(16, (255, 255, 255))]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "the image is empty"),
        (b"not an image", "not an image"),
        (photo()[:300], "corrupt or truncated"),
        (bomb_png(30000, 30000), "decompression bomb"),
    ],
)
def test_bad_files_are_a_data_error_naming_the_file(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(DataError, match=words) as e:
        load_image(path)
    assert e.value.file == str(path) and str(e.value).startswith(f"{path}: ")
    with pytest.raises(DataError, match=words) as e:
        load_image(content, name="upload")
    assert e.value.file == "upload"


def test_missing_file_directory_and_pixel_limit(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing.png: no such image file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(DataError, match="is a directory"):
        load_image(tmp_path)
    Image.new("RGB", (300, 200), "white").save(tmp_path / "big.png")
    with pytest.raises(DataError, match="300x200 = 60000 pixels is over the limit of 50000 pixels"):
        load_image(tmp_path / "big.png", max_pixels=50_000)
    with pytest.raises(DataError, match="accepted formats \\(JPEG\\)"):
        load_image(tmp_path / "big.png", formats=["JPEG"])


# --- fit, resize, normalise -------------------------------------------------------------------


def test_preprocess_keeps_aspect_pads_white_top_left() -> None:
    img = Image.new("RGB", (200, 100), (0, 0, 0))  # wide black image
    x = preprocess_image(img, 64)
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert (x[:, :32, :] == -1.0).all()  # black content scaled to 64x32, at the top
    assert (x[:, 32:, :] == 1.0).all()  # white padding below
    tall = preprocess_image(Image.new("L", (10, 40), 0), 64)  # grey converts to RGB
    assert (tall[:, :, :16] == -1.0).all() and (tall[:, :, 16:] == 1.0).all()
    # A transparent background becomes white, not black.
    clear = preprocess_image(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), 8)
    assert (clear == 1.0).all()
    deep = preprocess_image(Image.new("I;16", (8, 8), 65535), 8)  # 16-bit grey keeps its range
    assert (deep == 1.0).all() and (preprocess_image(Image.new("I;16", (8, 8), 0), 8) == -1.0).all()
    mid = preprocess_image(Image.new("RGB", (4, 4), (255, 0, 128)), 4)
    assert mid[:, 0, 0].tolist() == pytest.approx([1.0, -1.0, 128 / 127.5 - 1], abs=1e-6)
    batch = preprocess_images([img, Image.new("RGB", (30, 60), "white")], 64)
    assert batch.shape == (2, 3, 64, 64) and torch.equal(batch[0], x)


def noisy(width: int, height: int, mode: str, seed: int) -> Image.Image:
    rng = random.Random(seed)
    return Image.frombytes(mode, (width, height), rng.randbytes(width * height * len(mode)))


@pytest.mark.parametrize(
    ("width", "height", "mode", "size"),
    [
        (1500, 900, "RGB", 128),
        (901, 1999, "RGBA", 128),
        (333, 77, "RGB", 512),
        (64, 64, "L", 128),
        (3, 1000, "RGB", 128),
    ],
)
def test_resize_to_fit_then_fit_equals_fit(width: int, height: int, mode: str, size: int) -> None:
    img = noisy(width, height, mode, seed=width)
    small = resize_to_fit(img, size)
    assert max(small.size) == size and small.mode == "RGB"
    assert fit_image(small, size).tobytes() == fit_image(img, size).tobytes()
    assert resize_to_fit(small, size) is small  # nothing left to do


# --- one loader everywhere --------------------------------------------------------------------


def test_image_loading_needs_neither_the_data_nor_the_train_package() -> None:
    code = (
        "import sys, tabvlm.image, tabvlm.recognizer, tabvlm.serve.inputs; "
        "print([m for m in sys.modules if m.startswith(('tabvlm.data', 'tabvlm.train'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_same_photo_gives_the_same_pixels_through_every_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """predict (TableRecognizer), the API (request bytes), the web UI (an uploaded file) and the
    training records (JsonlDataset) all see the upright photo, pixel for pixel."""
    from tabvlm import recognizer as recognizer_module
    from tabvlm.data.dataset import JsonlDataset
    from tabvlm.generate import Generation
    from tabvlm.recognizer import TableRecognizer
    from tabvlm.serve.inputs import decode_image, read_image_file
    from tabvlm.tasks import user_prompt

    data = photo()
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    want = upright_reference(data)

    rec = TableRecognizer.from_pretrained("configs/tiny.yaml", max_new_tokens=4)
    seen: list[torch.Tensor] = []

    def spy(model, tokenizer, pixel_values, prompts, **kwargs):  # noqa: ANN001, ANN202
        seen.append(pixel_values)
        return Generation([[]] * len(prompts), [""] * len(prompts), ["eos"] * len(prompts))

    monkeypatch.setattr(recognizer_module, "generate", spy)
    rec.predict(path)
    paths = {"predict": seen[0][0]}

    paths["api"] = preprocess_images([decode_image(data, 1 << 20, 1 << 20)], SIZE)[0]
    paths["web ui"] = preprocess_images([read_image_file(path, 1 << 20, 1 << 20)], SIZE)[0]

    conv = [
        {"role": "user", "content": user_prompt("html")},
        {"role": "assistant", "content": "<table></table>"},
    ]
    (tmp_path / "train.jsonl").write_text(json.dumps({"image": "photo.jpg", "conversations": conv}) + "\n")
    dataset = JsonlDataset(tmp_path / "train.jsonl", rec.tokenizer, SIZE, rec.model.image_tokens, 512)
    paths["training records"] = dataset[0]["pixel_values"][0]

    for name, pixels in paths.items():
        assert torch.equal(pixels, want), f"{name} sees other pixels"
