"""The HTTP API: `create_app(recognizer, config) -> FastAPI`.

Routes: `GET /health`, `GET /v1/models`, `POST /v1/recognize` (multipart field `file` or JSON
`{"image": base64}`, optional `task`), `POST /v1/chat/completions` (OpenAI's schema, image as a
`data:` URI), OpenAPI docs at `/docs`, and the Gradio web UI at `/` (`tabvlm.serve.ui`).

A request is served only under a Host name the server answers to (`ServeConfig.allowed_hosts`:
a page of another site that a DNS trick points at 127.0.0.1 is refused). Its body is read into
memory only once it holds a body slot, under a byte limit and a time limit, then parsed and
decoded from memory (`tabvlm.serve.inputs`) in a thread holding a decode slot
(`tabvlm.serve.limits`: the bound on the server's memory and every wait inside the request
timeout); each image is shrunk to the model's input size right after decoding
(`tabvlm.image.resize_to_fit`: the same pixels reach the model), so the queue holds small images
(a page the reader is to see, task ocr or a layout model's, is shrunk to the reader's side
instead, and keeps its body slot until the work is done with it).
The model runs in the batcher's worker thread (`tabvlm.serve.batcher`), so the event loop only
awaits. A request field the server does not know or honour is refused, never ignored. Errors:
400 bad input (or Host), 408 body too slow, 413 too large, 500 a failed recognition (that
request only), 503 busy (`Retry-After`), 504 timeout; bodies are `{"detail": message}`, or
OpenAI's `{"error": {...}}` on the chat route; never a bare 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
import shutil
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from tabvlm.errors import ConfigError, TabVLMError
from tabvlm.generate import image_prompt
from tabvlm.image import resize_to_fit
from tabvlm.read.ppocr import PPOCRConfig
from tabvlm.serve.batcher import BatchConfig, Batcher, QueueFullError
from tabvlm.serve.inputs import (
    InputError,
    body_limit,
    check_content_length,
    decode_base64_image,
    decode_image,
    parse_multipart,
    read_body,
    read_image_file,
)
from tabvlm.serve.limits import Admission, BodySlot
from tabvlm.tasks import TABLE_TASKS, TASKS, table_task_named_in

logger = logging.getLogger(__name__)

CHAT_PATH = "/v1/chat/completions"
SERVED_TASKS: tuple[str, ...] = (*TABLE_TASKS, "ocr")  # ocr: the reader's text (tabvlm.read), no model
# Host names always served: a browser sends one of these only for a page on this machine
LOOPBACK_HOSTS = ("localhost", "*.localhost", "127.0.0.1", "::1")
# an allowed host's name: dot-separated labels of letters, digits, "-" and "_" (an IPv4 address too)
_DNS_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*")
RECOGNIZE_FIELDS = ("image", "task")  # JSON; multipart: "file" and "task"
# OpenAI chat-completion fields: those honoured or harmless (model is not checked: one model is
# served; seed changes nothing in greedy decoding; user is an id for the caller's own logs) ...
CHAT_FIELDS = ("model", "messages", "max_tokens", "max_completion_tokens", "seed", "user")
# ... and those accepted only at the value that asks for what this server does anyway: greedy
# decoding, one choice, no streaming. Any other field or value is refused (400) by name; a field
# sent as null counts as left out.
CHAT_FIXED: dict[str, tuple[Any, ...]] = {
    "stream": (False,),
    "n": (1,),
    "temperature": (0,),
    "top_p": (1,),
    "presence_penalty": (0,),
    "frequency_penalty": (0,),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "stop": ([],),
    "logit_bias": ({},),
    "response_format": ({"type": "text"},),
}


@dataclass
class ServeConfig:
    """Limits and knobs of one server."""

    model_name: str = "tabvlm"
    max_image_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 25_000_000  # far above any table scan (A4 at 300 dpi is 8.7M)
    request_timeout_s: float = 60.0  # every wait and all the work, the body's arrival aside; then 504
    body_timeout_s: float = 60.0  # the whole request body must arrive within it; past it -> 408
    decode_workers: int = 2  # images decoded at once (a full-size decode can take ~0.5 GB)
    max_bodies: int = 8  # requests whose data is in memory at once (tabvlm.serve.limits); more wait
    batch: BatchConfig = field(default_factory=BatchConfig)
    ui: bool = True
    examples_dir: str | None = "examples"  # images for the UI's examples; empty -> a few synthetic ones
    # Host header names served ("*.example.org": its subdomains, "*": any); others get 400
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS

    def __post_init__(self) -> None:
        limits = (self.max_image_bytes, self.max_pixels, self.request_timeout_s, self.body_timeout_s)
        if min(limits) <= 0 or self.decode_workers < 1 or self.max_bodies < 1:
            raise ConfigError(
                "serve: expected max_image_bytes, max_pixels, request_timeout_s, body_timeout_s > 0 "
                f"and decode_workers, max_bodies >= 1; found {', '.join(map(str, limits))}, "
                f"{self.decode_workers}, {self.max_bodies}"
            )
        if not self.allowed_hosts:
            raise ConfigError("serve: allowed_hosts is empty; expected at least one name (or '*')")
        hosts = tuple(host_pattern(h) for h in self.allowed_hosts)
        self.allowed_hosts = tuple(dict.fromkeys(hosts))  # in order, once each


@dataclass
class _Input:
    """A request's image (decoded and shrunk), task and token cap (None: the server's)."""

    image: Any
    task: str
    max_tokens: int | None = None


class RecognizeResponse(BaseModel):
    """`POST /v1/recognize`. Whatever the task, html/markdown/csv are views of the table the
    output parses into (empty when it holds none); `text` is the model's raw output (task ocr:
    the reader's text, one line per visual line, and the views empty)."""

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
                        "task": {"type": "string", "enum": list(SERVED_TASKS), "default": "html"},
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "description": "base64 (or a data: URI)"},
                        "task": {"type": "string", "enum": list(SERVED_TASKS), "default": "html"},
                    },
                    "additionalProperties": False,
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
    # read, then lay out (a layout model): the reader sees every image first, at its own size
    reads_words = hasattr(recognizer, "reader")
    read_size = int(getattr(recognizer, "reader_options", {}).get("max_side", PPOCRConfig.max_side))
    limit = body_limit(cfg.max_image_bytes)
    admissions: list[Admission] = []  # made in the serving loop, at startup
    prompt_tokens: dict[str, int] = {}  # per table task of a VLM (the same for every request)
    ui_dirs: list[Path] = []  # the UI's temporary folder, removed at shutdown

    @contextlib.asynccontextmanager
    async def lifespan(served: FastAPI) -> AsyncIterator[None]:
        admissions[:] = [
            Admission(cfg.max_bodies, cfg.decode_workers, cfg.batch.max_queue, cfg.request_timeout_s)
        ]
        served.state.admission = admissions[0]
        batcher.start()
        try:
            yield
        finally:
            admissions[0].close()
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
        return _error(request.url.path, e.status, e.reason)

    @app.exception_handler(TabVLMError)
    async def _server_error(request: Request, e: TabVLMError) -> JSONResponse:
        logger.error("request failed: %s", e)
        return _error(request.url.path, 500, str(e))

    @app.exception_handler(Exception)
    async def _unexpected_error(request: Request, e: Exception) -> JSONResponse:
        # the last resort: a JSON answer (Starlette then re-raises, so the traceback is logged)
        message = f"internal error ({type(e).__name__}); the server log has the details"
        return _error(request.url.path, 500, message)

    def shrink(image: Any, task: str) -> Any:
        """To the model's input (`resize_to_fit`: the same pixels reach the model), or, when the
        reader sees it (ocr; a layout model), down to the reader's `max_side` (its own first
        step): the full-size image ends here."""
        if task == "ocr" or reads_words:
            return image if max(image.size) <= read_size else resize_to_fit(image, read_size)
        return image if fit_size is None else resize_to_fit(image, fit_size)

    def recognize_input(ctype: str, body: bytearray) -> _Input:
        """A /v1/recognize body's input, in a decode thread; the body is freed once parsed."""
        data, task = _recognize_fields(ctype, body)
        return _Input(shrink(decode_image(data, cfg.max_image_bytes, cfg.max_pixels), task), task)

    def chat_input(body: bytearray) -> _Input:
        """A chat body's input, in a decode thread; the JSON is freed before the image decodes."""
        data, task, max_tokens = _chat_fields(body)
        image = decode_image(data, cfg.max_image_bytes, cfg.max_pixels)
        cap = getattr(recognizer, "max_new_tokens", None)
        if max_tokens is not None and cap is not None and max_tokens >= cap:
            max_tokens = None  # the server's own cap: no change, and it batches with the rest
        return _Input(shrink(image, task), task, max_tokens)

    def upload_input(path: str, task: str) -> _Input:
        """A web UI upload's input (a file in Gradio's upload folder), in a decode thread."""
        return _Input(shrink(read_image_file(path, cfg.max_image_bytes, cfg.max_pixels), task), task)

    def keeps_slot(task: str) -> bool:
        """Whether a request keeps its body slot until its prediction is made: a reader-sized
        image (task ocr, or any task of a layout model) is as large as a body, so it must not
        wait in the batcher's queue outside the slots (`tabvlm.serve.limits`)."""
        return task == "ocr" or reads_words

    def read_text_of(image: Any) -> Any:
        return recognizer.predict_many([image], batch_size=1, task="ocr")[0]

    async def answer(request: Request, parse: Callable[[bytearray], _Input]) -> tuple[Any, _Input]:
        """(prediction, input) of a request: the body read in a body slot (413 before any wait when
        Content-Length is over the limit), parsed and decoded in a decode slot, then recognised.
        Every wait is inside the request timeout, which does not count the body's own arrival
        (`body_timeout_s` bounds that)."""
        length = request.headers.get("content-length")
        check_content_length(length, limit)
        admission = admissions[0]
        deadline = admission.deadline()
        async with admission.body_slot(deadline) as slot:
            loop = asyncio.get_running_loop()
            started = loop.time()
            body = await read_body(length, request.stream(), limit, cfg.body_timeout_s)
            deadline += loop.time() - started
            got = await admission.decode(deadline, parse, body, slot=slot)
            if keeps_slot(got.task):
                return await predict(got, deadline, slot), got
        return await predict(got, deadline), got

    async def predict(got: _Input, deadline: float, slot: BodySlot | None = None) -> Any:
        """The reader's text (ocr: in the reader slot, keeping `slot` until done) or the model's
        answer (through the batcher), within the request's deadline. `slot`, when given, is
        kept until the work is done with the image: after a 504 too, until the reader or the
        image's batch ends (a queued image is dropped at once)."""
        admission = admissions[0]
        if got.task == "ocr":
            return await admission.read(deadline, read_text_of, got.image, slot=slot)
        released = None
        if slot is not None:  # held until the batcher lets the image go, a 504 notwithstanding
            released = asyncio.get_running_loop().create_future()
            slot.hold_until(released)
        try:
            work = batcher.submit(got.image, got.task, got.max_tokens, released=released)
            return await admission.within(deadline, work, "waiting for the model")
        except QueueFullError as e:
            raise InputError(503, f"server busy: {e}; retry shortly") from e

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
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith(("multipart/form-data", "application/json")):
            raise InputError(
                400, f"expected multipart/form-data or application/json; found {ctype or 'no Content-Type'}"
            )
        pred, got = await answer(request, lambda body: recognize_input(ctype, body))
        task = got.task
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
        pred, got = await answer(request, chat_input)
        task = got.task
        if task == "ocr":  # the reader answers: no model prompt
            prompt = 0
        elif reads_words:  # the layout model's prefix: its image tokens and one token per word
            prompt = recognizer.model.config.image_tokens + len(pred.words)
        else:  # the same for every request of a task: counted once
            if task not in prompt_tokens:
                text = image_prompt(recognizer.tokenizer, recognizer.model.image_tokens, task)
                prompt_tokens[task] = len(recognizer.tokenizer.encode(text))
            prompt = prompt_tokens[task]
        content = pred.html or pred.raw if task == "html" else pred.raw
        finish = pred.finish_reason
        return ChatCompletion(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=cfg.model_name,
            choices=[ChatChoice(index=0, message=ChatMessage(content=content), finish_reason=finish)],
            usage=ChatUsage(
                prompt_tokens=prompt, completion_tokens=pred.tokens, total_tokens=prompt + pred.tokens
            ),
        )

    if cfg.ui:
        from tabvlm.serve.ui import mount_ui

        async def ui_predict(path: str, task: str) -> tuple[Any, Any]:
            """(prediction, the decoded and shrunk image it was made from) of the UI's upload (a
            file in Gradio's upload folder), through the same slots, batcher and request timeout
            as the API's; refusals are InputErrors. For a layout model the image is the page the
            reader saw (its size is `Prediction.page_size`)."""
            admission = admissions[0]
            deadline = admission.deadline()
            async with admission.body_slot(deadline) as slot:
                got = await admission.decode(deadline, upload_input, path, task, slot=slot)
                if keeps_slot(task):
                    return await predict(got, deadline, slot), got.image
            return await predict(got, deadline), got.image

        # last: its mount at "/" would shadow any route added after it
        ui_dirs.append(mount_ui(app, ui_predict, cfg))
    app.add_middleware(HostCheck, allowed=cfg.allowed_hosts)  # added last: the outermost layer
    return app


