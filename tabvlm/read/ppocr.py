"""The default reader: PP-OCRv6 small (text detector + CTC recogniser) from the `rapidocr` wheel.

    from tabvlm.read.ppocr import PPOCRConfig, PPOCRReader
    words = PPOCRReader(PPOCRConfig(threads=1)).read(pil_image, name="table.png")

The ONNX files ship inside the rapidocr 3.10 wheel (`rapidocr/models/`); they are passed to
rapidocr by path, so it never looks for, or downloads, anything. rapidocr's own pipeline does the
work (resize, detect, crop, recognise, word boxes: `return_word_box`); this module only turns its
output into `Word`s: a run of non-space Latin characters or one CJK character, each with its box
in the original image's pixels, in reading order (`sort_words`).

Word boxes: rapidocr gives one box per Latin word and one per character on lines holding CJK; its
boxes are regrouped here by the line's text, so a mixed line ("2021年") still gives the word
"2021" and the character "年". When its boxes do not match the line's text, the line's box is
split in proportion to the characters. rapidocr's per-word scores are not used: it pairs each
word with the confidence of the character at the same position, so every word gets its line's
recognition score.

One engine per config and process, built on first use and reused (onnxruntime sessions load in
~0.3 s). Calls into one engine are serialised by a lock, as rapidocr's engine keeps per-call state.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tabvlm.errors import ConfigError, DataError, TabVLMError
from tabvlm.read.words import Box, Word, is_cjk_char, sort_words

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)

DET_MODEL = "PP-OCRv6_det_small.onnx"
REC_MODEL = "PP-OCRv6_rec_small.onnx"
CLS_MODEL = "ch_ppocr_mobile_v2.0_cls_mobile.onnx"  # the angle classifier (PP-OCRv4 era, in the wheel)


@dataclass(frozen=True)
class PPOCRConfig:
    """The reader's options. Defaults chosen by `bench/reader_speed.py` on ../shared/realtables
    (docs/BENCHMARKS.md, "Reader"; a shared 2-core host, so times are noisy, F1 is not)."""

    threads: int = 1  # onnxruntime intra-op threads per session: 2 was 1.6x slower (shared host)
    use_cls: bool = False  # angle classifier: token F1 0.955 with it, 0.965 without, no faster
    # the detector's input: the shorter side is scaled up to this (rapidocr's 736 blows a 60 px
    # high table up 12x); 480: median 0.80 s a table and F1 0.973, against 1.59 s and 0.965 at 736
    det_limit_side_len: int = 480
    rec_batch_num: int = 6  # text lines per recogniser call (16: slower, F1 0.963)
    min_score: float = 0.5  # lines read with a lower confidence are dropped (rapidocr's default)
    max_side: int = 2000  # longer images are downscaled first, a warning says so (rapidocr's default)

    def __post_init__(self) -> None:
        for name in ("threads", "det_limit_side_len", "rec_batch_num", "max_side"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"ppocr reader: {name} must be an int >= 1, found {value!r}")
        if not 0.0 <= self.min_score <= 1.0:
            raise ConfigError(f"ppocr reader: min_score must be in [0, 1], found {self.min_score!r}")


def model_dir() -> Path:
    """The folder of the ONNX files inside the installed rapidocr wheel."""
    spec = importlib.util.find_spec("rapidocr")
    if spec is None or spec.origin is None:
        raise TabVLMError("the ppocr reader needs rapidocr: pip install 'rapidocr>=3.10,<3.11' onnxruntime")
    return Path(spec.origin).parent / "models"


def rapidocr_version() -> str:
    from rapidocr._version import __version__

    return __version__


def _rapidocr_params(cfg: PPOCRConfig) -> dict[str, Any]:
    """rapidocr's dotted parameters for `cfg`: explicit model paths (so no download), threads,
    sizes and thresholds."""
    folder = model_dir()
    paths = {"Det": folder / DET_MODEL, "Rec": folder / REC_MODEL, "Cls": folder / CLS_MODEL}
    for section, path in paths.items():
        if not path.is_file() and (section != "Cls" or cfg.use_cls):
            raise TabVLMError(
                f"{path}: the PP-OCRv6 model file is missing from the rapidocr wheel; "
                "reinstall it: pip install --force-reinstall 'rapidocr>=3.10,<3.11'"
            )
    return {
        "Global.log_level": "error",  # rapidocr logs through its own stderr handler
        "Global.use_cls": cfg.use_cls,
        "Global.return_word_box": True,
        "Global.text_score": cfg.min_score,
        "Global.max_side_len": cfg.max_side,
        "Det.model_path": str(paths["Det"]),
        "Det.limit_side_len": cfg.det_limit_side_len,
        "Rec.model_path": str(paths["Rec"]),
        "Rec.rec_batch_num": cfg.rec_batch_num,
        "Cls.model_path": str(paths["Cls"]),
        "EngineConfig.onnxruntime.intra_op_num_threads": cfg.threads,
        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
    }


_ENGINES: dict[PPOCRConfig, tuple[Any, threading.Lock]] = {}
_ENGINES_LOCK = threading.Lock()


def _engine(cfg: PPOCRConfig) -> tuple[Any, threading.Lock]:
    """The process's rapidocr engine for `cfg` (built on first use) and the lock its calls take."""
    with _ENGINES_LOCK:
        if cfg not in _ENGINES:
            from rapidocr import RapidOCR

            params = _rapidocr_params(cfg)
            try:
                engine = RapidOCR(params=params)
            except Exception as e:  # noqa: BLE001 (rapidocr raises many kinds; say which engine)
                raise TabVLMError(f"cannot start the PP-OCRv6 reader ({type(e).__name__}: {e})") from e
            _ENGINES[cfg] = (engine, threading.Lock())
        return _ENGINES[cfg]


