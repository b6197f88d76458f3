"""Read, then lay out: the reader's words and the layout model's grid, as one recognizer.

    from tabvlm import TableRecognizer
    rec = TableRecognizer.from_pretrained()          # the shipped layout model + PP-OCRv6
    pred = rec.predict("table.png")
    print(pred.html, pred.reader_seconds, pred.model_seconds)

Each image is loaded once (`tabvlm.image.load_image`), read once (`tabvlm.read.read_words`, cached
by the image's bytes), then batches of pages go through `tabvlm.layout_decode.decode_grid`.
A page with no words is an empty table, not an error. The Prediction keeps the words and the cell
each went to, for overlays (`tabvlm.overlay`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from tabvlm.data.layout import encode_inputs
from tabvlm.errors import ConfigError
from tabvlm.image import ImageSource, load_image
from tabvlm.layout_decode import decode_grid
from tabvlm.model.layout import LayoutModel
from tabvlm.model.vlm import TOKENIZER_NAME
from tabvlm.progress import progress as progress_bar
from tabvlm.read import read_words
from tabvlm.recognizer import Prediction, read_predictions
from tabvlm.tables.grid import Table
from tabvlm.tables.html import to_html
from tabvlm.tables.otsl import to_otsl
from tabvlm.tables.views import to_csv, to_markdown
from tabvlm.tasks import TABLE_TASKS, get_task
from tabvlm.tokenizer import TableTokenizer, load_tokenizer


class LayoutRecognizer:
    """A reader + a layout model, with TableRecognizer's predict / predict_many."""

    def __init__(
        self,
        model: LayoutModel,
        reader: str = "ppocr",
        reader_options: dict[str, Any] | None = None,
        tokenizer: TableTokenizer | None = None,
        max_tags: int | None = None,
    ):
        self.model = model.eval()
        self.max_tags = max_tags  # the OTSL tag budget (None: none); a table past it keeps its first rows
        self.tokenizer = tokenizer or load_tokenizer()
        self.reader = reader
        self.reader_options = dict(reader_options or {})

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", **kwargs: Any) -> LayoutRecognizer:
        """A layout model folder (LayoutModel.save_pretrained + the tokenizer.json its words were
        embedded with; the shipped tokenizer when the folder has none)."""
        tok = Path(path) / TOKENIZER_NAME
        tokenizer = load_tokenizer(tok) if tok.is_file() else None
        return cls(LayoutModel.from_pretrained(path).to(device), tokenizer=tokenizer, **kwargs)

    @property
    def image_size(self) -> int:
        return self.model.config.image_size

    def predict(self, image: ImageSource, task: str = "html", **kwargs: Any) -> Prediction:
        return self.predict_many([image], batch_size=1, task=task, **kwargs)[0]

    def predict_many(
        self,
        images: Sequence[ImageSource],
        batch_size: int = 8,
        progress: bool = False,
        task: str = "html",
        words: Sequence[Sequence] | None = None,
        max_new_tokens: int | None = None,
    ) -> list[Prediction]:
        """Recognise `images`; `words` (one list of `tabvlm.read.Word` per image) replaces the
        reader, e.g. the renderer's truth for an ablation; `max_new_tokens` caps the tags (the
        chat route's max_tokens). Task "ocr" is the reader's text."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1; found {batch_size}")
        get_task(task)
        if task == "ocr":
            return read_predictions(images, **self.reader_options)
        if task not in TABLE_TASKS:
            raise ConfigError(f"task {task!r}: the layout model writes tables ({', '.join(TABLE_TASKS)})")
        caps = [x for x in (max_new_tokens, self.max_tags) if x]
        budget = min(caps) if caps else None
        pages, page_words, read_s, load_s = [], [], [], []
        bar = progress_bar(total=len(images), desc="read", unit="img", disable=not progress)
        for k, im in enumerate(images):
            t0 = time.perf_counter()
            pil = load_image(im)
            t1 = time.perf_counter()
            ws = list(words[k]) if words is not None else read_words(pil, self.reader, **self.reader_options)
            read_s.append(time.perf_counter() - t1)
            load_s.append(t1 - t0)
            pages.append(pil)
            page_words.append(ws)
            bar.update(1)
        bar.close()
        out: list[Prediction] = []
        for start in range(0, len(pages), batch_size):
            chunk = range(start, min(len(pages), start + batch_size))
            t0 = time.perf_counter()
            inputs = [
                encode_inputs(pages[i], page_words[i], self.model.config, self.tokenizer) for i in chunk
            ]
            with torch.inference_mode():
                results = decode_grid(self.model, inputs, [page_words[i] for i in chunk], budget)
            batch_seconds = time.perf_counter() - t0
            for i, r in zip(chunk, results):
                pred = _prediction(r.table, len(r.tags), r.finish_reason, task)
                out.append(
                    replace(
                        pred,
                        model_seconds=batch_seconds / len(chunk),
                        batch_seconds=batch_seconds,
                        batch_size=len(chunk),
                        image_seconds=load_s[i],
                        reader_seconds=read_s[i],
                        words=page_words[i],
                        word_cells=r.word_cells,
                        page_size=pages[i].size,
                    )
                )
        return out


def _prediction(table: Table, n_tags: int, finish: str, task: str) -> Prediction:
    html = to_html(table)
    raw = {"html": html, "otsl": to_otsl(table), "markdown": to_markdown(table)}.get(task, html)
    return Prediction(html, raw, table, to_markdown(table), to_csv(table), 0.0, n_tags, finish)
