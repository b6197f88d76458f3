"""The server: every route, every refusal (400/413/503/504), batching, and the CLI verb.

Real-model tests use configs/tiny.yaml random weights (answers are well-formed tables with random
text); batching, queue and timeout tests use a stub recognizer whose timing the test controls.
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from images import bomb_png
from PIL import Image

from tabvlm.recognizer import Prediction, TableRecognizer
from tabvlm.serve import BatchConfig, ServeConfig, create_app
from tabvlm.serve.inputs import body_limit
from tabvlm.serve.ui import _Downloads, example_images
from tabvlm.tables.html import parse_html, to_html

MAX_BYTES = 200_000
MAX_PIXELS = 1_000_000


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
    with TestClient(create_app(recognizer, config)) as c:
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
        self.max_new_tokens = 8

    def predict_many(self, images: list, batch_size: int, task: str = "html") -> list[Prediction]:
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
    with TestClient(app) as c:
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
    with TestClient(create_app(short, ServeConfig(ui=False))) as c:
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
    with TestClient(create_app(StubRecognizer(), ServeConfig(ui=False))) as c:
        r = c.post("/v1/recognize", files={"file": ("t.png", png_bytes(), "image/png")})
    assert r.status_code == 200 and r.json()["finish_reason"] == "stop"


class FragileRecognizer(StubRecognizer):
    """Fails every batch that holds an image 77 pixels wide."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []  # images in each call, failed ones included

    def predict_many(self, images: list, batch_size: int, task: str = "html") -> list[Prediction]:
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
        def predict_many(self, images: list, batch_size: int, task: str = "html") -> list:
            return [object() for _ in images]  # not a Prediction: the route itself fails

    with TestClient(create_app(Broken(), ServeConfig(ui=False)), raise_server_exceptions=False) as c:
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


def test_a_stalled_request_body_is_cut_off() -> None:
    """Headers and half a body, then nothing: the server answers 408 (or closes); without the body
    timeout it would wait for the rest forever, and the socket's own 60 s timeout fails the test."""
    import socket

    import uvicorn

    app = create_app(StubRecognizer(), ServeConfig(ui=False, body_timeout_s=1.0))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        body = png_bytes()
        with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
            head = (
                "POST /v1/recognize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
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
    finally:
        server.should_exit = True
        thread.join(10)


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
        with TestClient(create_app(recognizer, ServeConfig(ui=False))) as c:
            r = c.post("/v1/recognize", files={"file": ("big.png", buf.getvalue(), "image/png")})
    finally:
        del recognizer.predict_many
    assert r.status_code == 200 and seen == [(128, 80)]  # 2400x1500 fit to the tiny model's 128 px
    assert r.json()["text"] == recognizer.predict(big).raw  # the same pixels reach the model