def _error(path: str, status: int, message: str) -> JSONResponse:
    """The error body: OpenAI's shape on the chat route (its clients read `error.message`)."""
    headers = {"Retry-After": "1"} if status == 503 else None
    if path == CHAT_PATH:
        kind = "server_error" if status >= 500 else "invalid_request_error"
        content: dict[str, Any] = {"error": {"message": message, "type": kind, "code": status}}
    else:
        content = {"detail": message}
    return JSONResponse(content, status_code=status, headers=headers)


def host_name(header: str) -> str:
    """The name in a Host header: lower case, without its port, IPv6 brackets or final dot."""
    name = header.strip().lower()
    if name.startswith("["):  # [::1]:8001
        name = name[1 : name.find("]")] if "]" in name else name
    elif name.count(":") == 1:  # name:port (a bare IPv6 address has more colons)
        name = name.partition(":")[0]
    return name.rstrip(".")


def host_pattern(pattern: str) -> str:
    """An `allowed_hosts` entry, checked and lower-cased: "*" (any name), "*.example.org" (its
    subdomains) or an exact name: a DNS name, an IPv4 address or an IPv6 one (brackets allowed),
    without a port (the Host check ignores ports). Anything else is a ConfigError."""
    text = pattern.strip().lower() if isinstance(pattern, str) else ""
    if text == "*":
        return text
    wild = text.startswith("*.")
    name = text[2:] if wild else text
    if name.startswith("[") and name.endswith("]") and not wild:  # [::1]
        name = name[1:-1]
    if name.endswith(".") and not name.endswith(".."):  # the root's dot: example.org.
        name = name[:-1]
    if _DNS_NAME.fullmatch(name) or (not wild and _is_ipv6(name)):
        return f"*.{name}" if wild else name
    raise ConfigError(
        f"serve: allowed host {pattern!r} is not a host name; expected an exact name "
        "(tables.example.org, 10.1.2.3, ::1; no port, no scheme), '*.example.org' or '*'"
    )


