"""The server: every route, every refusal (400/413/503/504), batching, and the CLI verb.

Real-model tests use configs/tiny.yaml random weights (answers are well-formed tables with random
text); batching, queue and timeout tests use a stub recognizer whose timing the test controls.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from images import bomb_png
from PIL import Image

from tabvlm.recognizer import Prediction, TableRecognizer
from tabvlm.serve import BatchConfig, Batcher, ServeConfig, create_app
from tabvlm.serve.inputs import body_limit
from tabvlm.serve.ui import _Downloads, example_images
from tabvlm.tables.html import parse_html, to_html

MAX_BYTES = 200_000
MAX_PIXELS = 1_000_000
LOCAL = "http://localhost"  # the Host a client on this machine sends (others are refused)


def png_bytes(width: int = 120, height: int = 60, color: str = "white") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def chat_body(text: str | None = "Convert the table to HTML.", url: str | None = None) -> dict:
    parts: list[dict] = [] if text is None else [{"type": "text", "text": text}]
    if url is not None:
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return {"model": "whatever", "messages": [{"role": "user", "content": parts}]}


@pytest.fixture(scope="module")
def recognizer() -> TableRecognizer:
    return TableRecognizer.from_pretrained("configs/tiny.yaml", max_new_tokens=24)


@pytest.fixture(scope="module")
def client(recognizer: TableRecognizer):
    config = ServeConfig(model_name="tiny", ui=False, max_image_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    with TestClient(create_app(recognizer, config), base_url=LOCAL) as c:
        yield c


# --- routes ---------------------------------------------------------------------------------


def test_health_and_models(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "model": "tiny", "queued": 0}
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["tiny"]


def test_openapi_docs_list_every_route(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/v1/models", "/v1/recognize", "/v1/chat/completions"} <= set(paths)
    assert "multipart/form-data" in paths["/v1/recognize"]["post"]["requestBody"]["content"]


def test_recognize_multipart_returns_a_canonical_table(client: TestClient) -> None:
    r = client.post("/v1/recognize", files={"file": ("t.png", png_bytes(), "image/png")})
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= {"html", "markdown", "csv", "seconds", "model"}
    assert body["model"] == "tiny" and body["task"] == "html" and body["seconds"] > 0
    assert to_html(parse_html(body["html"])) == body["html"]  # well-formed and canonical
    assert body["markdown"].startswith("|") and body["tokens"] <= 24


def test_recognize_json_base64_and_data_uri_agree(client: TestClient) -> None:
    data = png_bytes(90, 90, "gray")
    plain = client.post("/v1/recognize", json={"image": base64.b64encode(data).decode()}).json()
    uri = client.post("/v1/recognize", json={"image": data_uri(data)}).json()
    form = client.post("/v1/recognize", files={"file": ("x.png", data, "image/png")}).json()
    assert plain["html"] == uri["html"] == form["html"] != ""  # greedy: same image, same table


def test_recognize_markdown_task(client: TestClient) -> None:
    r = client.post(
        "/v1/recognize", files={"file": ("t.png", png_bytes(), "image/png")}, data={"task": "markdown"}
    )
    body = r.json()
    assert r.status_code == 200 and body["task"] == "markdown"
    # the views are those of the table the output parses into; a random model's text holds none
    assert body["text"] and body["html"] == body["markdown"] == body["csv"] == ""


def test_chat_completion_has_openai_schema(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json=chat_body(url=data_uri(png_bytes())))
    assert r.status_code == 200
    body = r.json()
    assert (
        body["object"] == "chat.completion" and body["model"] == "tiny" and body["id"].startswith("chatcmpl-")
    )
    assert isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    assert to_html(parse_html(choice["message"]["content"])) == choice["message"]["content"]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens"] > 16  # the 16 image tokens of the tiny config and the prompt


def test_chat_prompt_text_chooses_the_task(client: TestClient, recognizer: TableRecognizer) -> None:
    image = Image.open(io.BytesIO(png_bytes()))
    expected = recognizer.predict(image, task="otsl").raw
    r = client.post("/v1/chat/completions", json=chat_body("Give me OTSL", url=data_uri(png_bytes())))
    assert r.json()["choices"][0]["message"]["content"] == expected


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "status", "words"),
    [
        ({"files": {"file": ("t.txt", b"hello, not an image", "text/plain")}}, 400, "not an image"),
        ({"files": {"file": ("t.png", png_bytes()[:60], "image/png")}}, 400, "corrupt or truncated"),
        ({"files": {"file": ("t.png", b"", "image/png")}}, 400, "empty"),
        ({"files": {"other": ("t.png", png_bytes(), "image/png")}}, 400, "no field named 'file'"),
        (
            {"files": {"file": ("t.png", png_bytes(), "image/png")}, "data": {"task": "poem"}},
            400,
            "unknown task",
        ),
        ({"json": {"image": "***not base64***"}}, 400, "not valid base64"),
        ({"json": {"picture": "abc"}}, 400, '"image"'),
        ({"json": [1, 2]}, 400, "expected a JSON object"),
        ({"content": b"{broken", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
        ({"content": b"abc", "headers": {"content-type": "text/plain"}}, 400, "expected multipart/form-data"),
        (
            {"files": {"file": ("t.png", png_bytes(1100, 1000), "image/png")}},
            400,
            "over the limit of 1000000 pixels",
        ),
        ({"files": {"file": ("t.png", bomb_png(20000, 20000), "image/png")}}, 400, "decompression bomb"),
    ],
)
def test_recognize_refuses_bad_input(client: TestClient, kwargs: dict, status: int, words: str) -> None:
    r = client.post("/v1/recognize", **kwargs)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_upload_over_the_limit_is_413_by_content_length(client: TestClient) -> None:
    big = b"\0" * (body_limit(MAX_BYTES) + 1)
    r = client.post("/v1/recognize", files={"file": ("t.png", big, "image/png")})
    assert r.status_code == 413 and "over the limit" in r.json()["detail"]


def test_upload_over_the_limit_is_413_while_reading_without_content_length(client: TestClient) -> None:
    def chunks():  # a generator body goes out chunked, with no Content-Length
        for _ in range(10):
            yield b"x" * 50_000

    r = client.post("/v1/recognize", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over the limit" in r.json()["detail"]


def test_decoded_image_over_the_limit_is_413(client: TestClient) -> None:
    data = b"\x89PNG" + b"\0" * (MAX_BYTES + 10)  # its base64 fits the body limit, the bytes do not
    r = client.post("/v1/recognize", json={"image": base64.b64encode(data).decode()})
    assert r.status_code == 413 and f"limit of {MAX_BYTES} bytes" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (chat_body(url="https://example.com/t.png"), "data: URI"),
        (chat_body(url=None), "exactly one image_url"),
        ({**chat_body(url=data_uri(png_bytes())), "stream": True}, "stream"),
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"role": "system", "content": "hi"}]}, "no message with role 'user'"),
        (chat_body(url="data:image/png;base64,%%%"), "not valid base64"),
    ],
)
def test_chat_refuses_bad_input_in_openai_error_shape(client: TestClient, body: dict, words: str) -> None:
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert words in error["message"] and error["type"] == "invalid_request_error" and error["code"] == 400


# --- batching, queue, timeout (a stub model the test controls) -------------------------------


class StubRecognizer:
    """Answers with a one-cell table naming the image's width; `gate` holds every batch back."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # a batch has reached the model
        self.batch_sizes: list[int] = []
        self.seen: list[tuple[str, dict]] = []  # (task, keyword arguments) of each call
        self.sizes: list[tuple[int, int]] = []  # of every image that reached it
        self.max_new_tokens = 8
        self.reader_options: dict = {}

    def predict_many(self, images: list, batch_size: int, task: str = "html", **kwargs) -> list[Prediction]:  # noqa: ANN003
        self.seen.append((task, kwargs))
        self.sizes.extend(im.size for im in images)
        self.entered.set()
        self.gate.wait(10)
        self.batch_sizes.append(len(images))
        out = []
        for im in images:
            html = f"<table><tbody><tr><td>{im.size[0]}</td></tr></tbody></table>"
            out.append(
                Prediction(html, html, parse_html(html), f"| {im.size[0]} |", f"{im.size[0]}\n", 0.01, 3)
            )
        return out


