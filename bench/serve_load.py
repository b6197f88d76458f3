"""Load test of `tabvlm serve` on loopback: many concurrent clients, batching on and off.

A uvicorn server (API only) runs in this process on a free 127.0.0.1 port; `--clients` async
clients send `--requests` POST /v1/recognize between them (multipart PNGs of synthetic tables,
`--images` different ones in turn). Every answer is checked: HTTP 200, a well-formed canonical
table, and the same HTML as a direct batch-1 `predict` of that image (so no answer went to the
wrong request). Reports p50/p95 latency, throughput and the mean batch size, for batching on
(`--max-batch-size`) and off (batch size 1). Random weights from `--config`, greedy decoding of
at most `--max-new-tokens` tokens, so every request costs about the same.

Run as: .venv/bin/python bench/serve_load.py [--config configs/tiny.yaml] [--max-new-tokens 32]
        [--requests 200] [--clients 16] [--images 8] [--max-batch-size 16] [--max-wait-ms 10]
        [--threads 2] [--out bench/results/serve_load.json]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import socket
import statistics
import threading
import time
from pathlib import Path

import httpx
import torch
import uvicorn
from common import write_result

from tabvlm.data.fonts import discover_fonts
from tabvlm.data.render import RenderConfig, make_sample
from tabvlm.data.synth import SynthConfig
from tabvlm.recognizer import TableRecognizer
from tabvlm.serve import BatchConfig, ServeConfig, create_app
from tabvlm.tables.html import parse_html, to_html


def table_pngs(n: int) -> list[bytes]:
    """`n` synthetic English tables as PNG bytes."""
    fonts = discover_fonts()
    synth, render = SynthConfig(rows=(3, 8), cols=(2, 5), zh_rate=0.0), RenderConfig()
    out = []
    for i in range(n):
        buf = io.BytesIO()
        make_sample(1, i, synth, render, fonts)[1].image.save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


async def load(url: str, pngs: list[bytes], expected: list[str], n_requests: int, n_clients: int) -> dict:
    """Send the requests; return latencies and the count of each outcome."""
    latencies: list[float] = []
    outcome = {"ok": 0, "wrong": 0, "failed": 0}
    next_id = iter(range(n_requests))
    timeout = httpx.Timeout(300.0)

    async def client_loop(client: httpx.AsyncClient) -> None:
        for i in next_id:  # a shared iterator: each request id is taken once
            k = i % len(pngs)
            t0 = time.perf_counter()
            try:
                r = await client.post("/v1/recognize", files={"file": (f"{k}.png", pngs[k], "image/png")})
            except httpx.HTTPError:
                outcome["failed"] += 1
                continue
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                outcome["failed"] += 1
                continue
            html = r.json()["html"]
            good = html == expected[k] and to_html(parse_html(html)) == html
            outcome["ok" if good else "wrong"] += 1

    limits = httpx.Limits(max_connections=n_clients)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        await client.post("/v1/recognize", files={"file": ("w.png", pngs[0], "image/png")})  # warm-up
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(n_clients)))
        wall = time.perf_counter() - t0
    return {"latencies": latencies, "wall_s": wall, **outcome}


def run_mode(
    rec: TableRecognizer, pngs: list[bytes], expected: list[str], args: argparse.Namespace, batch: int
) -> dict:
    """One server with `batch` as its max batch size, loaded, then stopped."""
    config = ServeConfig(
        model_name=Path(args.config).stem,
        ui=False,
        request_timeout_s=300,
        batch=BatchConfig(max_batch_size=batch, max_wait_ms=args.max_wait_ms, max_queue=4 * args.clients),
    )
    app = create_app(rec, config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        res = asyncio.run(load(url, pngs, expected, args.requests, args.clients))
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()
    lat = res["latencies"]
    return {
        "max_batch_size": batch,
        "answered_ok": res["ok"],
        "wrong": res["wrong"],
        "failed_or_lost": args.requests - res["ok"] - res["wrong"],
        "p50_ms": round(1000 * statistics.median(lat), 1),
        "p95_ms": round(1000 * percentile(lat, 0.95), 1),
        "throughput_rps": round(args.requests / res["wall_s"], 2),
        "wall_s": round(res["wall_s"], 2),
        "mean_batch": round((args.requests + 1) / app.state.batcher.batches_run, 2),  # +1: the warm-up
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/tiny.yaml")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/results/serve_load.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rec = TableRecognizer.from_pretrained(args.config, max_new_tokens=args.max_new_tokens)
    pngs = table_pngs(args.images)
    from PIL import Image

    expected = [p.html for p in rec.predict_many([Image.open(io.BytesIO(b)) for b in pngs], batch_size=1)]
    rows = [run_mode(rec, pngs, expected, args, b) for b in (args.max_batch_size, 1)]

    print(
        f"{args.requests} requests, {args.clients} clients, {args.config}, max_new_tokens={args.max_new_tokens}"
    )
    head = f"{'max batch':>9} {'ok':>4} {'wrong':>5} {'lost':>4} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>7} {'mean batch':>10}"
    print(head)
    for r in rows:
        print(
            f"{r['max_batch_size']:>9} {r['answered_ok']:>4} {r['wrong']:>5} {r['failed_or_lost']:>4} "
            f"{r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['throughput_rps']:>7.2f} {r['mean_batch']:>10.2f}"
        )
    write_result(
        args.out,
        {
            "threads": args.threads,
            "config": args.config,
            "max_new_tokens": args.max_new_tokens,
            "requests": args.requests,
            "clients": args.clients,
            "max_wait_ms": args.max_wait_ms,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