def _is_ipv6(name: str) -> bool:
    try:
        ipaddress.IPv6Address(name)
    except ValueError:
        return False
    return True


def host_allowed(name: str, allowed: Sequence[str]) -> bool:
    """Whether a Host name matches `allowed`: exact names, "*.example.org" (its subdomains), "*"."""
    return any(
        pattern == "*" or name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:]))
        for pattern in allowed
    )


class HostCheck:
    """ASGI middleware: 400 for a request whose Host header is not an allowed name. A browser on
    a page of attacker.example, which a DNS trick points at 127.0.0.1 ("DNS rebinding"), sends
    `Host: attacker.example`, so that page cannot use a server bound to the loopback address."""

    def __init__(self, app: ASGIApp, allowed: Sequence[str]):
        self.app, self.allowed = app, tuple(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            raw = next((v for k, v in scope["headers"] if k == b"host"), b"")
            name = host_name(raw.decode("latin-1"))
            if not host_allowed(name, self.allowed):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                message = (
                    f"Host {name!r} is not served here; expected one of {', '.join(self.allowed)} "
                    "(tabvlm serve --allowed-host NAME serves another name)"
                    if name
                    else "the request has no Host header"
                )
                await _error(scope["path"], 400, message)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _json_object(body: bytes | bytearray) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(400, f"body is not valid JSON ({e})") from e
    except ValueError as e:  # json turns digits into an int, and Python refuses very long ones
        raise InputError(
            400, f"body holds a JSON number of more than {sys.get_int_max_str_digits()} digits"
        ) from e
    except RecursionError as e:  # Python's parser recurses once per [ or {
        raise InputError(400, "body is JSON nested too deeply to parse") from e
    if not isinstance(obj, dict):
        raise InputError(400, f"expected a JSON object; found {type(obj).__name__}")
    return obj


def _check_task(task: Any) -> str:
    if not isinstance(task, str) or task not in SERVED_TASKS:
        raise InputError(400, f"unknown task {task!r}; expected one of {', '.join(SERVED_TASKS)}")
    return task


def _unknown_fields(names: Any, known: Sequence[str], route: str) -> None:
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise InputError(
            400,
            f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
            f"{route} takes {', '.join(map(repr, known))}",
        )


def _recognize_fields(ctype: str, body: bytearray) -> tuple[bytes | bytearray, str]:
    """(image bytes, task) of a multipart or JSON /v1/recognize body, which is emptied once parsed
    (its memory freed before the image decodes)."""
    if ctype.startswith("multipart/form-data"):
        fields = parse_multipart(ctype, body)
        body.clear()
        if "file" not in fields:
            raise InputError(400, "multipart body has no field named 'file'")
        _unknown_fields(fields, ("file", "task"), "/v1/recognize")
        task = _check_task(fields.get("task", b"html").decode("utf-8", "replace"))
        return fields["file"], task
    obj = _json_object(body)
    body.clear()
    image = obj.pop("image", None)
    if not isinstance(image, str):
        raise InputError(400, 'JSON body needs "image": a base64 string')
    _unknown_fields([*obj, "image"], RECOGNIZE_FIELDS, "/v1/recognize")
    task = _check_task(obj.get("task", "html"))
    return decode_base64_image(image), task


def _chat_fields(body: bytearray) -> tuple[bytes, str, int | None]:
    """(image bytes, task, max_tokens or None) of a chat-completion body, emptied once parsed.
    Refuses (400, by name) a field outside `CHAT_FIELDS` and `CHAT_FIXED`, or a `CHAT_FIXED`
    field at a value other than its own."""
    obj = {k: v for k, v in _json_object(body).items() if v is not None}
    body.clear()
    _unknown_fields(obj, (*CHAT_FIELDS, *CHAT_FIXED), CHAT_PATH)
    unhonoured = [f"{k}={obj[k]!r}" for k, ok in CHAT_FIXED.items() if k in obj and obj[k] not in ok]
    if unhonoured:
        expected = ", ".join(f"{k}={ok[0]!r}" for k, ok in CHAT_FIXED.items())
        raise InputError(
            400,
            f"not supported: {', '.join(unhonoured)}; this server decodes greedily, one choice, no "
            f"streaming: leave these fields out or send {expected}",
        )
    caps = []
    for key in ("max_tokens", "max_completion_tokens"):
        value = obj.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise InputError(400, f"{key} must be an integer >= 1; found {value!r}")
        if value is not None:
            caps.append(value)
    url, prompt = _chat_image_and_text(obj.get("messages"))
    return decode_base64_image(url), chat_task(prompt), min(caps, default=None)


def chat_task(prompt: str) -> str:
    """The task a chat prompt asks for: ocr for PaddleOCR-VL's "OCR:" prompt or the ocr task's own
    prompt, else the table task it names (html when none)."""
    text = prompt.strip()
    if text.lower().startswith("ocr:") or text == TASKS["ocr"].prompt:
        return "ocr"
    return table_task_named_in(prompt)


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