async def _with_app(app, body):  # noqa: ANN001, ANN202 (an async test harness)
    """Run `body(client)` against `app` in this loop, with its lifespan (the batcher) running."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await body(client)


def _post(client: httpx.AsyncClient, width: int):  # noqa: ANN202
    return client.post("/v1/recognize", files={"file": ("t.png", png_bytes(width, 40), "image/png")})


def test_concurrent_requests_share_one_batch_and_each_gets_its_own_answer() -> None:
    stub = StubRecognizer()
    app = create_app(stub, ServeConfig(ui=False, batch=BatchConfig(max_batch_size=8, max_wait_ms=300)))

    async def body(client: httpx.AsyncClient) -> list[httpx.Response]:
        return await asyncio.gather(*(_post(client, 100 + i) for i in range(6)))

    responses = asyncio.run(_with_app(app, body))
    assert [r.status_code for r in responses] == [200] * 6
    assert [r.json()["csv"] for r in responses] == [f"{100 + i}\n" for i in range(6)]
    assert stub.batch_sizes == [6]


def test_batching_off_runs_one_image_a_call() -> None:
    stub = StubRecognizer()
    app = create_app(stub, ServeConfig(ui=False, batch=BatchConfig(max_batch_size=1, max_wait_ms=300)))

    async def body(client: httpx.AsyncClient) -> list[httpx.Response]:
        return await asyncio.gather(*(_post(client, 100 + i) for i in range(3)))

    responses = asyncio.run(_with_app(app, body))
    assert [r.status_code for r in responses] == [200] * 3 and stub.batch_sizes == [1, 1, 1]


def test_full_queue_answers_503_and_the_loop_stays_free() -> None:
    stub = StubRecognizer()
    stub.gate.clear()  # the worker holds its first batch until released
    app = create_app(
        stub, ServeConfig(ui=False, batch=BatchConfig(max_batch_size=1, max_wait_ms=0, max_queue=1))
    )

    async def body(client: httpx.AsyncClient) -> tuple:
        first = asyncio.create_task(_post(client, 101))  # taken by the worker, blocked
        while not stub.entered.is_set():
            await asyncio.sleep(0.01)
        second = asyncio.create_task(_post(client, 102))  # waits in the queue (size 1)
        while app.state.batcher.queued < 1:
            await asyncio.sleep(0.01)
        third = await _post(client, 103)  # refused while the model is still blocked
        health = await client.get("/health")  # the event loop is not blocked by the model
        stub.gate.set()
        return await first, await second, third, health

    first, second, third, health = asyncio.run(_with_app(app, body))
    assert third.status_code == 503 and "queue is full" in third.json()["detail"]
    assert third.headers["retry-after"] == "1"
    assert health.json()["queued"] == 1
    assert (first.status_code, second.status_code) == (200, 200)


def test_request_timeout_answers_504() -> None:
    stub = StubRecognizer()
    stub.gate.clear()
    app = create_app(stub, ServeConfig(ui=False, request_timeout_s=0.2))

    async def body(client: httpx.AsyncClient) -> httpx.Response:
        r = await _post(client, 100)
        stub.gate.set()
        return r

    r = asyncio.run(_with_app(app, body))
    assert r.status_code == 504 and "timeout" in r.json()["detail"]


# --- web UI and CLI ---------------------------------------------------------------------------


def test_ui_is_mounted_at_root_beside_the_api(recognizer: TableRecognizer, tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "a.png").write_bytes(png_bytes())
    app = create_app(recognizer, ServeConfig(model_name="tiny", examples_dir=str(tmp_path)))
    with TestClient(app, base_url=LOCAL) as c:
        page = c.get("/")
        assert page.status_code == 200 and "gradio" in page.text.lower()
        assert c.get("/health").json()["status"] == "ok"  # API routes are not shadowed by the mount


def test_examples_fall_back_to_synthetic_tables(tmp_path) -> None:  # noqa: ANN001
    found = example_images(str(tmp_path / "missing"), tmp_path)
    assert len(found) == 3 and all(Image.open(p).size[0] > 50 for p in found)


def test_downloads_use_fresh_folders_with_fixed_names(tmp_path) -> None:  # noqa: ANN001
    downloads = _Downloads(tmp_path)
    first = downloads.write("<table></table>", "| a |", "a\n")
    second = downloads.write("<table></table>", "| b |", "b\n")
    assert [p.rsplit("/", 1)[1] for p in first] == ["table.html", "table.md", "table.csv"]
    assert first[0].rsplit("/", 1)[0] != second[0].rsplit("/", 1)[0]
    assert all(p.startswith(str(tmp_path)) for p in first + second)


def test_serve_command_binds_loopback_by_default(monkeypatch) -> None:  # noqa: ANN001
    import uvicorn

    from tabvlm.commands import serve

    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    assert (
        serve.main(
            ["--model", "configs/tiny.yaml", "--no-ui", "--max-batch-size", "4", "--body-timeout", "5"]
        )
        == 0
    )
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 8001)
    assert seen["app"].state.config.body_timeout_s == 5
    assert (
        seen["app"].state.config.batch.max_batch_size == 4 and seen["app"].state.config.model_name == "tiny"
    )


# --- reliability: cut-short outputs, failures kept to their request, hostile bodies -------------


def test_outputs_cut_short_say_so_on_both_routes(client: TestClient) -> None:
    # a random tiny model never closes a table on its own: max_new_tokens=24 cuts every answer
    r = client.post("/v1/recognize", files={"file": ("t.png", png_bytes(), "image/png")})
    assert r.status_code == 200 and r.json()["finish_reason"] == "length"
    r = client.post("/v1/chat/completions", json=chat_body(url=data_uri(png_bytes())))
    assert r.json()["choices"][0]["finish_reason"] == "length"


def test_a_model_with_few_positions_answers_instead_of_crashing() -> None:
    import torch

    from tabvlm.model import TabVLM, load_model_config
    from tabvlm.tokenizer import load_tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TabVLM(load_model_config("configs/tiny.yaml", ["lm.max_position_embeddings=64"]))
    short = TableRecognizer(model, load_tokenizer(), max_new_tokens=2048)  # the CLI's default
    with TestClient(create_app(short, ServeConfig(ui=False)), base_url=LOCAL) as c:
        answers = [
            c.post("/v1/recognize", files={"file": ("t.png", png_bytes(), "image/png")}) for _ in range(2)
        ]
        chat = c.post("/v1/chat/completions", json=chat_body(url=data_uri(png_bytes())))
    assert [a.status_code for a in answers] == [200, 200] and chat.status_code == 200
    assert all(
        a.json()["finish_reason"] == "length" and a.json()["html"].startswith("<table>") for a in answers
    )
    assert chat.json()["choices"][0]["finish_reason"] == "length"


def test_a_finished_output_is_stop() -> None:
    with TestClient(create_app(StubRecognizer(), ServeConfig(ui=False)), base_url=LOCAL) as c:
        r = c.post("/v1/recognize", files={"file": ("t.png", png_bytes(), "image/png")})
    assert r.status_code == 200 and r.json()["finish_reason"] == "stop"


class FragileRecognizer(StubRecognizer):
    """Fails every batch that holds an image 77 pixels wide."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []  # images in each call, failed ones included

    def predict_many(self, images: list, batch_size: int, task: str = "html", **kwargs) -> list[Prediction]:  # noqa: ANN003
        self.calls.append(len(images))
        if any(im.size[0] == 77 for im in images):
            raise RuntimeError("boom")
        return super().predict_many(images, batch_size, task)


def test_a_failing_request_takes_no_other_with_it() -> None:
    stub = FragileRecognizer()
    app = create_app(stub, ServeConfig(ui=False, batch=BatchConfig(max_batch_size=8, max_wait_ms=300)))

    async def body(client: httpx.AsyncClient) -> list[httpx.Response]:
        chat = client.post("/v1/chat/completions", json=chat_body(url=data_uri(png_bytes(77, 40))))
        return await asyncio.gather(_post(client, 100), _post(client, 77), _post(client, 101), chat)

    good, bad, other, chat = asyncio.run(_with_app(app, body))
    assert (good.status_code, other.status_code) == (200, 200)
    assert (good.json()["csv"], other.json()["csv"]) == ("100\n", "101\n")
    assert bad.status_code == 500 and bad.json()["detail"] == "recognition failed (RuntimeError: boom)"
    assert chat.status_code == 500 and "RuntimeError: boom" in chat.json()["error"]["message"]
    assert max(stub.calls) > 1 and sum(stub.batch_sizes) == 2  # batched together, then retried alone


def test_an_unexpected_error_is_a_json_500_not_a_bare_one() -> None:
    class Broken(StubRecognizer):
        def predict_many(self, images: list, batch_size: int, task: str = "html", **kwargs) -> list:  # noqa: ANN003
            return [object() for _ in images]  # not a Prediction: the route itself fails

    app = create_app(Broken(), ServeConfig(ui=False))
    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as c:
        r = c.post("/v1/recognize", files={"file": ("t.png", png_bytes(), "image/png")})
        chat = c.post("/v1/chat/completions", json=chat_body(url=data_uri(png_bytes())))
    assert r.status_code == 500 and r.json()["detail"].startswith("internal error (AttributeError)")
    assert chat.status_code == 500 and chat.json()["error"]["type"] == "server_error"


