"""The task registry (tabvlm.tasks): each table task's writer and reader agree, prompts map back
to tasks, and every consumer (recognizer, eval) reads a task's output through its reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from PIL import Image
from strategies import tables

import tabvlm.recognizer as recognizer_module
from tabvlm.errors import ConfigError, DataError
from tabvlm.evaluate import evaluate, load_gt
from tabvlm.generate import Generation
from tabvlm.recognizer import TableRecognizer
from tabvlm.tables import Table, parse_html, to_csv, to_html, to_markdown
from tabvlm.tasks import (
    TABLE_TASKS,
    TASKS,
    WRITABLE_TASKS,
    get_task,
    table_task_named_in,
    task_of_prompt,
    user_prompt,
)

TABLE = parse_html(
    "<table><thead><tr><td>Item</td><td>Q1</td></tr></thead>"
    "<tbody><tr><td>a &amp; b</td><td>1,5</td></tr><tr><td>表</td><td></td></tr></tbody></table>"
)


def test_table_tasks_are_html_otsl_markdown() -> None:
    assert TABLE_TASKS == WRITABLE_TASKS == ("html", "otsl", "markdown")
    assert [t for t in TASKS.values() if t.grammar] == [TASKS["html"]]  # the grammar is HTML's


@settings(max_examples=60, deadline=None)
@given(tables())
@pytest.mark.parametrize("name", ["html", "otsl", "markdown"])
def test_reader_reads_back_what_the_writer_wrote(name: str, table: Table) -> None:
    task = get_task(name)
    assert task.write is not None and task.read is not None
    written = task.write(table)
    # Each reader recovers everything its format carries: the format written again is the same.
    assert task.write(task.read(written)) == written


def test_prompts_map_back_to_tasks() -> None:
    for name in TASKS:
        assert user_prompt(name).startswith("<image>\n") and task_of_prompt(user_prompt(name)) == name
    assert task_of_prompt("<image>\nWhat is this?") is None
    with pytest.raises(ConfigError, match="unknown task 'latex'; known: html, otsl"):
        user_prompt("latex")


@pytest.mark.parametrize(
    ("text", "task"),
    [
        ("Convert to HTML.", "html"),
        ("Give me OTSL", "otsl"),
        ("as a markdown table", "markdown"),
        ("", "html"),
    ],
)
def test_chat_text_names_a_table_task(text: str, task: str) -> None:
    assert table_task_named_in(text) == task


@pytest.mark.parametrize("name", TABLE_TASKS)
def test_predict_parses_every_table_task(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """predict(task=t) gives the table, in every view, for each table task: the model's text is
    replaced by the task's written answer so that the test does not depend on a trained model."""
    rec = TableRecognizer.from_pretrained("configs/tiny.yaml", max_new_tokens=8)
    real_generate = recognizer_module.generate
    prompts: list[str] = []

    def answering(model, tokenizer, pixel_values, prompt_list, **kwargs):  # type: ignore[no-untyped-def]
        gen = real_generate(model, tokenizer, pixel_values, prompt_list, **kwargs)  # the real path runs
        prompts.extend(prompt_list)
        answer = TASKS[name].write(TABLE)  # type: ignore[misc]
        return Generation(gen.tokens, [answer] * len(prompt_list), gen.finish_reasons)

    monkeypatch.setattr(recognizer_module, "generate", answering)
    pred = rec.predict(Image.new("RGB", (64, 32), "white"), task=name)
    assert user_prompt(name).split("\n", 1)[1] in prompts[0]
    expected = TASKS[name].read(TASKS[name].write(TABLE))  # type: ignore[misc]
    assert pred.table is not None and to_html(pred.table) == to_html(expected)
    assert (pred.html, pred.markdown, pred.csv) == (
        to_html(expected),
        to_markdown(expected),
        to_csv(expected),
    )
    assert "表" in pred.html and "a &amp; b" in pred.html


def test_eval_reads_a_records_answer_by_its_task(tmp_path: Path) -> None:
    def record(key: str, task: str, answer: str) -> str:
        conv = [{"role": "user", "content": user_prompt(task)}, {"role": "assistant", "content": answer}]
        return json.dumps({"image": f"{key}.png", "conversations": conv, "meta": {"id": key}})

    gt = tmp_path / "gt.jsonl"
    lines = [record(t, t, TASKS[t].write(TABLE)) for t in TABLE_TASKS]  # type: ignore[misc]
    gt.write_text("\n".join([*lines, record("bad", "markdown", "no table here")]) + "\n")
    errors: list[DataError] = []
    items = load_gt(gt, errors)
    assert [i.id for i in items] == list(TABLE_TASKS)
    assert len(errors) == 1 and "gt.jsonl:4" in str(errors[0]) and "does not parse" in str(errors[0])
    preds = {i.id: i.html for i in items}
    assert preds["otsl"].startswith("<table>") and "<fcel>" not in preds["otsl"]
    report = evaluate(items, preds)
    assert report.summaries["all"].teds == pytest.approx(1.0)
