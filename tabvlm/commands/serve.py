"""Serve a model over HTTP: the JSON API, an OpenAI-compatible chat route and the web UI.

Run as: tabvlm serve [--model MODEL_DIR_OR_CONFIG_YAML] [--host 127.0.0.1] [--port 8001]
                     [--max-batch-size 8] [--max-wait-ms 10] [--max-queue 64] [--timeout 60]
                     [--body-timeout 60] [--max-upload-mb 10] [--max-pixels 25000000]
                     [--max-new-tokens 2048] [--max-bodies 8] [--allowed-host NAME ...]
                     [--device cpu] [--no-ui]

Without --model the shipped default model is served. A config .yaml serves random weights (for
trying the server out). Routes: POST /v1/recognize, POST /v1/chat/completions, GET /v1/models,
GET /health, docs at /docs, web UI at /. The server binds 127.0.0.1 unless told otherwise, and
answers only requests whose Host header names it: localhost, 127.0.0.1, ::1, the --host address
and each --allowed-host (a proxy's public name); the README's "Security" section lists its limits
and how to put it behind a reverse proxy.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tabvlm.commands import add_dtype_option
from tabvlm.errors import ConfigError


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="tabvlm serve", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model", help="model folder, or a config .yaml (random weights); default: the shipped model"
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--max-batch-size", type=int, default=8, help="1 turns batching off")
    ap.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a batch waits to fill")
    ap.add_argument("--max-queue", type=int, default=64, help="waiting requests before 503")
    ap.add_argument("--timeout", type=float, default=60.0, help="per-request seconds before 504")
    ap.add_argument(
        "--body-timeout",
        type=float,
        default=60.0,
        help="seconds for a whole request body to arrive (else 408)",
    )
    ap.add_argument("--max-upload-mb", type=float, default=10.0)
    ap.add_argument("--max-pixels", type=int, default=25_000_000)
    ap.add_argument(
        "--max-bodies",
        type=int,
        default=8,
        help="request bodies held in memory at once (the rest wait, unread); bounds the memory",
    )
    ap.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host header name to answer besides localhost, 127.0.0.1, ::1 and --host (repeatable; "
        "'*.example.org' for its subdomains, '*' for any)",
    )
    ap.add_argument(
        "--max-new-tokens", type=int, default=2048, help="capped at what the model's positions hold"
    )
    ap.add_argument("--device", default="cpu")
    add_dtype_option(ap)
    ap.add_argument("--no-ui", action="store_true", help="API only, no web UI at /")
    args = ap.parse_args(argv)
    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1; found {args.max_new_tokens}")

    import uvicorn

    from tabvlm.recognizer import TableRecognizer
    from tabvlm.serve import BatchConfig, ServeConfig, create_app
    from tabvlm.serve.api import LOOPBACK_HOSTS
    from tabvlm.serve.limits import release_large_blocks

    release_large_blocks()  # freed bodies and decode buffers go back to the system: RSS stays bounded

    # a wildcard bind address is no name a client uses; a specific one is
    bound = () if args.host in ("0.0.0.0", "::", "") else (args.host,)
    config = ServeConfig(
        model_name=Path(args.model).stem if args.model else "tabvlm-layout",
        max_image_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=args.max_pixels,
        request_timeout_s=args.timeout,
        body_timeout_s=args.body_timeout,
        max_bodies=args.max_bodies,
        batch=BatchConfig(args.max_batch_size, args.max_wait_ms, args.max_queue),
        ui=not args.no_ui,
        allowed_hosts=(*LOOPBACK_HOSTS, *bound, *args.allowed_host),
    )
    recognizer = TableRecognizer.from_pretrained(
        args.model,
        device=args.device,
        dtype=args.dtype,
        max_new_tokens=args.max_new_tokens,
        # no cache of what the reader read: a server's images seldom repeat, and the cache would
        # hold up to 4096 pages of words beyond the limits' bound
        reader_options={"cache": False},
    )
    app = create_app(recognizer, config)
    print(
        f"tabvlm serve: {config.model_name} at http://{args.host}:{args.port}/ (API docs at /docs)",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