def test_deeply_nested_json_is_a_clear_400_on_both_routes(client: TestClient) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    for route in ("/v1/recognize", "/v1/chat/completions"):
        r = client.post(route, content=deep, headers={"content-type": "application/json"})
        assert r.status_code == 400, (route, r.text)
        assert "nested too deeply" in r.text
    inner = b'{"image": ' + deep + b"}"
    r = client.post("/v1/recognize", content=inner, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "nested too deeply" in r.json()["detail"]


def test_base64_wrapped_at_76_columns_is_accepted(client: TestClient) -> None:
    data = png_bytes(90, 90, "gray")
    wrapped = base64.encodebytes(data).decode()  # what `base64 FILE` prints
    assert "\n" in wrapped
    plain = client.post("/v1/recognize", json={"image": base64.b64encode(data).decode()}).json()
    assert client.post("/v1/recognize", json={"image": wrapped}).json()["html"] == plain["html"]
    crlf = "data:image/png;base64," + wrapped.replace("\n", "\r\n")
    assert client.post("/v1/recognize", json={"image": crlf}).json()["html"] == plain["html"]
    for junk in (wrapped[:40] + "$" + wrapped[40:], wrapped[:40] + "\u00a0" + wrapped[40:]):
        r = client.post("/v1/recognize", json={"image": junk})
        assert r.status_code == 400 and "not valid base64" in r.json()["detail"]


@contextlib.contextmanager
def serving(app) -> Iterator[int]:  # noqa: ANN001
    """A real uvicorn server for `app` in a thread on a free loopback port; yields the port."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def read_response(conn: socket.socket) -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.1 response with a Content-Length, read off a kept-alive socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"the server closed the connection: {data[:200]!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:]
    )
    while len(body) < length:
        chunk = conn.recv(65536)
        assert chunk, "the server closed the connection mid-body"
        body += chunk
    return int(head.split()[1]), body


def test_a_stalled_request_body_is_cut_off() -> None:
    """Headers and half a body, then nothing: the server answers 408 (or closes); without the body
    timeout it would wait for the rest forever, and the socket's own 60 s timeout fails the test."""
    app = create_app(StubRecognizer(), ServeConfig(ui=False, body_timeout_s=1.0))
    with serving(app) as port:
        body = png_bytes()
        with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
            head = (
                "POST /v1/recognize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {2 * len(body)}\r\n\r\n"
            )
            conn.sendall(head.encode() + b'{"image": "' + base64.b64encode(body)[:100])
            answer = conn.recv(65536)  # blocks until the server answers or closes (TimeoutError)
            while answer and b"}" not in answer:  # the JSON body may come in a second packet
                more = conn.recv(65536)
                answer += more
                if not more:
                    break
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert answer == b"" or b"did not arrive within 1.0 s" in answer


def test_images_are_shrunk_to_the_model_input_before_queueing(recognizer: TableRecognizer) -> None:
    """The queue holds model-sized images, and the answer is the one the full image gives."""
    import random

    from PIL import ImageDraw

    rng = random.Random(0)
    big = Image.new("RGB", (2400, 1500), "white")
    draw = ImageDraw.Draw(big)
    for _ in range(200):
        x, y = rng.randrange(2300), rng.randrange(1450)
        draw.rectangle(
            [x, y, x + rng.randint(10, 90), y + rng.randint(5, 40)], fill=(rng.randrange(120),) * 3
        )
    buf = io.BytesIO()
    big.save(buf, "PNG")
    seen: list[tuple[int, int]] = []
    real = recognizer.predict_many

    def spy(images, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.extend(im.size for im in images)
        return real(images, *args, **kwargs)

    recognizer.predict_many = spy  # type: ignore[method-assign]
    try:
        with TestClient(create_app(recognizer, ServeConfig(ui=False)), base_url=LOCAL) as c:
            r = c.post("/v1/recognize", files={"file": ("big.png", buf.getvalue(), "image/png")})
    finally:
        del recognizer.predict_many
    assert r.status_code == 200 and seen == [(128, 80)]  # 2400x1500 fit to the tiny model's 128 px
    assert r.json()["text"] == recognizer.predict(big).raw  # the same pixels reach the model


# --- memory and time: body slots, decode slots, every wait inside the request timeout ---------


@pytest.fixture
def slow_decodes(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Every image decode waits for `gate` (set it to let them through); `reads` has the size of
    each body the server read, `decoding` counts the decodes begun."""
    from tabvlm.serve import api

    state: dict = {"gate": threading.Event(), "reads": [], "decoding": []}
    real_decode, real_read = api.decode_image, api.read_body

    def decode(data, *args):  # noqa: ANN001, ANN002, ANN202
        state["decoding"].append(len(data))
        state["gate"].wait(20)
        return real_decode(data, *args)

    async def read(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        body = await real_read(*args, **kwargs)
        state["reads"].append(len(body))
        return body

    monkeypatch.setattr(api, "decode_image", decode)
    monkeypatch.setattr(api, "read_body", read)
    yield state
    state["gate"].set()


async def _until(condition, seconds: float = 20) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


def test_bodies_beyond_the_cap_wait_unread_and_all_are_answered(slow_decodes: dict) -> None:
    app = create_app(StubRecognizer(), ServeConfig(ui=False, max_bodies=2, decode_workers=1))

    async def body(client: httpx.AsyncClient) -> tuple[int, list[httpx.Response]]:
        posts = [asyncio.create_task(_post(client, 100 + i)) for i in range(6)]
        await _until(lambda: slow_decodes["decoding"] and len(slow_decodes["reads"]) >= 2)
        await asyncio.sleep(0.3)  # room for a third body to be read, were the cap not kept
        held = len(slow_decodes["reads"])
        slow_decodes["gate"].set()
        return held, await asyncio.gather(*posts)

    held, responses = asyncio.run(_with_app(app, body))
    assert held == 2  # one decoding, one read and waiting for the decode slot; four not read at all
    assert [r.status_code for r in responses] == [200] * 6
    assert sorted(r.json()["csv"] for r in responses) == [f"{100 + i}\n" for i in range(6)]


def test_every_wait_ends_at_the_request_timeout_and_slots_outlive_abandoned_work(slow_decodes: dict) -> None:
    app = create_app(
        StubRecognizer(), ServeConfig(ui=False, max_bodies=1, decode_workers=1, request_timeout_s=0.5)
    )

    async def body(client: httpx.AsyncClient) -> tuple:
        first = asyncio.create_task(_post(client, 101))  # its decode never ends in time
        await _until(lambda: slow_decodes["decoding"])
        second = await _post(client, 102)  # waits for the only body slot
        first = await first
        admission = app.state.admission
        still_held = admission.bodies.locked() and admission.decodes.locked()
        slow_decodes["gate"].set()
        await _until(lambda: not admission.bodies.locked() and not admission.decodes.locked())
        third = await _post(client, 103)
        return first, second, still_held, third

    first, second, still_held, third = asyncio.run(_with_app(app, body))
    assert (
        first.status_code == 504 and "request timeout of 0.5 s (decoding the image)" in first.json()["detail"]
    )
    assert second.status_code == 504 and "waiting for its turn to be read" in second.json()["detail"]
    assert still_held  # the abandoned decode still holds its body and its decode slot
    assert third.status_code == 200


def test_too_many_waiting_bodies_is_503_with_retry_after(slow_decodes: dict) -> None:
    app = create_app(
        StubRecognizer(),
        ServeConfig(ui=False, max_bodies=1, decode_workers=1, batch=BatchConfig(max_queue=1)),
    )

    def post(client: httpx.AsyncClient, width: int):  # noqa: ANN202
        # task ocr: the reader runs in its own slot, so the batcher's queue (also max_queue) stays out
        files = {"file": ("t.png", png_bytes(width, 40), "image/png")}
        return client.post("/v1/recognize", files=files, data={"task": "ocr"})

    async def body(client: httpx.AsyncClient) -> tuple:
        first = asyncio.create_task(post(client, 101))
        await _until(lambda: slow_decodes["decoding"])
        second = asyncio.create_task(post(client, 102))
        await _until(lambda: app.state.admission.waiting == 1)
        third = await post(client, 103)  # refused at once, unread
        slow_decodes["gate"].set()
        return await first, await second, third

    first, second, third = asyncio.run(_with_app(app, body))
    assert third.status_code == 503 and third.headers["retry-after"] == "1"
    assert "waiting to be read" in third.json()["detail"]
    assert (first.status_code, second.status_code) == (200, 200)
    assert len(slow_decodes["reads"]) == 2


@pytest.mark.parametrize("kind", ["multipart", "json"])
def test_a_body_is_freed_once_parsed(kind: str) -> None:
    from tabvlm.serve.api import _recognize_fields

    data = png_bytes()
    if kind == "json":
        ctype, body = (
            "application/json",
            bytearray(json.dumps({"image": base64.b64encode(data).decode()}).encode()),
        )
    else:
        request = httpx.Request("POST", "http://x/", files={"file": ("t.png", data, "image/png")})
        ctype, body = request.headers["content-type"], bytearray(request.read())
    image, task = _recognize_fields(ctype, body)
    assert bytes(image) == data and task == "html" and len(body) == 0


def test_pin_the_memory_bound_of_the_default_limits_is_the_readmes_figure() -> None:
    """A pin, not a proof: the README quotes this figure for `tabvlm serve`'s defaults."""
    from tabvlm.read.ppocr import PPOCRConfig
    from tabvlm.serve.limits import memory_bound

    cfg = ServeConfig()
    args = (cfg.max_bodies, cfg.decode_workers, cfg.max_image_bytes, cfg.max_pixels, PPOCRConfig.max_side)
    assert 730 * 2**20 < memory_bound(*args, max_waiting=cfg.batch.max_queue) < 750 * 2**20  # "~740 MiB"


# --- hostile inputs: long numbers, other hosts, fields the server would ignore ------------------


def test_a_json_number_of_too_many_digits_is_400_and_the_connection_stays_usable() -> None:
    app = create_app(StubRecognizer(), ServeConfig(ui=False))
    huge = b'{"image": "x", "task": ' + b"9" * 5000 + b"}"
    with serving(app) as port, socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        for route in ("/v1/recognize", "/v1/chat/completions"):
            head = (
                f"POST {route} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(huge)}\r\n\r\n"
            )
            conn.sendall(head.encode() + huge)
            status, body = read_response(conn)
            assert status == 400 and b"number of more than 4300 digits" in body, body
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # the same connection
        status, body = read_response(conn)
        assert status == 200 and json.loads(body)["status"] == "ok"


@pytest.mark.parametrize(
    "host", ["attacker.example", "attacker.example:8001", "127.0.0.1.attacker.example", "localhost.evil"]
)
def test_a_request_for_another_host_is_400(client: TestClient, host: str) -> None:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    for method, route in (("GET", "/health"), ("POST", "/v1/recognize")):
        r = client.request(method, route, headers={"host": host}, json={"image": "x"})
        assert r.status_code == 400 and f"Host {name!r} is not served here" in r.json()["detail"]
    r = client.post("/v1/chat/completions", headers={"host": host}, json=chat_body())
    assert r.status_code == 400 and "--allowed-host" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        (("Tables.Example.ORG",), ("tables.example.org",)),
        (("*.Corp.Example", "*"), ("*.corp.example", "*")),
        (("example.org.", "[::1]", "10.1.2.3", "fe80::1"), ("example.org", "::1", "10.1.2.3", "fe80::1")),
    ],
)
def test_allowed_hosts_are_lower_cased_names(given: tuple, kept: tuple) -> None:
    assert ServeConfig(ui=False, allowed_hosts=given).allowed_hosts == kept


@pytest.mark.parametrize(
    "bad",
    [
        "*corp.example",
        "a*.example.org",
        "*.",
        "*.*.example",
        "tables.example.org:8080",
        "http://x.org",
        "a b",
        "",
    ],
)
def test_an_allowed_host_that_is_no_name_is_a_config_error(bad: str) -> None:
    from tabvlm.errors import ConfigError

    with pytest.raises(ConfigError, match="is not a host name; expected an exact name"):
        ServeConfig(ui=False, allowed_hosts=("localhost", bad))
    with pytest.raises(ConfigError, match="allowed_hosts is empty"):
        ServeConfig(ui=False, allowed_hosts=())


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:8001", "127.0.0.1:8001", "[::1]:8001", "api.localhost"]
)
def test_loopback_hosts_are_served(client: TestClient, host: str) -> None:
    assert client.get("/health", headers={"host": host}).status_code == 200


def test_allowed_hosts_are_configurable_on_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from tabvlm.commands import serve

    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    argv = ["--model", "configs/tiny.yaml", "--no-ui", "--host", "10.1.2.3"]
    assert (
        serve.main([*argv, "--allowed-host", "Tables.Example.org", "--allowed-host", "*.corp.example"]) == 0
    )
    allowed = seen["app"].state.config.allowed_hosts
    assert allowed == (
        "localhost",
        "*.localhost",
        "127.0.0.1",
        "::1",
        "10.1.2.3",
        "tables.example.org",
        "*.corp.example",
    )
    with TestClient(seen["app"], base_url="http://tables.example.org") as c:
        assert c.get("/health").status_code == 200
        assert c.get("/health", headers={"host": "a.corp.example:443"}).status_code == 200
        assert c.get("/health", headers={"host": "corp.example.evil"}).status_code == 400
    assert serve.main(["--model", "configs/tiny.yaml", "--no-ui", "--host", "0.0.0.0"]) == 0
    assert seen["app"].state.config.allowed_hosts == ("localhost", "*.localhost", "127.0.0.1", "::1")
    assert seen["app"].state.batcher.recognizer.reader_options == {"cache": False}  # memory stays bounded
    with TestClient(create_app(StubRecognizer(), ServeConfig(ui=False, allowed_hosts=("*",)))) as c:
        assert c.get("/health", headers={"host": "anything.example"}).status_code == 200


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (
            {"json": {"image": "eA==", "max_new_tokens": 5, "temperature": 0.2}},
            "unknown fields 'max_new_tokens', 'temperature'",
        ),
        ({"files": {"file": ("t.png", b"x", "image/png")}, "data": {"n": "2"}}, "unknown field 'n'"),
    ],
)
def test_recognize_refuses_fields_it_does_not_know(client: TestClient, kwargs: dict, words: str) -> None:
    r = client.post("/v1/recognize", **kwargs)
    assert r.status_code == 400 and words in r.json()["detail"], r.text


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"temperature": 0.7}, "not supported: temperature=0.7"),
        ({"n": 2, "top_p": 0.5}, "not supported: n=2, top_p=0.5"),
        ({"stop": ["</table>"]}, "stop=['</table>']"),
        ({"tools": [{"type": "function"}]}, "unknown field 'tools'"),
        ({"max_tokens": 0}, "max_tokens must be an integer >= 1"),
        ({"max_completion_tokens": "10"}, "max_completion_tokens must be an integer >= 1"),
    ],
)
def test_chat_refuses_options_it_would_not_honour(client: TestClient, extra: dict, words: str) -> None:
    r = client.post("/v1/chat/completions", json={**chat_body(url=data_uri(png_bytes())), **extra})
    assert r.status_code == 400 and words in r.json()["error"]["message"], r.text


