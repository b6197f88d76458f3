"""The Python API: `TableRecognizer` turns table images into HTML, a grid, Markdown and CSV.

    from tabvlm import TableRecognizer
    rec = TableRecognizer.from_pretrained()   # the shipped default: models/tabvlm-layout
    pred = rec.predict("table.png")
    print(pred.html, pred.markdown)

Images are loaded and preprocessed as in training and serving (`tabvlm.image`: EXIF applied, fit
to the model's square input), batched, and decoded by `tabvlm.generate.generate` (constrained to
well-formed tables by default).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from tabvlm.errors import ConfigError, TableError, TabVLMError
from tabvlm.generate import generate, image_prompt
from tabvlm.image import ImageSource, load_image, preprocess_image
from tabvlm.model import TabVLM, load_model_config
from tabvlm.model.decode import prepare_cpu_decode
from tabvlm.model.layout import is_layout_model
from tabvlm.model.vlm import TOKENIZER_NAME
from tabvlm.progress import progress as progress_bar
from tabvlm.tables.grid import Table
from tabvlm.tables.html import to_html
from tabvlm.tables.views import to_csv, to_markdown
from tabvlm.tasks import get_task
from tabvlm.tokenizer import TableTokenizer, load_tokenizer

logger = logging.getLogger(__name__)

# The shipped default model lives in the repository beside the package (editable install).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "tabvlm-layout"


@dataclass
class Prediction:
    """One image's result. `html` is canonical (`to_html(parse_html(raw))`); `raw` is what the
    model wrote. When `raw` holds no table (unconstrained decoding), `table` is None and `html`,
    `markdown`, `csv` are empty strings."""

    html: str
    raw: str
    table: Table | None
    markdown: str
    csv: str
    # Decoding is batched, so its time is the batch's: `batch_seconds` is the wall time of the
    # generate call this image was decoded in (`batch_size` images), and `model_seconds` is an
    # equal share of it (batch_seconds / batch_size), not a measurement of this table alone.
    model_seconds: float
    tokens: int  # generated tokens (this table's own count)
    # "stop": the model finished; "length": cut short by max_new_tokens or the model's positions
    # (a constrained table is then closed early, so it is well-formed but may lack rows)
    finish_reason: str = "stop"
    # task "ocr": the image's text from the reader (tabvlm.read), one line per visual line (also
    # in `raw`); no model runs: `model_seconds` is 0 and `reader_seconds` holds the reader's time
    text: str = ""
    image_seconds: float = 0.0  # this image's own load + preprocessing, measured for it alone
    batch_seconds: float = 0.0
    batch_size: int = 1
    # The reader's time for this image (task ocr; the layout model, which reads, then lays out),
    # and the layout model's words and the cell each went to (an index into table.cells, -1:
    # outside the table).
    reader_seconds: float = 0.0
    words: list = field(default_factory=list)
    word_cells: list[int] = field(default_factory=list)
    page_size: tuple[int, int] | None = None  # (w, h) of the image the words' boxes are in

    @property
    def truncated(self) -> bool:
        """True when the output was cut short (`finish_reason == "length"`)."""
        return self.finish_reason == "length"


DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "int8": torch.float32,  # loaded as float32, then the LM's linears become weight-only int8 (CPU)
}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """'float32' | 'fp32' | 'bfloat16' | 'bf16' | 'int8' (or a torch float dtype of those) -> the
    torch dtype the model is loaded in ('int8' loads float32, then quantises the LM's linears)."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ConfigError(f"dtype: expected one of {sorted(DTYPES)}, found {dtype!r}")


class TableRecognizer:
    """A model + tokenizer pair, ready to read tables."""

    def __init__(
        self,
        model: TabVLM,
        tokenizer: TableTokenizer,
        max_new_tokens: int = 2048,
        constrain: bool = True,
        reader_options: dict[str, object] | None = None,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.constrain = constrain
        self.reader_options = dict(reader_options or {})  # tabvlm.read.read_words' options, e.g. threads

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        dtype: str | torch.dtype = "float32",
        **kwargs: object,
    ) -> TableRecognizer:
        """Load a model folder (written by `TabVLM.save_pretrained`), or build random weights
        (drawn from `seed`) from a config YAML (tests, benchmarks). `path=None`: the shipped
        default model `models/tabvlm-layout/` (a layout model folder gives a `LayoutRecognizer`: the
        reader + the layout model, with the same predict / predict_many). `dtype` "float32" (default), "bfloat16" or "int8":
        bf16 halves the weights' memory; whether it is faster depends on the CPU's bf16 kernels
        (on the AVX512-BF16 EPYC of docs/BENCHMARKS.md it was not). On CPU the loaded model goes
        through the decode transform (`tabvlm.model.decode.prepare_cpu_decode`: fused q/k/v and
        gate/up matmuls; its memory cost is stated there), and "int8" (CPU only) makes that
        transform store the LM's linears and head as weight-only int8 with bf16 activations:
        close to, not equal to, float32's outputs (docs/BENCHMARKS.md measures both). The model
        is then inference-only. Other keyword arguments go to the constructor."""
        torch_dtype = parse_dtype(dtype)
        on_cpu = torch.device(device).type == "cpu"
        if dtype == "int8" and not on_cpu:
            raise ConfigError(f"dtype int8: weight-only int8 decoding runs on CPU only, not {device}")
        if path is None:
            if not DEFAULT_MODEL_DIR.is_dir():
                raise TabVLMError(
                    f"no default model is shipped yet ({DEFAULT_MODEL_DIR}/ does not exist); pass a "
                    "model folder written by TabVLM.save_pretrained, e.g. "
                    "TableRecognizer.from_pretrained('runs/sft/final') or `tabvlm predict --model DIR`"
                )
            path = DEFAULT_MODEL_DIR
        path = Path(path)
        if is_layout_model(path):  # read, then lay out: the reader + the layout model
            from tabvlm.layout_recognizer import LayoutRecognizer

            if torch_dtype != torch.float32 or dtype == "int8":
                raise ConfigError(
                    f"{path}: the layout model runs in float32 (dtype {dtype!r} is for the OCR-free model)"
                )
            if kwargs.get("constrain") is False:
                raise ConfigError(
                    f"{path}: the layout model assembles a valid grid; it has no grammar to turn off "
                    "(no --no-constrain)"
                )
            return LayoutRecognizer.from_pretrained(  # type: ignore[return-value]
                path,
                device=str(device),
                reader_options=kwargs.get("reader_options"),  # type: ignore[arg-type]
                max_tags=kwargs.get("max_new_tokens"),  # type: ignore[arg-type]
            )
        if path.is_dir():
            tok_file = path / TOKENIZER_NAME
            if not tok_file.is_file():  # the shipped tokenizer may not be the one it was trained with
                raise ConfigError(
                    f"{path}: no {TOKENIZER_NAME} in the model folder; a model folder holds the "
                    "tokenizer it was trained with (TabVLM.save_pretrained(dir, tokenizer))"
                )
            model = TabVLM.from_pretrained(path, device=device, dtype=torch_dtype)
            tokenizer = load_tokenizer(tok_file)
        elif path.suffix in (".yaml", ".yml"):
            config = load_model_config(path)
            with torch.random.fork_rng(devices=[]):  # random weights from `seed`, global RNG untouched
                torch.manual_seed(seed)
                model = TabVLM(config)
            model = model.to(device=device, dtype=torch_dtype).eval()
            tokenizer = load_tokenizer()
        else:
            raise ConfigError(f"{path}: expected a model folder or a config .yaml")
        if on_cpu:
            model = prepare_cpu_decode(model, int8=dtype == "int8")
        if tokenizer.vocab_size > model.config.lm.vocab_size:
            raise ConfigError(
                f"{path}: tokenizer has {tokenizer.vocab_size} ids but the model only "
                f"{model.config.lm.vocab_size} (lm.vocab_size)"
            )
        return cls(model, tokenizer, **kwargs)  # type: ignore[arg-type]

    @property
    def image_size(self) -> int:
        """The model's square input size; every image is fit to it (`tabvlm.image.fit_image`)."""
        return self.model.config.vision.image_size

    def predict(self, image: ImageSource, task: str = "html", **generate_kwargs: object) -> Prediction:
        """Read one image (a path, bytes or a PIL image)."""
        return self.predict_many([image], batch_size=1, task=task, **generate_kwargs)[0]

    def predict_many(
        self,
        images: Sequence[ImageSource],
        batch_size: int = 8,
        progress: bool = False,
        task: str = "html",
        **generate_kwargs: object,
    ) -> list[Prediction]:
        """Read many images, `batch_size` at a time (left-padded batches through `generate`).

        `generate_kwargs` go to `tabvlm.generate.generate` (max_new_tokens, constrain,
        temperature, top_p, generator, on_token...); `max_new_tokens` is capped at what the
        model's positions hold after the prompt, and an output cut short says so
        (`Prediction.truncated`). An unreadable image raises DataError naming it before any
        decoding; callers that want to skip such images load them first with
        `tabvlm.image.load_image`. Task "ocr" runs the reader, not the model
        (`read_predictions`, with the constructor's `reader_options`)."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1; found {batch_size}")
        spec = get_task(task)
        if task == "ocr":  # the reader's text, not the model's
            return read_predictions(images, **self.reader_options)
        pil, image_seconds = [], []  # each image's own load (+ preprocessing, below) time
        for im in images:
            t0 = time.perf_counter()
            pil.append(load_image(im))
            image_seconds.append(time.perf_counter() - t0)
        kwargs: dict[str, object] = {"max_new_tokens": self.max_new_tokens, "constrain": self.constrain}
        kwargs.update(generate_kwargs)
        if not spec.grammar:
            kwargs["constrain"] = False  # the grammar is the HTML table grammar
        prompt = image_prompt(self.tokenizer, self.model.image_tokens, task)
        size = self.image_size
        bar = progress_bar(total=len(pil), desc="predict", unit="img", disable=not progress)
        out: list[Prediction] = []
        for start in range(0, len(pil), batch_size):
            chunk = pil[start : start + batch_size]
            pixels = []
            for i, im in enumerate(chunk, start):
                t0 = time.perf_counter()
                pixels.append(preprocess_image(im, size))  # (3, S, S)
                image_seconds[i] += time.perf_counter() - t0
            t0 = time.perf_counter()
            gen = generate(self.model, self.tokenizer, torch.stack(pixels), [prompt] * len(chunk), **kwargs)  # type: ignore[arg-type]
            batch_seconds = time.perf_counter() - t0
            out += [
                replace(
                    _prediction(text, len(ids), batch_seconds / len(chunk), task, reason),
                    image_seconds=image_seconds[i],
                    batch_seconds=batch_seconds,
                    batch_size=len(chunk),
                )
                for i, (text, ids, reason) in enumerate(
                    zip(gen.texts, gen.tokens, gen.finish_reasons, strict=True), start
                )
            ]
            bar.update(len(chunk))
        bar.close()
        return out


def _prediction(raw: str, tokens: int, model_seconds: float, task: str, reason: str) -> Prediction:
    """One raw output read into a table by its task's reader (tabvlm.tasks) and shown in every
    view; tasks whose answer is not a table keep only `raw`. `reason` is generate's finish reason
    ("length" stays "length"; "eos" and "table" become "stop")."""
    finish = "length" if reason == "length" else "stop"
    table = None
    read = get_task(task).read
    if read is not None:
        try:
            table = read(raw)
        except TableError as e:
            logger.warning("output holds no table (%s)", e)
    if table is not None and not table.cells:  # e.g. OTSL of nothing but blank lines
        table = None
    if table is None:
        return Prediction("", raw, None, "", "", model_seconds, tokens, finish)
    return Prediction(
        to_html(table), raw, table, to_markdown(table), to_csv(table), model_seconds, tokens, finish
    )


def read_predictions(images: Sequence[ImageSource], **reader_options: object) -> list[Prediction]:
    """Task "ocr" without a model: each image's text in reading order from the reader
    (`tabvlm.read.read_text`; `reader_options` such as threads go to it), in `text` and `raw`;
    the reader's time (the image's loading included) in `reader_seconds`."""
    from tabvlm.read import read_text

    out = []
    for image in images:
        t0 = time.perf_counter()
        text = read_text(image, **reader_options)  # type: ignore[arg-type]
        seconds = time.perf_counter() - t0
        out.append(Prediction("", text, None, "", "", 0.0, 0, "stop", text=text, reader_seconds=seconds))
    return out
