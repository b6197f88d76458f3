"""Memory of `tabvlm serve` under concurrent maximum-size uploads: peak RSS against the bound.

For each upload kind (multipart, JSON/base64) and each count N (default 1, 40, 100), a fresh real
server (`tabvlm serve --model CONFIG --no-ui`, random weights) runs in a subprocess on a free
127.0.0.1 port. After one small warm-up request, N clients each POST the same maximum-size image
to /v1/recognize at once: a 5000x5000 RGBA PNG whose top rows are random noise, sized to just
under the 10 MiB upload limit (25 Mpx, the pixel limit; 13.7 MB of base64 in JSON). The server's
VmRSS before the burst, and its VmHWM (peak resident set since it started) and VmRSS after every
answer came back, are read from /proc/<pid>/status. The bound is VmRSS before plus
`tabvlm.serve.limits.memory_bound` of the server's limits (its default --max-bodies and decode
workers, and the --max-queue it runs with: the connections that may hold unread body bytes are
the max-bodies reading and the max-queue waiting): what the server may hold whatever N is. Every
upload is meant to be answered, so the server gets `--timeout 900 --max-queue max(64, 2N)`
(with the defaults, uploads past 64 waiting would be refused with 503), which raises the bound's
connection term with N here. Exits 1 when a peak is over its bound or an upload did not get a
200.

Run as: nice -n 10 .venv/bin/python bench/serve_memory.py [--config configs/tiny.yaml]
        [--uploads 1,40,100] [--kinds multipart,json] [--width 5000] [--height 5000]
        [--max-new-tokens 16] [--out bench/results/serve_memory.json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from common import ROOT, write_result
from PIL import Image

from tabvlm.read.ppocr import PPOCRConfig
from tabvlm.serve import ServeConfig
from tabvlm.serve.limits import memory_bound

MB = 2**20


def noise_png(width: int, height: int, max_bytes: int) -> bytes:
    """An RGBA PNG of `width` x `height` just under `max_bytes`: its top rows random noise (which
    does not compress), the rest transparent white (which compresses to almost nothing)."""
    rng = np.random.default_rng(0)
    rows = max_bytes // (width * 4)
    while True:
        pixels = np.full((height, width, 4), (255, 255, 255, 0), dtype=np.uint8)
        pixels[:rows] = rng.integers(0, 256, (rows, width, 4), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels, "RGBA").save(buf, "PNG", compress_level=1)
        if buf.tell() <= max_bytes:
            return buf.getvalue()
        rows -= max(1, (buf.tell() - max_bytes) // (width * 4) + 2)


def memory_mb(pid: int) -> dict[str, float]:
    """VmHWM (peak) and VmRSS (now) of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0]) / 1024  # kB -> MB
    return fields


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def burst(url: str, kind: str, png: bytes, json_body: bytes, n: int) -> list[int]:
    """`n` uploads at once; their status codes."""
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(900.0), limits=limits) as client:

        async def one(i: int) -> int:
            if kind == "multipart":
                r = await client.post("/v1/recognize", files={"file": (f"{i}.png", png, "image/png")})
            else:
                headers = {"content-type": "application/json"}
                r = await client.post("/v1/recognize", content=json_body, headers=headers)
            return r.status_code

        return await asyncio.gather(*(one(i) for i in range(n)))


def measure(args: argparse.Namespace, kind: str, n: int, png: bytes, json_body: bytes) -> dict:
    """One fresh server, one burst of `n` uploads of `kind`: its row."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    max_queue = max(64, 2 * n)  # every upload waits its turn: none is refused
    cmd = [
        sys.executable, "-m", "tabvlm.cli", "serve", "--model", args.config, "--no-ui", "--port", str(port),
        "--max-new-tokens", str(args.max_new_tokens), "--max-queue", str(max_queue),
        "--timeout", "900", "--body-timeout", "900",
    ]  # fmt: skip
    log = tempfile.TemporaryFile()  # a file, not a pipe: a full pipe would stall the server
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                log.seek(0)
                raise SystemExit(f"the server exited: {log.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not start within 300 s")
            time.sleep(0.5)
        small = io.BytesIO()
        Image.new("RGB", (200, 100), "white").save(small, "PNG")
        httpx.post(
            f"{url}/v1/recognize", files={"file": ("w.png", small.getvalue(), "image/png")}, timeout=300
        )
        before = memory_mb(server.pid)
        t0 = time.perf_counter()
        codes = asyncio.run(burst(url, kind, png, json_body, n))
        wall = time.perf_counter() - t0
        after = memory_mb(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    cfg = ServeConfig()  # the limits `tabvlm serve` runs with (its defaults)
    bound = memory_bound(
        cfg.max_bodies,
        cfg.decode_workers,
        cfg.max_image_bytes,
        cfg.max_pixels,
        PPOCRConfig.max_side,
        max_queue,
    )
    return {
        "kind": kind,
        "uploads": n,
        "ok": sum(c == 200 for c in codes),
        "codes": sorted(set(codes)),
        "rss_before_mb": round(before["VmRSS"], 1),
        "peak_mb": round(after["VmHWM"], 1),
        "rss_after_mb": round(after["VmRSS"], 1),
        "bound_mb": round(before["VmRSS"] + bound / MB, 1),
        "wall_s": round(wall, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/tiny.yaml")
    ap.add_argument("--uploads", default="1,40,100", help="comma-separated burst sizes")
    ap.add_argument("--kinds", default="multipart,json", help="multipart and/or json")
    ap.add_argument("--width", type=int, default=5000)
    ap.add_argument("--height", type=int, default=5000)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--out", default="bench/results/serve_memory.json")
    args = ap.parse_args()

    limit = ServeConfig().max_image_bytes
    png = noise_png(args.width, args.height, limit - 64 * 1024)
    json_body = json.dumps({"image": base64.b64encode(png).decode()}).encode()
    print(
        f"image: {args.width}x{args.height} RGBA PNG of {len(png) / 1e6:.1f} MB (limit {limit / 1e6:.1f} MB); "
        f"JSON body {len(json_body) / 1e6:.1f} MB; server {args.config}",
        flush=True,
    )
    rows = []
    print(
        f"{'kind':>9} {'N':>4} {'ok':>4} {'RSS before':>10} {'peak':>7} {'bound':>7} {'RSS after':>9} {'wall s':>7}"
    )
    for kind in args.kinds.split(","):
        for n in (int(x) for x in args.uploads.split(",")):
            row = measure(args, kind, n, png, json_body)
            rows.append(row)
            print(
                f"{kind:>9} {n:>4} {row['ok']:>4} {row['rss_before_mb']:>10.1f} {row['peak_mb']:>7.1f} "
                f"{row['bound_mb']:>7.1f} {row['rss_after_mb']:>9.1f} {row['wall_s']:>7.1f}",
                flush=True,
            )
    image = f"{args.width}x{args.height} RGBA PNG, {len(png)} bytes; JSON body {len(json_body)} bytes"
    write_result(
        args.out, {"config": args.config, "max_new_tokens": args.max_new_tokens, "image": image, "rows": rows}
    )
    failed = [r for r in rows if r["ok"] != r["uploads"] or r["peak_mb"] > r["bound_mb"]]
    for r in failed:
        print(
            f"FAILED: {r['kind']} x {r['uploads']}: {r['ok']} answered 200; peak {r['peak_mb']} MB, bound {r['bound_mb']} MB"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
