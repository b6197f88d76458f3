"""The web UI in a real browser: Debian's Chromium (driven by Playwright) against a real uvicorn
server on 127.0.0.1. Uploads an example image, presses Recognise, finds the rendered <table>.

Needs `apt-get install chromium` (/usr/bin/chromium); without it this test FAILS on purpose (CI
installs it). The browser may only reach 127.0.0.1: every other request is aborted. The screenshot
goes to the test's tmp folder; set TABVLM_UPDATE_SCREENSHOT=1 to also refresh docs/webui.png.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from tabvlm.data.browser import CHROMIUM, CHROMIUM_ARGS  # one launch recipe for every browser use
from tabvlm.recognizer import TableRecognizer
from tabvlm.serve import ServeConfig, create_app
from tabvlm.serve.ui import example_images

DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "webui.png"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(URL, an example image): a uvicorn server in a thread, on a free loopback port (the
    socket is bound before the server starts: no race for the port)."""
    examples = tmp_path_factory.mktemp("examples")
    image = example_images(None, examples)[0]  # a synthetic table, so the upload is a real table picture
    recognizer = TableRecognizer.from_pretrained("configs/tiny.yaml", max_new_tokens=40)
    app = create_app(recognizer, ServeConfig(model_name="tiny", examples_dir=str(examples)))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", image
    server.should_exit = True
    thread.join(30)
    sock.close()


def test_upload_shows_a_rendered_table(server: tuple[str, str], tmp_path: Path) -> None:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install it with `apt-get install -y chromium`")
    from playwright.sync_api import sync_playwright

    server_url, example = server
    blocked: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})

            def only_loopback(route) -> None:  # noqa: ANN001 (a Playwright Route)
                if route.request.url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:")):
                    route.continue_()
                else:
                    blocked.append(route.request.url)
                    route.abort()

            page.route("**/*", only_loopback)
            page.goto(server_url + "/", wait_until="load", timeout=60_000)
            page.locator("#tabvlm-image input[type=file]").set_input_files(example, timeout=30_000)
            page.locator("#tabvlm-image img").first.wait_for(timeout=30_000)  # the upload shows
            page.locator("#tabvlm-run").click()
            table = page.locator("#tabvlm-table table")
            table.wait_for(timeout=60_000)
            assert table.locator("td").count() >= 1
            assert (
                page.locator("#tabvlm-time textarea, #tabvlm-time input")
                .first.input_value()
                .endswith("tokens)")
            )
            shot = tmp_path / "webui.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("TABVLM_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, DOCS_SCREENSHOT)
    assert not [u for u in blocked if "127.0.0.1" in u]  # only outside requests were stopped
