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
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageFile

from tabvlm.errors import TabVLMError
from tabvlm.recognizer import Prediction
from tabvlm.serve import ServeConfig, create_app
from tabvlm.serve.inputs import decode_image
from tabvlm.serve.ui import UPLOADS_ONLY
from tabvlm.tables.html import parse_html

MAX_BYTES = 200_000
MAX_PIXELS = 1_000_000
CALL = "/gradio_api/call/recognise"


class WidthRecognizer:
    """A one-cell table holding the image's width and height."""

    max_new_tokens = 8

    def predict_many(self, images: list, batch_size: int, task: str = "html", **kwargs) -> list[Prediction]:  # noqa: ANN003
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
    with TestClient(create_app(WidthRecognizer(), config), base_url="http://localhost") as c:
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
    shown, source, took, dl_html, dl_md, dl_csv, overlay = data
    assert "123x45" in shown and took.endswith("tokens)")
    assert overlay is None  # a model that reads no words has no overlay
    for route in (f"/gradio_api/file={dl_csv['path']}", f"/gradio_api/file/{dl_csv['path']}"):
        r = client.get(route)
        assert r.status_code == 200 and r.text == "123x45\n", route


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


@pytest.fixture
def fetches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every URL Gradio would fetch on the server (its download and stream helpers, replaced)."""
    import gradio.processing_utils
    import gradio.routes

    urls: list[str] = []

    async def download(url: str, *args, **kwargs) -> str:  # noqa: ANN002, ANN003
        urls.append(url)
        raise RuntimeError("no fetching in tests")

    def save(url: str, *args, **kwargs) -> str:  # noqa: ANN002, ANN003
        urls.append(url)
        raise RuntimeError("no fetching in tests")

    async def stream(url: str, request: object) -> None:
        urls.append(url)
        raise RuntimeError("no fetching in tests")

    monkeypatch.setattr(gradio.processing_utils, "async_ssrf_protected_download", download)
    monkeypatch.setattr(gradio.processing_utils, "save_url_to_cache", save)
    monkeypatch.setattr(gradio.routes, "secure_url_stream_response", stream)
    return urls


@pytest.mark.parametrize(
    "url", ["https://example.com/t.png", "http://127.0.0.1:1/t.png", "HTTPS://example.com/t.png"]
)
def test_filedata_with_a_url_path_is_refused_without_fetching(
    client: TestClient, fetches: list[str], url: str
) -> None:
    stream, (kind, data) = call(client, {"path": url, "url": url, "meta": {"_type": "gradio.FileData"}})
    assert kind == "error" and data["error"] == UPLOADS_ONLY, stream
    assert fetches == []


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_the_file_route_never_fetches_a_url(client: TestClient, fetches: list[str], method: str) -> None:
    for target in (
        "/gradio_api/file=https://example.com/t.png",
        "/gradio_api/file=http://169.254.169.254/latest/meta-data/",
        "/gradio_api/file=/etc/passwd",
        # Gradio's older spelling of the same route, /gradio_api/file/{path}
        "/gradio_api/file/https://example.com/t.png",
        "/gradio_api/file/http://169.254.169.254/latest/meta-data/",
        "/gradio_api/file//etc/passwd",
        "/gradio_api/file/etc/passwd",
        "/gradio_api/file",
        "/gradio_api/proxy=https://example.com/t.png",
    ):
        r = client.request(method, target)
        assert r.status_code == 403, (target, r.status_code)
    assert fetches == []


def test_ui_error_messages_name_no_server_path(client: TestClient, upload_dir: Path, tmp_path: Path) -> None:
    server_paths = {os.getcwd(), tempfile.gettempdir(), str(upload_dir), str(tmp_path)}
    for path in ("secret.txt", "../../etc/passwd", str(tmp_path / "x.png"), "https://example.com/x.png"):
        stream, (kind, data) = call(client, {"path": path, "meta": {"_type": "gradio.FileData"}})
        assert kind == "error" and data["error"] == UPLOADS_ONLY
        assert not [p for p in server_paths if p in stream], stream


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (
            TabVLMError("cannot open /srv/models/tabvlm/weights.bin (no such file)"),
            "cannot open <path> (no such file)",
        ),
        (OSError(28, "No space left on device", "/tmp/tabvlm-ui-1/req-2/table.html"), None),
    ],
)
def test_a_failed_recognition_shows_no_server_path(
    upload_dir: Path, tmp_path: Path, error: Exception, shown: str | None
) -> None:
    class Failing(WidthRecognizer):
        def predict_many(self, images: list, batch_size: int, task: str = "html", **kwargs) -> list:  # noqa: ANN003
            raise error

    config = ServeConfig(model_name="stub", examples_dir=str(tmp_path))
    with TestClient(create_app(Failing(), config), base_url="http://localhost") as c:
        stream, (kind, data) = call(c, upload(c, "t.png", png_bytes()))
    assert kind == "error" and "/srv" not in stream and "/tmp" not in stream, stream
    if shown is not None:
        assert shown in data["error"]


def test_a_page_for_another_host_is_refused(client: TestClient) -> None:
    r = client.get("/", headers={"host": "attacker.example"})
    assert r.status_code == 400 and "attacker.example" in r.json()["detail"]
    assert client.get("/", headers={"host": "localhost:8001"}).status_code == 200


def test_ocr_is_one_of_the_outputs(client: TestClient) -> None:
    radio = next(c for c in client.get("/config").json()["components"] if c["type"] == "radio")
    assert [choice[0] for choice in radio["props"]["choices"]] == ["html", "otsl", "markdown", "ocr"]
    _, (kind, data) = call(client, upload(client, "t.png", png_bytes(64, 32)), task="ocr")
    assert kind == "complete" and "64x32" in data[0]


class LayoutStub(WidthRecognizer):
    """A stand-in layout model: it has a reader (so the server shrinks each page to the reader's
    side) and puts one word, the whole page, into the table's one cell."""

    reader = "ppocr"
    reader_options = {"max_side": 100}

    def predict_many(self, images: list, batch_size: int, task: str = "html", **kwargs) -> list[Prediction]:  # noqa: ANN003
        from dataclasses import replace

        from tabvlm.read import Word

        preds = super().predict_many(images, batch_size, task)
        return [
            replace(p, words=[Word("page", (0.0, 0.0, *im.size))], word_cells=[0], page_size=im.size)
            for p, im in zip(preds, images, strict=True)
        ]


def test_a_layout_models_overlay_is_drawn_on_the_page_the_reader_saw_off_the_event_loop(
    upload_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    import tabvlm.overlay

    drawn_on: list[tuple[tuple[int, int], bool]] = []  # (page size, drawn in the event loop)
    real = tabvlm.overlay.draw_overlay

    def spy(image, pred):  # noqa: ANN001, ANN202
        try:
            asyncio.get_running_loop()
            in_loop = True
        except RuntimeError:
            in_loop = False
        drawn_on.append((image.size, in_loop))
        return real(image, pred)

    monkeypatch.setattr(tabvlm.overlay, "draw_overlay", spy)
    config = ServeConfig(model_name="stub", max_image_bytes=MAX_BYTES, examples_dir=str(tmp_path))
    with TestClient(create_app(LayoutStub(), config), base_url="http://localhost") as c:
        stream, (kind, data) = call(c, upload(c, "t.png", png_bytes(300, 150)))
        assert kind == "complete", stream
        assert "100x50" in data[0]  # the page, shrunk to the reader's 100 px side, reached the model
        r = c.get(f"/gradio_api/file={data[-1]['path']}")
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (100, 50)
    assert drawn_on == [((100, 50), False)]  # on that page, in a worker thread