def test_chat_accepts_the_options_it_honours(client: TestClient) -> None:
    body = chat_body(url=data_uri(png_bytes()))
    plain = client.post("/v1/chat/completions", json=body).json()
    same = {"temperature": 0, "top_p": 1, "n": 1, "seed": 7, "user": "u1", "stream": False, "tools": None}
    r = client.post("/v1/chat/completions", json={**body, **same, "max_tokens": 10_000})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == plain["choices"][0]["message"]["content"]
    short = client.post("/v1/chat/completions", json={**body, "max_completion_tokens": 5}).json()
    assert short["usage"]["completion_tokens"] <= 5 < plain["usage"]["completion_tokens"]
    assert short["choices"][0]["finish_reason"] == "length"


def test_a_token_cap_reaches_the_model_and_keeps_batches_apart() -> None:
    stub = StubRecognizer()
    batcher = Batcher(stub, BatchConfig(max_batch_size=8, max_wait_ms=300))
    image = Image.new("RGB", (10, 10), "white")

    async def body() -> list:
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(image, "html", cap) for cap in (3, None, 3, None)))
        finally:
            await asyncio.to_thread(batcher.close)

    assert len(asyncio.run(body())) == 4
    assert stub.batch_sizes == [2, 2]  # one generate call a cap
    assert sorted(kw.get("max_new_tokens", 0) for _, kw in stub.seen) == [0, 3]


