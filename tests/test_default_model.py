"""The shipped default model (models/tabvlm-base): what loads it, what it costs, and that its card
tells the truth about these weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tabvlm import recognizer as recognizer_module
from tabvlm.errors import TabVLMError
from tabvlm.evaluate import evaluate, load_gt
from tabvlm.recognizer import DEFAULT_MODEL_DIR, TableRecognizer

ROOT = Path(__file__).resolve().parents[1]


def test_default_model_is_shipped_and_small() -> None:
    files = {p.name: p.stat().st_size for p in DEFAULT_MODEL_DIR.rglob("*") if p.is_file()}
    for name in ("model.safetensors", "config.json", "tokenizer.json", "README.md", "lineage.json"):
        assert name in files, f"models/tabvlm-base/{name} is missing"
    assert sum(files.values()) <= 50 * 2**20


def test_no_default_model_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(recognizer_module, "DEFAULT_MODEL_DIR", tmp_path / "absent")
    with pytest.raises(TabVLMError, match="no default model is shipped"):
        TableRecognizer.from_pretrained(None)


def test_card_scores_on_examples_are_these_weights() -> None:
    """The examples/ row of the card, recomputed: the weights and the card belong together."""
    lineage = json.loads((DEFAULT_MODEL_DIR / "lineage.json").read_text())
    card = lineage["scores"]["examples"]["all"]
    rec = TableRecognizer.from_pretrained()  # no path: the shipped default
    items = load_gt(ROOT / "examples" / "gt.jsonl")
    preds = rec.predict_many([str(it.image) for it in items], batch_size=8)
    report = evaluate(items, {it.id: p.html for it, p in zip(items, preds)})
    got = report.summaries["all"]
    # thread counts change float sums, which may flip a rare greedy choice: a small tolerance
    assert got.n == card["n"]
    assert got.teds == pytest.approx(card["teds"], abs=0.02)
    assert got.teds_struct == pytest.approx(card["teds_struct"], abs=0.02)


def test_lineage_adds_up() -> None:
    lineage = json.loads((DEFAULT_MODEL_DIR / "lineage.json").read_text())
    sessions = lineage["sessions"]
    assert sessions and all(s["core_hours"] > 0 and s["steps"] > 0 for s in sessions)
    card = (DEFAULT_MODEL_DIR / "README.md").read_text()
    total = sum(s["core_hours"] for s in sessions)
    assert f"{total:.2f} core-hours" in card
