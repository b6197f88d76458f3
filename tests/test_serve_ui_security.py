"""The web UI through Gradio's own HTTP routes: it reads only what was uploaded to it.

A client may put any path into a FileData payload (`POST /gradio_api/call/recognise`); Gradio must
refuse a path outside its upload folder before copying it into its cache, and `GET /gradio_api/file=`
must not hand out anything else. Images are decoded by the server's own loader, which checks the
pixel count from the header before decoding and applies the EXIF orientation.

A stub recognizer answers with the image's width, so the tests need no model and can see which
image reached it; the app, its Gradio mount and the routes are the real ones.
"""

from __future__ import annotations

import base64
import io
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageFile

from tabvlm.recognizer import Prediction
from tabvlm.serve import ServeConfig, create_app
from tabvlm.serve.inputs import decode_image
from tabvlm.tables.html import parse_html

MAX_BYTES = 200_000
MAX_PIXELS = 1_000_000
CALL = "/gradio_api/call/recognise"


class WidthRecognizer:
    """A one-cell table holding the image's width and height."""

    max_new_tokens = 8

    def predict_many(self, images: list, batch_size: int, task: str = "html") -> list[Prediction]:
        out = []
        for im in images:
            w, h = im.size
            html = f"<table><tbody><tr><td>{w}x{h}</td></tr></tbody></table>"
            out.append(Prediction(html, html, parse_html(html), f"| {w}x{h} |", f"{w}x{h}\n", 0.01, 3))
        return out


def png_bytes(width: int = 120, height: int = 60, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), 1 if mode == "1" else "white").save(buf, "PNG")
    return buf.getvalue()


def exif_rotated_jpeg(width: int, height: int) -> bytes:
    """A `width` x `height` JPEG whose EXIF says: rotate 90 degrees to show it (orientation 6)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


@pytest.fixture
def upload_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Gradio's upload folder (its cache), one per test, so what lands in it can be inspected."""
    folder = tmp_path / "gradio-upload"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    return folder


@pytest.fixture
def client(upload_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    examples = tmp_path / "examples"
    examples.mkdir()
    (examples / "a.png").write_bytes(png_bytes())
    config = ServeConfig(
        model_name="stub", max_image_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, examples_dir=str(examples)
    )
    with TestClient(create_app(WidthRecognizer(), config)) as c:
        yield c


def call(client: TestClient, image: dict, task: str = "html") -> tuple[str, list]:
    """(the whole event stream, the event's final data) of one click on Recognise."""
    r = client.post(CALL, json={"data": [image, task]})
    assert r.status_code == 200, r.text
    stream = client.get(f"{CALL}/{r.json()['event_id']}").text
    events = re.findall(r"^event: (\w+)\ndata: (.*)$", stream, flags=re.MULTILINE)
    assert events, stream
    kind, data = events[-1]
    return stream, [kind, json.loads(data)]


def upload(client: TestClient, name: str, data: bytes) -> dict:
    """A file sent through Gradio's upload route, as the browser does: its FileData payload."""
    r = client.post("/gradio_api/upload", files={"files": (name, data, "application/octet-stream")})
    assert r.status_code == 200, r.text
    [path] = r.json()
    return {"path": path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def files_holding(folder: Path, content: bytes) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and content in p.read_bytes()]


@pytest.mark.parametrize("name", ["secret.txt", "secret.png"])  # a text file, one named as an image
def test_filedata_path_outside_the_upload_folder_is_neither_copied_nor_served(
    client: TestClient, upload_dir: Path, tmp_path: Path, name: str
) -> None:
    secret_content = f"top secret {uuid.uuid4().hex}".encode()
    secret = tmp_path / "elsewhere" / name
    secret.parent.mkdir()
    secret.write_bytes(secret_content)

    stream, (kind, _) = call(client, {"path": str(secret), "meta": {"_type": "gradio.FileData"}})
    assert kind == "error" and secret_content.decode() not in stream
    # every path the answer mentions, and the secret's own path, stay unreadable
    mentioned = set(re.findall(r"/[^\s\"'<>,;)]+", stream)) | {str(secret)}
    for path in sorted(mentioned):
        for candidate in {path, path.rstrip(".")}:
            r = client.get(f"/gradio_api/file={candidate}")
            assert secret_content not in r.content, f"GET /gradio_api/file={candidate} served the secret"
    assert client.get(f"/gradio_api/file={secret}").status_code == 403
    assert files_holding(upload_dir, secret_content) == [], "the secret was copied into Gradio's cache"


def test_uploaded_image_is_recognised_and_its_downloads_are_served(client: TestClient) -> None:
    stream, (kind, data) = call(client, upload(client, "t.png", png_bytes(123, 45)))
    assert kind == "complete", stream
    shown, source, took, dl_html, dl_md, dl_csv = data
    assert "123x45" in shown and took.endswith("tokens)")
    r = client.get(f"/gradio_api/file={dl_csv['path']}")
    assert r.status_code == 200 and r.text == "123x45\n"


def test_example_image_is_recognised(client: TestClient) -> None:
    """Gradio keeps the examples in its upload folder, so a click on one still passes the check."""
    dataset = next(c for c in client.get("/config").json()["components"] if c["type"] == "dataset")
    [[sample]] = dataset["props"]["samples"]
    _, (kind, data) = call(client, sample)
    assert kind == "complete" and "120x60" in data[0]


def test_exif_orientation_is_applied(client: TestClient) -> None:
    _, (kind, data) = call(client, upload(client, "photo.jpg", exif_rotated_jpeg(40, 20)))
    assert kind == "complete" and "20x40" in data[0]
    assert decode_image(exif_rotated_jpeg(40, 20), MAX_BYTES, MAX_PIXELS).size == (20, 40)  # as the API


@pytest.fixture
def decoded_sizes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The size of every image PIL decodes in this process (PNG and JPEG decode in ImageFile.load)."""
    sizes: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile):  # noqa: ANN202
        sizes.append(self.size)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return sizes


def test_over_limit_image_is_refused_before_it_is_decoded(
    client: TestClient, decoded_sizes: list[tuple[int, int]]
) -> None:
    big = png_bytes(3000, 3000, mode="1")  # 9M pixels in a few kB
    assert len(big) < MAX_BYTES
    stream, (kind, data) = call(client, upload(client, "big.png", big))
    assert kind == "error", stream
    assert "over the limit of 1000000 pixels" in stream
    assert all(w * h <= MAX_PIXELS for w, h in decoded_sizes), decoded_sizes


def test_data_uri_beside_an_uploaded_path_is_not_decoded(
    client: TestClient, decoded_sizes: list[tuple[int, int]]
) -> None:
    payload = upload(client, "t.png", png_bytes(77, 33))
    payload["url"] = "data:image/png;base64," + base64.b64encode(png_bytes(3000, 3000, mode="1")).decode()
    _, (kind, data) = call(client, payload)
    assert all(w * h <= MAX_PIXELS for w, h in decoded_sizes), decoded_sizes
    assert kind == "complete" and "77x33" in data[0]


def test_unknown_task_is_refused(client: TestClient) -> None:
    stream, (kind, _) = call(client, upload(client, "t.png", png_bytes()), task="poem")
    assert kind == "error", stream