# --- the OCR task: the reader's text, under the same limits -------------------------------------

EXAMPLE = "examples/en-span.png"
FIRST_LINES = ["Region Mean Region", "Lewis, Smith and Young"]


def test_ocr_task_on_both_routes(client: TestClient) -> None:
    with open(EXAMPLE, "rb") as f:
        data = f.read()
    r = client.post("/v1/recognize", files={"file": ("t.png", data, "image/png")}, data={"task": "ocr"})
    body = r.json()
    assert r.status_code == 200 and body["task"] == "ocr", r.text
    assert body["text"].splitlines()[:2] == FIRST_LINES and body["html"] == body["csv"] == ""
    chat = client.post("/v1/chat/completions", json=chat_body("OCR:", url=data_uri(data))).json()
    assert chat["choices"][0]["message"]["content"] == body["text"]
    assert chat["usage"]["total_tokens"] == 0  # the reader answered, not the model


def test_ocr_images_are_shrunk_to_the_readers_side_within_the_pixel_limit() -> None:
    stub = StubRecognizer()
    stub.reader_options = {"max_side": 300}
    with TestClient(create_app(stub, ServeConfig(ui=False, max_pixels=MAX_PIXELS)), base_url=LOCAL) as c:
        big = c.post(
            "/v1/recognize",
            files={"file": ("t.png", png_bytes(1200, 600), "image/png")},
            data={"task": "ocr"},
        )
        small = c.post(
            "/v1/recognize", files={"file": ("t.png", png_bytes(120, 60), "image/png")}, data={"task": "ocr"}
        )
        over = c.post(
            "/v1/recognize",
            files={"file": ("t.png", png_bytes(1100, 1000), "image/png")},
            data={"task": "ocr"},
        )
    assert (big.status_code, small.status_code) == (200, 200)
    assert stub.sizes == [(300, 150), (120, 60)]  # shrunk to the reader's side, never enlarged
    assert stub.seen[0][0] == "ocr"
    assert over.status_code == 400 and "over the limit of 1000000 pixels" in over.json()["detail"]


def test_a_slow_read_is_504_and_keeps_its_slots_until_it_ends() -> None:
    stub = StubRecognizer()
    stub.gate.clear()  # the "reader" does not return until released
    app = create_app(stub, ServeConfig(ui=False, request_timeout_s=0.3, max_bodies=1))

    async def body(client: httpx.AsyncClient) -> tuple:
        files = {"file": ("t.png", png_bytes(), "image/png")}
        r = await client.post("/v1/recognize", files=files, data={"task": "ocr"})
        admission = app.state.admission
        held = admission.reads.locked() and admission.bodies.locked()  # by the read still running
        stub.gate.set()
        await _until(lambda: not admission.reads.locked() and not admission.bodies.locked())
        return r, held

    r, held = asyncio.run(_with_app(app, body))
    assert r.status_code == 504 and "(reading the text)" in r.json()["detail"]
    assert held


