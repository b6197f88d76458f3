"""A screenshot of the web UI serving the shipped model on a real table (docs/webui.png).

Run as: .venv/bin/python scripts/webui_screenshot.py [IMAGE] [--out docs/webui.png]

Starts `tabvlm serve`'s app (the default model: PP-OCRv6 + the layout model) on a free loopback
port, opens it in Debian's Chromium (Playwright, only 127.0.0.1 reachable), uploads IMAGE
(default: a real table of ../shared/realtables), presses Recognise and saves the whole page:
the table, its HTML, and the words-and-cells overlay.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

from tabvlm.data.browser import CHROMIUM, CHROMIUM_ARGS
from tabvlm.recognizer import TableRecognizer
from tabvlm.serve import ServeConfig, create_app

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "image", nargs="?", default=str(ROOT.parent / "shared" / "realtables" / "icdar13-eu-005-t2r1.png")
    )
    ap.add_argument("--out", default=str(ROOT / "docs" / "webui.png"))
    args = ap.parse_args()
    app = create_app(TableRecognizer.from_pretrained(), ServeConfig(model_name="tabvlm-layout"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.route(
            "**/*",
            lambda r: (
                r.continue_()
                if r.request.url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:"))
                else r.abort()
            ),
        )
        page.goto(url, wait_until="load", timeout=60_000)
        page.locator("#tabvlm-image input[type=file]").set_input_files(args.image, timeout=30_000)
        page.locator("#tabvlm-image img").first.wait_for(timeout=30_000)
        page.locator("#tabvlm-run").click()
        page.locator("#tabvlm-table table").wait_for(timeout=120_000)
        page.locator("#tabvlm-overlay img").first.wait_for(timeout=60_000)
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    server.should_exit = True
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
