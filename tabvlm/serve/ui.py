"""The Gradio web UI, mounted at `/` on the API's FastAPI app (never `share=True`).

Upload, paste or pick an example image; see the rendered table beside it, its HTML source, the
time taken, and download HTML / Markdown / CSV. Downloads are written to a fresh temporary folder
per request (fixed file names, never a path from the user), inside one folder per server that
keeps only the newest `KEEP_REQUEST_DIRS`. Predictions go through the same batcher as the API.

Files: an event's input is taken only from Gradio's upload folder (a path anywhere else, or an
http(s) URL, which Gradio would download, is refused before Gradio touches it), and Gradio's
file routes (`/gradio_api/file=P`, and `/gradio_api/file/P`, its older spelling) serve only that
folder and the UI's own, never a URL (see `mount_ui`). The image is decoded by the API's loader
in the API's decode slots, its pixel count checked before decoding (see `build_ui`); a layout
model's overlay is drawn on the page the reader saw (the API hands it back with the prediction),
in a worker thread. Error messages name no server path: Gradio's own errors are not shown
(`show_error=False`), and ours are stripped of absolute paths.
"""

from __future__ import annotations

import html
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import gradio as gr
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from gradio.utils import get_upload_folder
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from tabvlm.errors import TabVLMError
from tabvlm.serve.api import SERVED_TASKS
from tabvlm.serve.inputs import InputError

logger = logging.getLogger(__name__)

KEEP_REQUEST_DIRS = 64
N_SYNTH_EXAMPLES = 3
EXAMPLE_SEED = 0
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
# System font stacks only: Gradio's default theme would make every browser fetch Google Fonts.
THEME_FONTS = {
    "font": ["ui-sans-serif", "system-ui", "sans-serif"],
    "font_mono": ["ui-monospace", "monospace"],
}
CSS = """
#tabvlm-table { overflow-x: auto; }
#tabvlm-table table { border-collapse: collapse; }
#tabvlm-table td { border: 1px solid #999; padding: 2px 6px; max-width: 24em; overflow-wrap: anywhere; }
#tabvlm-table thead td { font-weight: bold; background: #f3f3f3; }
"""

