"""The Gradio web UI, mounted at `/` on the API's FastAPI app (never `share=True`).

Upload, paste or pick an example image; see the rendered table beside it, its HTML source, the
time taken, and download HTML / Markdown / CSV. Downloads are written to a fresh temporary folder
per request (fixed file names, never a path from the user), inside one folder per server that
keeps only the newest `KEEP_REQUEST_DIRS`. Predictions go through the same batcher as the API.

Files: an event's input is taken only from Gradio's upload folder, and `/gradio_api/file=` serves
only Gradio's own folders and the UI's (see `mount_ui`); the image is decoded by the API's loader,
its pixel count checked before decoding (see `build_ui`).
"""

from __future__ import annotations

import asyncio
import html
import logging
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import gradio as gr
from fastapi import FastAPI
from PIL import Image

from tabvlm.errors import TabVLMError
from tabvlm.serve.batcher import QueueFullError
from tabvlm.serve.inputs import InputError, read_image_file
from tabvlm.tasks import TABLE_TASKS

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

Predict = Callable[[Image.Image, str], Awaitable[Any]]  # (image, task) -> Prediction


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


def build_ui(
    predict: Predict,
    model_name: str,
    examples: list[str],
    downloads: _Downloads,
    max_bytes: int,
    max_pixels: int,
) -> gr.Blocks:
    """The Blocks app; `predict` is awaited for each click.

    The image reaches `recognise` as the path of Gradio's upload (Gradio opens only its header,
    and converts nothing with `image_mode=None`); it is decoded by the API's loader
    (`read_image_file`): pixel count checked from the header before decoding, EXIF orientation
    applied."""

    async def recognise(path: str | None, task: str) -> tuple[Any, ...]:
        if not path:
            raise gr.Error("Upload, paste or pick an image first.")
        if task not in TABLE_TASKS:  # the Radio lets None through from a client of the HTTP route
            raise gr.Error(f"Unknown output {task!r}; expected one of {', '.join(TABLE_TASKS)}.")
        t0 = time.perf_counter()
        try:
            image = await asyncio.to_thread(read_image_file, path, max_bytes, max_pixels)
            pred = await predict(image, task)
        except InputError as e:
            raise gr.Error(e.reason) from e
        except QueueFullError as e:
            raise gr.Error(f"The server is busy ({e}); try again in a moment.") from e
        except TimeoutError as e:
            raise gr.Error("No answer within the request timeout.") from e
        seconds = time.perf_counter() - t0
        # the table the output parses into, whatever the task; the model's text where none
        shown = pred.html or f"<pre>{html.escape(pred.raw)}</pre>"
        source = pred.html if task == "html" and pred.html else pred.raw
        files = downloads.write(pred.html or pred.raw, pred.markdown, pred.csv)
        took = f"{seconds:.3f} s ({pred.tokens} tokens)"
        return (shown, source, took, *files)

    with gr.Blocks(title="tabvlm", analytics_enabled=False) as blocks:
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
                task = gr.Radio(list(TABLE_TASKS), value="html", label="Output")
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
        run.click(
            recognise,
            inputs=[image, task],
            outputs=[rendered, source, took, dl_html, dl_md, dl_csv],
            concurrency_limit=None,  # the batcher bounds the work; let UI requests batch together
        )
    return blocks


def mount_ui(app: FastAPI, predict: Predict, config: Any) -> Path:
    """Build the UI and mount it at `/` on `app` (a `ServeConfig` gives limits and examples).
    Returns the UI's temporary folder (examples, downloads), for the caller to remove at shutdown."""
    root = Path(tempfile.mkdtemp(prefix="tabvlm-ui-"))
    examples = example_images(config.examples_dir, root)
    blocks = build_ui(
        predict, config.model_name, examples, _Downloads(root), config.max_image_bytes, config.max_pixels
    )
    gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        allowed_paths=[str(root)],
        max_file_size=config.max_image_bytes,
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
