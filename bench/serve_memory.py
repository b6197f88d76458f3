"""Memory of `tabvlm serve` under concurrent uploads of large images: peak RSS and RSS after.

The real server (`tabvlm serve --model CONFIG --no-ui`, random weights) runs in a subprocess on a
free 127.0.0.1 port. After one small warm-up request, `--uploads` clients each POST the same
large-but-legal image at once (default: a 4900x5000 RGBA PNG, 24.5 Mpx under the 25 Mpx limit,
~100 KB on the wire, ~100 MB decoded). The server's VmHWM (peak resident set since it started)
and VmRSS are read from /proc/<pid>/status before the burst and after every answer came back.
A server that kept each decoded image until the model took it would hold N of them at once; one
that shrinks each image to the model's input right after decoding, a few decodes at a time, holds
a few. Exits 1 when the peak is over `--max-peak-mb` or any upload did not get a 200.

Run as: .venv/bin/python bench/serve_memory.py [--config configs/tiny.yaml] [--uploads 40]
        [--width 4900] [--height 5000] [--max-new-tokens 16] [--max-peak-mb 1500]
        [--out bench/results/serve_memory.json]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import ROOT, write_result
from PIL import Image, ImageDraw


def big_png(width: int, height: int) -> bytes:
    """A page-sized RGBA table drawing (ruled grid, dark blocks for text) that compresses well."""
    rng = random.Random(0)
    img = Image.new("RGBA", (width, height), (255, 255, 255, 0))
    draw = ImageDraw.Draw(img)
    for y in range(0, height, 250):
        draw.line([(0, y), (width, y)], fill=(0, 0, 0, 255), width=3)
    for x in range(0, width, 700):
        draw.line([(x, 0), (x, height)], fill=(0, 0, 0, 255), width=3)
    for _ in range(400):
        x, y = rng.randrange(width - 400), rng.randrange(height - 60)
        draw.rectangle([x, y, x + rng.randint(80, 400), y + 40], fill=(30, 30, 30, 255))
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


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


async def burst(url: str, png: bytes, n: int) -> list[int]:
    """`n` uploads at once; their status codes."""
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(900.0), limits=limits) as client:

        async def one(i: int) -> int:
            r = await client.post("/v1/recognize", files={"file": (f"{i}.png", png, "image/png")})
            return r.status_code

        return await asyncio.gather(*(one(i) for i in range(n)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/tiny.yaml")
    ap.add_argument("--uploads", type=int, default=40)
    ap.add_argument("--width", type=int, default=4900)
    ap.add_argument("--height", type=int, default=5000)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--max-peak-mb", type=float, default=1500.0)
    ap.add_argument("--out", default="bench/results/serve_memory.json")
    args = ap.parse_args()

    png = big_png(args.width, args.height)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable, "-m", "tabvlm.cli", "serve", "--model", args.config, "--no-ui", "--port", str(port),
        "--max-new-tokens", str(args.max_new_tokens), "--max-queue", str(2 * args.uploads),
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
        codes = asyncio.run(burst(url, png, args.uploads))
        wall = time.perf_counter() - t0
        after = memory_mb(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()

    ok = sum(c == 200 for c in codes)
    decoded_mb = args.width * args.height * 4 / 2**20
    row = {
        "uploads": args.uploads,
        "image": f"{args.width}x{args.height} RGBA PNG, {len(png) / 1024:.0f} KB, {decoded_mb:.0f} MB decoded",
        "ok": ok,
        "rss_before_mb": round(before["VmRSS"], 1),
        "peak_mb": round(after["VmHWM"], 1),
        "rss_after_mb": round(after["VmRSS"], 1),
        "wall_s": round(wall, 1),
    }
    print(f"{args.uploads} concurrent uploads of a {row['image']}; server {args.config}")
    print(f"{'ok':>4} {'RSS before MB':>14} {'peak MB':>8} {'RSS after MB':>13} {'wall s':>7}")
    print(
        f"{ok:>4} {row['rss_before_mb']:>14.1f} {row['peak_mb']:>8.1f} {row['rss_after_mb']:>13.1f} "
        f"{row['wall_s']:>7.1f}"
    )
    write_result(
        args.out,
        {
            "config": args.config,
            "max_new_tokens": args.max_new_tokens,
            "max_peak_mb": args.max_peak_mb,
            **row,
        },
    )
    if ok != args.uploads or row["peak_mb"] > args.max_peak_mb:
        print(
            f"FAILED: {ok}/{args.uploads} answered 200; peak {row['peak_mb']} MB (bound {args.max_peak_mb} MB)"
        )
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