# (path of the upload in Gradio's upload folder, task) -> (Prediction, the decoded and shrunk
# image it was made from); refusals are InputErrors
Predict = Callable[[str, str], Awaitable[tuple[Any, Any]]]
# Gradio serves files (and would fetch and stream http(s) URLs) at FILE_ROUTE=P and FILE_ROUTE/P
FILE_ROUTE = "/gradio_api/file"
PROXY_ROUTE = "/gradio_api/proxy="  # Gradio's relay to other Gradio apps
UPLOADS_ONLY = "Only an image uploaded through this page can be recognised; upload it again."
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~/-])/[^\s'\"<>]+")


def without_paths(message: str) -> str:
    """`message` with each absolute path in it replaced by "<path>": the UI names no server file."""
    return _ABSOLUTE_PATH.sub("<path>", message)


def inside(path: Any, folder: Path) -> bool:
    """Whether `path` is an absolute path inside `folder` (a resolved folder), links resolved."""
    return (
        isinstance(path, str) and os.path.isabs(path) and Path(os.path.realpath(path)).is_relative_to(folder)
    )


def _file_paths(data: Any) -> list[Any]:
    """The "path" of every FileData-like object (a dict with a "path") in an event's input."""
    found, stack = [], [data]
    while stack:  # no recursion: the client chooses the nesting
        item = stack.pop()
        if isinstance(item, dict):
            if "path" in item:
                found.append(item["path"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


class _UploadsOnlyBlocks(gr.Blocks):
    """Blocks whose events take files only from Gradio's upload folder. Gradio itself downloads a
    FileData whose path is an http(s) URL, and its refusal of any other path names that path as
    an absolute one (the server's working directory with it); both are refused here first, with a
    message that names nothing."""

    async def preprocess_data(self, block_fn: Any, inputs: list[Any], *args: Any, **kwargs: Any) -> Any:
        folder = Path(os.path.realpath(get_upload_folder()))
        for path in _file_paths(inputs):
            if not inside(path, folder):
                logger.warning("web UI: refused an input file outside the upload folder: %.200r", path)
                raise gr.Error(UPLOADS_ONLY)
        return await super().preprocess_data(block_fn, inputs, *args, **kwargs)


class _ServeFolders:
    """ASGI middleware: any path under Gradio's `/gradio_api/file` (`file=P`, `file/P`) answers
    only for a P inside `folders` (Gradio would fetch and stream an http(s) P from the server);
    its `/gradio_api/proxy=` never."""

    def __init__(self, app: ASGIApp, folders: list[Path]):
        self.app, self.folders = app, [Path(os.path.realpath(f)) for f in folders]

    def serves(self, path: str) -> bool:
        """Whether a request path may reach Gradio."""
        if path.startswith(PROXY_ROUTE):
            return False
        if not path.startswith(FILE_ROUTE):
            return True
        sep, target = path[len(FILE_ROUTE) : len(FILE_ROUTE) + 1], path[len(FILE_ROUTE) + 1 :]
        return sep in ("=", "/") and any(inside(target, f) for f in self.folders)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not self.serves(path):
            await JSONResponse({"detail": "File not allowed."}, status_code=403)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def example_configs() -> tuple[Any, Any]:
    """(SynthConfig, RenderConfig) of the synthetic examples: small English tables, undistorted.
    Sample i is `make_sample(EXAMPLE_SEED, i, ...)`, the same as training's and `tabvlm synth`'s."""
    from tabvlm.data.render import RenderConfig
    from tabvlm.data.synth import SynthConfig

    synth = SynthConfig(rows=(3, 7), cols=(2, 5), zh_rate=0.0)
    return synth, RenderConfig(rotate_rate=0.0, blur_rate=0.0, noise_rate=0.0)


def example_images(examples_dir: str | None, work_dir: Path) -> list[str]:
    """Images in `examples_dir`; when there are none, a few synthetic tables drawn into
    `work_dir` (English only, so no CJK font is needed). [] when neither works."""
    if examples_dir and Path(examples_dir).is_dir():
        found = sorted(p for p in Path(examples_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if found:
            return [str(p) for p in found[:8]]
    try:
        from tabvlm.data.fonts import discover_fonts
        from tabvlm.data.render import make_sample

        fonts = discover_fonts()
        synth, render = example_configs()
        out = []
        for i in range(N_SYNTH_EXAMPLES):
            _, drawn = make_sample(EXAMPLE_SEED, i, synth, render, fonts)
            path = work_dir / f"example-{i}.png"
            drawn.image.save(path)
            out.append(str(path))
        return out
    except (ImportError, TabVLMError) as e:
        logger.warning("no example images for the web UI (%s)", e)
        return []


class _Downloads:
    """Per-request folders for the download files, pruned to the newest few."""

    def __init__(self, root: Path):
        self.root = root

    def write(self, pred_html: str, markdown: str, csv: str) -> tuple[str, str, str]:
        folder = Path(tempfile.mkdtemp(prefix="req-", dir=self.root))
        paths = (folder / "table.html", folder / "table.md", folder / "table.csv")
        for path, text in zip(paths, (pred_html, markdown, csv), strict=True):
            path.write_text(text, encoding="utf-8")
        self._prune()
        return tuple(str(p) for p in paths)  # type: ignore[return-value]

    def _prune(self) -> None:
        folders = sorted((p for p in self.root.glob("req-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
        for old in folders[:-KEEP_REQUEST_DIRS]:
            shutil.rmtree(old, ignore_errors=True)


def _overlay_of(page: Any, pred: Any) -> Any:
    """The overlay picture of a layout model's prediction (None for a model that reads no words):
    its words and cells drawn on `page`, the image the reader saw (`Prediction.page_size`)."""
    if not pred.words or not pred.page_size:
        return None
    from tabvlm.overlay import draw_overlay

    if page.size != tuple(pred.page_size):  # a recognizer that read another size than it was given
        page = page.resize(tuple(pred.page_size))
    return draw_overlay(page, pred)


def build_ui(predict: Predict, model_name: str, examples: list[str], downloads: _Downloads) -> gr.Blocks:
    """The Blocks app; `predict` is awaited for each click.

    The image reaches `recognise` as the path of Gradio's upload (Gradio opens only its header,
    and converts nothing with `image_mode=None`); `predict` decodes it with the API's loader
    (`read_image_file`): pixel count checked from the header before decoding, EXIF orientation
    applied."""

    async def recognise(path: str | None, task: str) -> tuple[Any, ...]:
        if not path:
            raise gr.Error("Upload, paste or pick an image first.")
        if task not in SERVED_TASKS:  # the Radio lets None through from a client of the HTTP route
            raise gr.Error(f"Unknown output {task!r}; expected one of {', '.join(SERVED_TASKS)}.")
        t0 = time.perf_counter()
        try:
            pred, page = await predict(path, task)
        except InputError as e:  # too large, corrupt, busy (503), timeout (504)
            raise gr.Error(without_paths(e.reason)) from e
        except TabVLMError as e:  # a failed recognition
            raise gr.Error(without_paths(str(e))) from e
        seconds = time.perf_counter() - t0
        # the table the output parses into, whatever the task; the model's text where none
        shown = pred.html or f"<pre>{html.escape(pred.raw)}</pre>"
        source = pred.html if task == "html" and pred.html else pred.raw
        files = downloads.write(pred.html or pred.raw, pred.markdown, pred.csv)
        took = f"{seconds:.3f} s ({pred.tokens} tokens)"
        overlay = await run_in_threadpool(_overlay_of, page, pred)  # a page's copy: not in the event loop
        return (shown, source, took, *files, overlay)

    with _UploadsOnlyBlocks(title="tabvlm", analytics_enabled=False) as blocks:
        gr.Markdown(f"# tabvlm\nA table image in, HTML out. Model: `{model_name}`.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(
                    type="filepath",  # not "pil": Gradio would decode the whole image before our checks
                    image_mode=None,  # no conversion: Gradio returns the upload's path untouched
                    sources=["upload", "clipboard"],
                    label="Table image",
                    elem_id="tabvlm-image",
                )
                task = gr.Radio(list(SERVED_TASKS), value="html", label="Output")  # ocr: the text
                run = gr.Button("Recognise", variant="primary", elem_id="tabvlm-run")
                if examples:
                    gr.Examples(examples=examples, inputs=image, label="Examples")
            with gr.Column():
                rendered = gr.HTML(label="Table", elem_id="tabvlm-table")
                took = gr.Textbox(label="Time taken", interactive=False, elem_id="tabvlm-time")
                with gr.Row():
                    dl_html = gr.DownloadButton("HTML", value=None)
                    dl_md = gr.DownloadButton("Markdown", value=None)
                    dl_csv = gr.DownloadButton("CSV", value=None)
        source = gr.Code(language="html", label="HTML source", elem_id="tabvlm-source")
        # read, then lay out: the reader's words and the cells the model put them into
        overlay = gr.Image(label="Words and cells", type="pil", interactive=False, elem_id="tabvlm-overlay")
        run.click(
            recognise,
            inputs=[image, task],
            outputs=[rendered, source, took, dl_html, dl_md, dl_csv, overlay],
            concurrency_limit=None,  # the batcher bounds the work; let UI requests batch together
        )
    return blocks


def mount_ui(app: FastAPI, predict: Predict, config: Any) -> Path:
    """Build the UI and mount it at `/` on `app` (a `ServeConfig` gives limits and examples).
    Returns the UI's temporary folder (examples, downloads), for the caller to remove at shutdown."""
    root = Path(tempfile.mkdtemp(prefix="tabvlm-ui-"))
    examples = example_images(config.examples_dir, root)
    blocks = build_ui(predict, config.model_name, examples, _Downloads(root))
    app.add_middleware(_ServeFolders, folders=[root, Path(get_upload_folder())])
    gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        allowed_paths=[str(root)],
        max_file_size=config.max_image_bytes,
        show_error=False,  # Gradio's own messages may name server paths; the UI's gr.Error ones show
        ssr_mode=False,  # no Node server
        mcp_server=False,
        footer_links=["api"],
        theme=gr.themes.Default(**THEME_FONTS),
        css=CSS,
    )
    # `launch()` sets `has_launched`; `mount_gradio_app` does not, and until it is set Gradio's
    # path check (gradio/processing_utils.py `_check_allowed`) lets through any path a client puts
    # in a FileData payload: the file is copied into Gradio's cache and served from there. Set, the
    # check allows the inputs of an event only from Gradio's upload folder.
    blocks.has_launched = True
    logger.info("web UI at / (%d example images)", len(examples))
    return root