def test_requests_waiting_for_the_reader_are_capped_at_half_the_body_slots() -> None:
    stub = StubRecognizer()
    stub.gate.clear()  # the "reader" does not return until released
    app = create_app(stub, ServeConfig(ui=False, max_bodies=4))  # 1 reading, at most 2 waiting

    def ocr(client: httpx.AsyncClient, width: int):  # noqa: ANN202
        files = {"file": ("t.png", png_bytes(width, 40), "image/png")}
        return client.post("/v1/recognize", files=files, data={"task": "ocr"})

    async def body(client: httpx.AsyncClient) -> tuple:
        admission = app.state.admission
        first = asyncio.create_task(ocr(client, 101))
        await _until(stub.entered.is_set)
        waiting = [asyncio.create_task(ocr(client, 102 + i)) for i in range(2)]
        await _until(lambda: admission.read_waiting == 2)
        refused = await ocr(client, 110)  # its body slot given back at once: one stays free
        free = not admission.bodies.locked()
        stub.gate.set()
        return await first, await asyncio.gather(*waiting), refused, free

    first, waiting, refused, free = asyncio.run(_with_app(app, body))
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "2 requests are waiting for the reader" in refused.json()["detail"]
    assert free and [r.status_code for r in (first, *waiting)] == [200] * 3


class LayoutStandIn(StubRecognizer):
    """A stand-in layout model: it has a `reader`, so the server shrinks each page to the
    reader's side (here 300 px) and keeps its body slot until its prediction is made."""

    reader = "ppocr"

    def __init__(self) -> None:
        super().__init__()
        self.reader_options = {"max_side": 300}


@pytest.mark.parametrize(
    ("make", "held"),
    [
        (StubRecognizer, (0, 2)),  # a VLM's model-sized images queue without their body slots
        (LayoutStandIn, (1, 1)),  # a layout model's pages keep theirs: the third waits unread
    ],
)
def test_a_layout_models_pages_keep_their_body_slots_until_predicted(make, held: tuple) -> None:  # noqa: ANN001
    stub = make()
    stub.gate.clear()  # the model holds its first batch until released
    config = ServeConfig(ui=False, max_bodies=2, batch=BatchConfig(max_batch_size=1, max_wait_ms=0))
    app = create_app(stub, config)

    async def body(client: httpx.AsyncClient) -> tuple:
        admission, batcher = app.state.admission, app.state.batcher
        posts = [asyncio.create_task(_post(client, 1200 + i)) for i in range(3)]
        await _until(lambda: stub.entered.is_set() and admission.waiting + batcher.queued == 2)
        await asyncio.sleep(0.2)  # room for the third to be read, were its slot not kept
        state = (admission.waiting, batcher.queued)
        stub.gate.set()
        return state, await asyncio.gather(*posts)

    state, responses = asyncio.run(_with_app(app, body))
    assert state == held and [r.status_code for r in responses] == [200] * 3
    if make is LayoutStandIn:
        assert stub.sizes == [(300, 10)] * 3  # 1200x40, shrunk to the reader's side


def test_a_layout_page_timed_out_keeps_its_body_slot_until_its_batch_ends() -> None:
    stub = LayoutStandIn()
    stub.gate.clear()
    app = create_app(stub, ServeConfig(ui=False, max_bodies=1, request_timeout_s=0.3))

    async def body(client: httpx.AsyncClient) -> tuple:
        r = await _post(client, 100)
        admission = app.state.admission
        held = admission.bodies.locked()  # by the page still in the model
        stub.gate.set()
        await _until(lambda: not admission.bodies.locked())
        return r, held

    r, held = asyncio.run(_with_app(app, body))
    assert r.status_code == 504 and "(waiting for the model)" in r.json()["detail"]
    assert held


def test_the_batcher_lets_an_image_go_when_its_batch_ends_or_its_wait_is_cancelled() -> None:
    stub = StubRecognizer()
    stub.gate.clear()
    batcher = Batcher(stub, BatchConfig(max_batch_size=1, max_wait_ms=0))
    image = Image.new("RGB", (10, 10), "white")

    async def body() -> tuple:
        batcher.start()
        loop = asyncio.get_running_loop()
        try:
            released = [loop.create_future(), loop.create_future()]
            running = asyncio.create_task(batcher.submit(image, released=released[0]))
            await _until(stub.entered.is_set)
            queued = asyncio.create_task(batcher.submit(image, released=released[1]))
            await _until(lambda: batcher.queued == 1)
            queued.cancel()  # a timeout: out of the queue, its image let go at once
            await asyncio.wait_for(released[1], 5)
            state = (batcher.queued, released[0].done())
            stub.gate.set()
            await running
            await asyncio.wait_for(released[0], 5)  # let go once its batch has ended
            return state
        finally:
            stub.gate.set()
            await asyncio.to_thread(batcher.close)

    assert asyncio.run(body()) == (0, False)
    assert stub.batch_sizes == [1]  # the cancelled image never reached the model
