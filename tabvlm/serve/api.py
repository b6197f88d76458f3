"""The HTTP API: `create_app(recognizer, config) -> FastAPI`.

Routes: `GET /health`, `GET /v1/models`, `POST /v1/recognize` (multipart field `file` or JSON
`{"image": base64}`, optional `task`), `POST /v1/chat/completions` (OpenAI's schema, image as a
`data:` URI), OpenAPI docs at `/docs`, and the Gradio web UI at `/` (`tabvlm.serve.ui`).

Every request body is read into memory under a byte limit and a time limit, and decoded from
memory (`tabvlm.serve.inputs`) by a few threads at a time; each image is shrunk to the model's
input size right after decoding (`tabvlm.image.resize_to_fit`: the same pixels reach the model),
so the queue holds small images. The model runs in the batcher's worker thread
(`tabvlm.serve.batcher`), so the event loop only awaits. Errors: 400 bad input, 408 body too
slow, 413 too large, 500 a failed recognition (that request only), 503 queue full, 504 timeout;
bodies are `{"detail": message}`, or OpenAI's `{"error": {...}}` on the chat route; never a bare
500.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from tabvlm.errors import ConfigError, TabVLMError
from tabvlm.generate import image_prompt
from tabvlm.image import resize_to_fit
from tabvlm.serve.batcher import BatchConfig, Batcher, QueueFullError
from tabvlm.serve.inputs import (
    InputError,
    body_limit,
    decode_base64_image,
    decode_image,
    parse_multipart,
    read_body,
)
from tabvlm.tasks import TABLE_TASKS, table_task_named_in

logger = logging.getLogger(__name__)

CHAT_PATH = "/v1/chat/completions"


@dataclass
class ServeConfig:
    """Limits and knobs of one server."""

    model_name: str = "tabvlm"
    max_image_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 25_000_000  # far above any table scan (A4 at 300 dpi is 8.7M)
    request_timeout_s: float = 60.0  # queue wait + decoding; past it -> 504
    body_timeout_s: float = 60.0  # the whole request body must arrive within it; past it -> 408
    decode_workers: int = 2  # images decoded at once (a full-size decode can take ~0.5 GB)
    batch: BatchConfig = field(default_factory=BatchConfig)
    ui: bool = True
    examples_dir: str | None = "examples"  # images for the UI's examples; empty -> a few synthetic ones

    def __post_init__(self) -> None:
        limits = (self.max_image_bytes, self.max_pixels, self.request_timeout_s, self.body_timeout_s)
        if min(limits) <= 0 or self.decode_workers < 1:
            raise ConfigError(
                "serve: expected max_image_bytes, max_pixels, request_timeout_s, body_timeout_s > 0 "
                f"and decode_workers >= 1; found {', '.join(map(str, limits))}, {self.decode_workers}"
            )


class RecognizeResponse(BaseModel):
    """`POST /v1/recognize`. Whatever the task, html/markdown/csv are views of the table the
    output parses into (empty when it holds none); `text` is the model's raw output."""

    html: str
    markdown: str
    csv: str
    text: str
    task: str
    seconds: float  # the request's time in the server: queue wait + decoding
    tokens: int
    finish_reason: Literal["stop", "length"]  # "length": cut short (max_new_tokens, model positions)
    model: str


class ChatMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatMessage
    finish_reason: Literal["stop", "length"]


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    """OpenAI's chat.completion object (non-streaming)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage


_RECOGNIZE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "task": {"type": "string", "enum": list(TABLE_TASKS), "default": "html"},
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "description": "base64 (or a data: URI)"},
                        "task": {"type": "string", "enum": list(TABLE_TASKS), "default": "html"},
                    },
                }
            },
        },
    }
}
_CHAT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "example": {
                    "model": "tabvlm",
                    "messages": [
                        {
                            "role": "user",
                            "content": [
                                {"type": "text", "text": "Convert the table to HTML."},
                                {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}},
                            ],
                        }
                    ],
                }
            }
        },
    }
}


def create_app(recognizer: Any, config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app serving `recognizer` (a `TableRecognizer`). The batcher's worker thread
    starts and stops with the app's lifespan (uvicorn, or `with TestClient(app)`)."""
    cfg = config or ServeConfig()
    batcher = Batcher(recognizer, cfg.batch)
    # the model's input size: images are shrunk to it after decoding (None: a stand-in without one)
    fit_size: int | None = getattr(recognizer, "image_size", None)
    decode_slots: list[asyncio.Semaphore] = []  # made in the serving loop, at startup
    prompt_tokens: dict[str, int] = {}  # per task, for the chat route's usage
    ui_dirs: list[Path] = []  # the UI's temporary folder, removed at shutdown

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        decode_slots[:] = [asyncio.Semaphore(cfg.decode_workers)]
        batcher.start()
        try:
            yield
        finally:
            await run_in_threadpool(batcher.close)
            for folder in ui_dirs:
                shutil.rmtree(folder, ignore_errors=True)

    app = FastAPI(
        title="tabvlm",
        summary="Table images to HTML, Markdown and CSV",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.config = cfg

    @app.exception_handler(InputError)
    async def _input_error(request: Request, e: InputError) -> JSONResponse:
        return _error(request, e.status, e.reason)

    @app.exception_handler(TabVLMError)
    async def _server_error(request: Request, e: TabVLMError) -> JSONResponse:
        logger.error("request failed: %s", e)
        return _error(request, 500, str(e))

    @app.exception_handler(Exception)
    async def _unexpected_error(request: Request, e: Exception) -> JSONResponse:
        # the last resort: a JSON answer (Starlette then re-raises, so the traceback is logged)
        return _error(request, 500, f"internal error ({type(e).__name__}); the server log has the details")

    def load(data: bytes) -> Any:
        """Decode, then shrink to the model's input: the full-size image lives only here."""
        image = decode_image(data, cfg.max_image_bytes, cfg.max_pixels)
        return image if fit_size is None else resize_to_fit(image, fit_size)

    async def decode(data: bytes) -> Any:
        async with decode_slots[0]:  # a few full-size decodes at a time bound the peak memory
            return await run_in_threadpool(load, data)

    async def read(request: Request) -> bytes:
        limit = body_limit(cfg.max_image_bytes)
        stream = request.stream()
        return await read_body(request.headers.get("content-length"), stream, limit, cfg.body_timeout_s)

    async def image_from_request(request: Request) -> tuple[Any, str]:
        """(PIL image, task) from a multipart or JSON body."""
        body = await read(request)
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            fields = parse_multipart(ctype, body)
            if "file" not in fields:
                raise InputError(400, "multipart body has no field named 'file'")
            data, task = fields["file"], fields.get("task", b"html").decode("utf-8", "replace")
        elif ctype.startswith("application/json"):
            obj = _json_object(body)
            if not isinstance(obj.get("image"), str):
                raise InputError(400, 'JSON body needs "image": a base64 string')
            data, task = decode_base64_image(obj["image"]), obj.get("task", "html")
        else:
            raise InputError(
                400, f"expected multipart/form-data or application/json; found {ctype or 'no Content-Type'}"
            )
        if task not in TABLE_TASKS:
            raise InputError(400, f"unknown task {task!r}; expected one of {', '.join(TABLE_TASKS)}")
        return await decode(data), task

    async def run(image: Any, task: str) -> Any:
        """The prediction, through the batcher, within the request timeout."""
        try:
            return await asyncio.wait_for(batcher.submit(image, task), cfg.request_timeout_s)
        except QueueFullError as e:
            raise InputError(503, f"server busy: {e}; retry shortly") from e
        except TimeoutError as e:
            raise InputError(504, f"no answer within the request timeout of {cfg.request_timeout_s} s") from e

    @app.get("/health", summary="Liveness and queue depth")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": cfg.model_name, "queued": batcher.queued}

    @app.get("/v1/models", summary="The served model (OpenAI list format)")
    async def models() -> dict[str, Any]:
        card = {"id": cfg.model_name, "object": "model", "created": 0, "owned_by": "tabvlm"}
        return {"object": "list", "data": [card]}

    @app.post(
        "/v1/recognize",
        response_model=RecognizeResponse,
        summary="Recognise one table image",
        openapi_extra=_RECOGNIZE_BODY,
    )
    async def recognize(request: Request) -> RecognizeResponse:
        t0 = time.perf_counter()
        image, task = await image_from_request(request)
        pred = await run(image, task)
        return RecognizeResponse(
            html=pred.html,
            markdown=pred.markdown,
            csv=pred.csv,
            text=pred.raw,
            task=task,
            seconds=round(time.perf_counter() - t0, 4),
            tokens=pred.tokens,
            finish_reason=pred.finish_reason,
            model=cfg.model_name,
        )

    @app.post(
        CHAT_PATH,
        response_model=ChatCompletion,
        summary="OpenAI-compatible chat completion (one image, data: URI)",
        openapi_extra=_CHAT_BODY,
    )
    async def chat(request: Request) -> ChatCompletion:
        obj = _json_object(await read(request))
        if obj.get("stream"):
            raise InputError(400, "stream=true is not supported; send stream=false")
        url, prompt = _chat_image_and_text(obj.get("messages"))
        task = table_task_named_in(prompt)
        pred = await run(await decode(decode_base64_image(url)), task)
        if task not in prompt_tokens:
            text = image_prompt(recognizer.tokenizer, recognizer.model.image_tokens, task)
            prompt_tokens[task] = len(recognizer.tokenizer.encode(text))
        content = pred.html or pred.raw if task == "html" else pred.raw
        finish = pred.finish_reason
        return ChatCompletion(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=cfg.model_name,
            choices=[ChatChoice(index=0, message=ChatMessage(content=content), finish_reason=finish)],
            usage=ChatUsage(
                prompt_tokens=prompt_tokens[task],
                completion_tokens=pred.tokens,
                total_tokens=prompt_tokens[task] + pred.tokens,
            ),
        )

    if cfg.ui:
        from tabvlm.serve.ui import mount_ui

        async def ui_predict(image: Any, task: str) -> Any:
            if fit_size is not None:
                image = await run_in_threadpool(resize_to_fit, image, fit_size)
            return await asyncio.wait_for(batcher.submit(image, task), cfg.request_timeout_s)

        # last: its mount at "/" would shadow any route added after it
        ui_dirs.append(mount_ui(app, ui_predict, cfg))
    return app


def _error(request: Request, status: int, message: str) -> JSONResponse:
    """The error body: OpenAI's shape on the chat route (its clients read `error.message`)."""
    headers = {"Retry-After": "1"} if status == 503 else None
    if request.url.path == CHAT_PATH:
        kind = "server_error" if status >= 500 else "invalid_request_error"
        content: dict[str, Any] = {"error": {"message": message, "type": kind, "code": status}}
    else:
        content = {"detail": message}
    return JSONResponse(content, status_code=status, headers=headers)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(400, f"body is not valid JSON ({e})") from e
    except RecursionError as e:  # Python's parser recurses once per [ or {
        raise InputError(400, "body is JSON nested too deeply to parse") from e
    if not isinstance(obj, dict):
        raise InputError(400, f"expected a JSON object; found {type(obj).__name__}")
    return obj


def _chat_image_and_text(messages: Any) -> tuple[str, str]:
    """The one image URL and the joined text of the last user message."""
    if not isinstance(messages, list) or not messages:
        raise InputError(400, '"messages" must be a non-empty list')
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise InputError(400, "no message with role 'user'")
    content = users[-1].get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not isinstance(parts, list):
        raise InputError(400, "user message content must be a string or a list of parts")
    urls, texts = [], []
    for part in parts:
        if not isinstance(part, dict):
            raise InputError(400, "each content part must be an object")
        if part.get("type") == "image_url":
            image_url = part.get("image_url")
            url = image_url.get("url") if isinstance(image_url, dict) else image_url
            if not isinstance(url, str):
                raise InputError(400, "image_url part without a url")
            urls.append(url)
        elif part.get("type") == "text":
            texts.append(str(part.get("text", "")))
    if len(urls) != 1:
        raise InputError(400, f"expected exactly one image_url in the user message; found {len(urls)}")
    if not urls[0].startswith("data:"):
        raise InputError(
            400, "image_url must be a data: URI (data:image/png;base64,...); the server fetches no URLs"
        )
    return urls[0], " ".join(texts)