class PPOCRReader:
    """Reads an RGB PIL image into `Word`s with PP-OCRv6 small (see the module docstring)."""

    name = "ppocr"

    def __init__(self, config: PPOCRConfig | None = None):
        self.config = config or PPOCRConfig()

    @property
    def cache_id(self) -> str:
        """What the words depend on: reader, rapidocr version and every option but threads."""
        opts = {k: v for k, v in dataclasses.asdict(self.config).items() if k != "threads"}
        return f"{self.name}/rapidocr-{rapidocr_version()}/" + ",".join(
            f"{k}={v}" for k, v in sorted(opts.items())
        )

    def read(self, image: Image.Image, name: str | None = None) -> list[Word]:
        """The words of `image` in reading order ([] when it holds no text). A failure inside
        rapidocr is a DataError naming the image (`name`)."""
        engine, lock = _engine(self.config)
        w, h = image.size
        if max(w, h) > self.config.max_side:
            scale = self.config.max_side / max(w, h)
            logger.warning(
                "%s: %dx%d is larger than the reader's max_side %d; read downscaled to about %dx%d "
                "(boxes are in the original pixels; raise max_side for small text on a large image)",
                name or "image",
                w,
                h,
                self.config.max_side,
                round(w * scale),
                round(h * scale),
            )
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])  # rapidocr takes BGR
        try:
            with lock:
                out = engine(bgr)
            words = _words(out, w, h)
        except Exception as e:  # noqa: BLE001 (any failure in the reader belongs to this image)
            raise DataError(f"the reader (PP-OCRv6) failed: {type(e).__name__}: {e}", name) from e
        return sort_words(words)


def _rect(points: Any, w: int, h: int) -> Box:
    """The axis-aligned box of a quadrilateral (4 x 2 points), clipped to the image."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return (float(max(0.0, x0)), float(max(0.0, y0)), float(min(w, x1)), float(min(h, y1)))


def _words(out: Any, w: int, h: int) -> list[Word]:
    """rapidocr's output (lines with text, score, quad and word items) -> Words, not yet sorted."""
    txts = getattr(out, "txts", None)
    if not txts:
        return []
    items = out.word_results if len(out.word_results) == len(txts) else [None] * len(txts)
    words: list[Word] = []
    for text, score, quad, line_items in zip(txts, out.scores, out.boxes, items, strict=True):
        words += _line_words(str(text), float(score), _rect(quad, w, h), line_items, w, h)
    return words


def _char_boxes(text: str, line_box: Box, items: Sequence[Any] | None, w: int, h: int) -> list[Box]:
    """A box for each non-space character of `text`: from rapidocr's word items when their texts
    spell the line (each item's box shared evenly by its characters), else a share of the line's
    box in proportion to the character's position."""
    chars = [c for c in text if not c.isspace()]
    if items and "".join(str(t) for t, _, _ in items) == "".join(chars):
        boxes: list[Box] = []
        for t, _, pts in items:
            x0, y0, x1, y1 = _rect(pts, w, h)
            n = len(t)
            boxes += [(x0 + (x1 - x0) * k / n, y0, x0 + (x1 - x0) * (k + 1) / n, y1) for k in range(n)]
        return boxes
    x0, y0, x1, y1 = line_box
    step = (x1 - x0) / max(1, len(text))
    return [(x0 + step * i, y0, x0 + step * (i + 1), y1) for i, c in enumerate(text) if not c.isspace()]


def _line_words(
    text: str, score: float, line_box: Box, items: Sequence[Any] | None, w: int, h: int
) -> list[Word]:
    """One line's words (the reader's unit, `split_text`'s rule), each box the union of its
    characters' boxes."""
    boxes = _char_boxes(text, line_box, items, w, h)
    groups: list[tuple[str, list[Box]]] = []
    joinable = False  # may the next character extend the last group?
    k = 0  # index into boxes (the non-space characters)
    for ch in text:
        if ch.isspace():
            joinable = False
            continue
        cjk = is_cjk_char(ch)
        if joinable and not cjk:
            t, bs = groups[-1]
            groups[-1] = (t + ch, [*bs, boxes[k]])
        else:
            groups.append((ch, [boxes[k]]))
        joinable = not cjk
        k += 1
    return [Word(t, _union(bs), score) for t, bs in groups]


def _union(boxes: Sequence[Box]) -> Box:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )
