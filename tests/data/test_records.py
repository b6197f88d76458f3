"""Records: schema checks, atomic writes, the three importers, `tabvlm data convert|check`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tabvlm.commands.data import main
from tabvlm.data.importers import import_records, pubtabnet_html
from tabvlm.data.records import Record, read_records, validate_record, write_records
from tabvlm.errors import DataError
from tabvlm.tasks import user_prompt

HTML_PROMPT = user_prompt("html")
ANSWER = "<table><tbody><tr><td>1</td></tr></tbody></table>"


def png(path: Path, size: tuple[int, int] = (8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, "white").save(path)
    return path


def rec(image: str | None = "a.png", user: str = HTML_PROMPT, answer: str = ANSWER) -> dict:
    obj: dict = {
        "conversations": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    }
    if image is not None:
        obj["image"] = image
    return obj


def write_lines(path: Path, lines: list[str], final_newline: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + ("\n" if final_newline else ""), encoding="utf-8")
    return path


# --- schema ------------------------------------------------------------------------------------


def test_validate_record_schema_problems(tmp_path):
    assert validate_record(rec(), tmp_path) == []
    assert validate_record(rec(image=None, user="hi"), tmp_path) == []  # text-only records are fine
    assert validate_record([1], tmp_path) == ["expected a JSON object, found list"]
    bad = {"images": "a.png", "conversations": [{"role": "bot", "content": 3}], "meta": []}
    assert validate_record(bad, tmp_path) == [
        "unknown key 'images' (expected image, conversations, meta)",
        "'meta' must be a JSON object, found list",
        "turn 1: role 'bot', expected one of system, user, assistant",
        "turn 1: 'content' must be a string, found int",
        "no assistant turn (nothing to learn from)",
    ]
    two = rec(user="<image><image>\nx")
    assert validate_record(two, tmp_path) == [
        "turn 1: 2 copies of the <image> placeholder; the first user turn of a record with an image "
        "holds exactly one"
    ]
    assert validate_record(rec(image=None), tmp_path) == [
        "turn 1: <image> placeholder in a record without an image"
    ]


def test_write_then_read_round_trip_is_atomic(tmp_path):
    img = png(tmp_path / "imgs" / "t.png")
    out = tmp_path / "out" / "train.jsonl"
    records = [
        Record(img, rec()["conversations"], {"source": "x"}),
        Record(None, rec(None, "q")["conversations"]),
    ]
    assert write_records(out, records) == 2
    assert json.loads(out.read_text().splitlines()[0])["image"] == "../imgs/t.png"
    assert [p.name for p in out.parent.iterdir()] == ["train.jsonl"]  # no temp file left behind
    back = list(read_records(out))
    assert [(r.image, r.conversations, r.meta, r.line) for r in back] == [
        (img.resolve(), records[0].conversations, {"source": "x"}, 1),
        (None, records[1].conversations, {}, 2),
    ]
    assert back[0].answer == ANSWER and back[0].prompt == HTML_PROMPT

    def boom():
        yield records[0]
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_records(out, boom())
    assert len(list(read_records(out))) == 2  # the old file survives an interrupted write
    assert [p.name for p in out.parent.iterdir()] == ["train.jsonl"]


def test_read_records_raises_first_problem_or_collects_all(tmp_path):
    f = write_lines(
        tmp_path / "r.jsonl", [json.dumps(rec(image=None, user="q")), "{oops", json.dumps({"x": 1})]
    )
    with pytest.raises(DataError) as e:
        list(read_records(f))
    assert (e.value.file, e.value.line) == (str(f), 2)
    assert str(e.value) == f"{f}:2: bad JSON: Expecting property name enclosed in double quotes: column 2"
    errors: list[DataError] = []
    assert len(list(read_records(f, errors=errors))) == 1
    assert [str(x) for x in errors] == [
        str(e.value),
        f"{f}:3: unknown key 'x' (expected image, conversations, meta)",
        f"{f}:3: 'conversations' must be a non-empty list of turns, found None",
    ]


# --- importers ---------------------------------------------------------------------------------


def test_paddle_import(tmp_path):
    img = png(tmp_path / "src" / "imgs" / "t1.png")
    src = write_lines(
        tmp_path / "src" / "ocr_vl_sft-train.jsonl",
        [
            json.dumps(
                {
                    "image_info": [{"matched_text_index": 0, "image_url": "./imgs/t1.png"}],
                    "text_info": [
                        {"text": "Table Recognition:", "tag": "mask"},
                        {"text": "<fcel>分组<fcel>频数<nl><fcel>[41,51)<fcel>2<nl>", "tag": "no_mask"},
                    ],
                },
                ensure_ascii=False,
            ),
            json.dumps(
                {
                    "image_info": [{"matched_text_index": 0, "image_url": str(img)}],
                    "text_info": [
                        {"text": 'OCR:{"发票名称": ""}', "tag": "mask"},
                        {"text": '{"发票名称": "广东增值税专用发票"}', "tag": "no_mask"},
                    ],
                },
                ensure_ascii=False,
            ),
        ],
    )
    out = tmp_path / "out" / "train.jsonl"
    assert main(["convert", "--from", "paddle", str(src), str(out)]) == 0
    assert [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()] == [
        {
            "image": "../src/imgs/t1.png",
            "conversations": [
                {"role": "user", "content": user_prompt("otsl")},
                {"role": "assistant", "content": "<fcel>分组<fcel>频数<nl><fcel>[41,51)<fcel>2<nl>"},
            ],
            "meta": {"source": "paddle", "task": "otsl"},
        },
        {
            "image": "../src/imgs/t1.png",
            "conversations": [
                {"role": "user", "content": '<image>\nOCR:{"发票名称": ""}'},
                {"role": "assistant", "content": '{"发票名称": "广东增值税专用发票"}'},
            ],
            "meta": {"source": "paddle"},
        },
    ]


def test_paddle_import_reports_bad_lines(tmp_path):
    png(tmp_path / "a.png")
    img = [{"matched_text_index": 0, "image_url": "a.png"}]
    src = write_lines(
        tmp_path / "p.jsonl",
        [
            json.dumps({"image_info": [{"image_url": "https://x.org/a.png"}], "text_info": []}),
            json.dumps({"image_info": img, "text_info": [{"text": "OCR:", "tag": "prompt"}]}),
            json.dumps({"image_info": img, "text_info": [{"text": "OCR:", "tag": "mask"}]}),
            json.dumps({"image_info": img * 2, "text_info": []}),
        ],
    )
    errors: list[DataError] = []
    assert list(import_records(src, "paddle", errors=errors)) == []
    assert [str(e) for e in errors] == [
        f"{src}:1: image_url is a URL (https://x.org/a.png); download the images and point at the files",
        f"{src}:2: text_info[0]: expected {{'text': str, 'tag': 'mask' (prompt) or 'no_mask' (answer)}}, "
        "found {'text': 'OCR:', 'tag': 'prompt'}",
        f"{src}:3: no assistant turn (nothing to learn from)",
        f"{src}:4: 'image_info' must be a list of at most one {{'image_url': ...}}, found "
        + repr(img * 2)[:80],
    ]


def test_llava_import_json_array_with_line_numbers(tmp_path, capsys):
    png(tmp_path / "coco" / "000000033471.jpg")
    items = [
        {
            "id": "000000033471",
            "image": "000000033471.jpg",
            "conversations": [
                {"from": "human", "value": "What are the colors of the bus?\n<image>"},
                {"from": "gpt", "value": "White and red."},
                {"from": "human", "value": "Any people?"},
                {"from": "gpt", "value": "No."},
            ],
        },
        {
            "id": "text-only",
            "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}],
        },
        {"id": "bad", "conversations": [{"from": "bot", "value": "x"}]},
        {
            "id": "lost",
            "image": "nope.jpg",
            "conversations": [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}],
        },
    ]
    src = tmp_path / "llava_v1_5_mix.json"
    src.write_text(json.dumps(items, indent=1))  # LLaVA ships one pretty-printed JSON array
    lines = src.read_text().splitlines()
    starts = [i + 1 for i, s in enumerate(lines) if s.startswith(" {")]
    out = tmp_path / "out.jsonl"
    assert (
        main(["convert", "--from", "llava", str(src), str(out), "--image-root", str(tmp_path / "coco")]) == 1
    )
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{src}:{starts[2]}: conversations[0]: expected 'from' human/gpt/system and a string 'value', "
        "found {'from': 'bot', 'value': 'x'}",
        f"{src}:{starts[3]}: image not found: {(tmp_path / 'coco' / 'nope.jpg').resolve()}",
    ]
    assert [json.loads(x) for x in out.read_text().splitlines()] == [
        {
            "image": "coco/000000033471.jpg",
            "conversations": [
                {"role": "user", "content": "<image>\nWhat are the colors of the bus?"},
                {"role": "assistant", "content": "White and red."},
                {"role": "user", "content": "Any people?"},
                {"role": "assistant", "content": "No."},
            ],
            "meta": {"source": "llava", "id": "000000033471"},
        },
        {
            "conversations": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
            "meta": {"source": "llava", "id": "text-only"},
        },
    ]


PUBTABNET = {
    "filename": "PMC2838834_005_00.png",
    "split": "val",
    "imgid": 7,
    "html": {
        "structure": {
            "tokens": [
                "<thead>",
                "<tr>",
                "<td>",
                "</td>",
                "<td",
                ' colspan="2"',
                ">",
                "</td>",
                "</tr>",
                "</thead>",
                "<tbody>",
                "<tr>",
                "<td>",
                "</td>",
                "<td>",
                "</td>",
                "<td>",
                "</td>",
                "</tr>",
                "</tbody>",
            ]
        },
        "cells": [
            {"tokens": ["<b>", "G", "e", "n", "e", "</b>"], "bbox": [1, 4, 27, 13]},
            {"tokens": ["<b>", "R", "&", "D", "</b>"], "bbox": [60, 4, 90, 13]},
            {"tokens": ["a", " ", "<", " ", "b"], "bbox": [1, 17, 20, 26]},
            {"tokens": []},  # empty cells have no bbox in PubTabNet
            {"tokens": ["0", ".", "5", "<sup>", "*", "</sup>"], "bbox": [70, 17, 90, 26]},
        ],
    },
}


def test_pubtabnet_rebuilds_and_canonicalises_html(tmp_path):
    assert pubtabnet_html(PUBTABNET["html"]) == (
        '<table><thead><tr><td><b>Gene</b></td><td colspan="2"><b>R&amp;D</b></td></tr></thead>'
        "<tbody><tr><td>a &lt; b</td><td></td><td>0.5<sup>*</sup></td></tr></tbody></table>"
    )
    png(tmp_path / "pubtabnet" / "val" / "PMC2838834_005_00.png")
    train = dict(PUBTABNET, split="train")
    src = write_lines(
        tmp_path / "pubtabnet" / "PubTabNet_2.0.0.jsonl", [json.dumps(train), json.dumps(PUBTABNET)]
    )
    out = tmp_path / "val.jsonl"
    assert main(["convert", "--from", "pubtabnet", "--split", "val", str(src), str(out)]) == 0
    assert [json.loads(x) for x in out.read_text().splitlines()] == [
        {
            "image": "pubtabnet/val/PMC2838834_005_00.png",
            "conversations": [
                {"role": "user", "content": HTML_PROMPT},
                {
                    "role": "assistant",
                    "content": '<table><thead><tr><td>Gene</td><td colspan="2">R&amp;D</td></tr></thead>'
                    "<tbody><tr><td>a &lt; b</td><td></td><td>0.5*</td></tr></tbody></table>",
                },
            ],
            "meta": {"source": "pubtabnet", "split": "val", "imgid": 7},
        }
    ]


def test_pubtabnet_reports_bad_items(tmp_path):
    png(tmp_path / "val" / "PMC2838834_005_00.png")
    short = json.loads(json.dumps(PUBTABNET))
    short["html"]["cells"].pop()
    test_split = {k: v for k, v in PUBTABNET.items() if k != "html"}
    src = write_lines(tmp_path / "p.jsonl", [json.dumps(short), json.dumps(test_split)])
    errors: list[DataError] = []
    assert list(import_records(src, "pubtabnet", errors=errors)) == []
    assert [str(e) for e in errors] == [
        f"{src}:1: structure has 5 cells but 'cells' has 4",
        f"{src}:2: no 'html' annotation (the PubTabNet test split has none)",
    ]


# --- tabvlm data check -------------------------------------------------------------------------


def test_check_clean_file_passes(tmp_path, capsys):
    png(tmp_path / "a.png")
    f = write_lines(tmp_path / "gt.jsonl", [json.dumps(rec()), "", json.dumps(rec(image=None, user="q"))])
    assert main(["check", str(f)]) == 0
    assert capsys.readouterr().out == f"{f}: 2 records, 0 problems\n"


def test_check_reports_every_problem_with_file_and_line(tmp_path, capsys):
    png(tmp_path / "a.png")
    png(tmp_path / "big.png", (20, 10))
    (tmp_path / "corrupt.png").write_bytes((tmp_path / "a.png").read_bytes()[:40])
    (tmp_path / "junk.png").write_bytes(b"not an image")
    no_assistant = {"image": "a.png", "conversations": [{"role": "user", "content": HTML_PROMPT}]}
    f = write_lines(
        tmp_path / "gt.jsonl",
        [
            json.dumps(rec()),  # 1 fine
            '{"image": "a.png", "conversations": [',  # 2 bad JSON
            json.dumps(rec(image="missing.png")),  # 3
            json.dumps(rec(image="corrupt.png")),  # 4
            json.dumps(rec(image="junk.png")),  # 5
            json.dumps(no_assistant),  # 6
            json.dumps(rec(user="Convert the table.")),  # 7 no placeholder
            json.dumps(rec(image="big.png")),  # 8 200 px > --max-pixels 100
            json.dumps(rec(answer="  ")),  # 9 empty answer
            '{"image": "a.png", "conv',  # 10 cut off
        ],
        final_newline=False,
    )
    assert main(["check", str(f), "--max-pixels", "100"]) == 1
    out = capsys.readouterr().out.splitlines()
    corrupt, junk = out[2], out[3]
    assert corrupt.startswith(f"{f}:4: unreadable or corrupt image {tmp_path / 'corrupt.png'}: ")
    assert junk.startswith(f"{f}:5: unreadable or corrupt image {tmp_path / 'junk.png'}: cannot identify")
    assert out[:2] + out[4:] == [
        f"{f}:2: bad JSON: Expecting value: column 38",
        f"{f}:3: image not found: {tmp_path / 'missing.png'}",
        f"{f}:6: no assistant turn (nothing to learn from)",
        f"{f}:7: turn 1: missing the <image> placeholder; the first user turn of a record with an image "
        "holds exactly one",
        f"{f}:8: image {tmp_path / 'big.png'} is 20x10 = 200 px, over the limit of 100 px",
        f"{f}:9: turn 2: empty answer (assistant content is blank)",
        f"{f}:10: truncated file: the last line has no newline and is not valid JSON "
        "(Unterminated string starting at: column 20); was the writer interrupted?",
        f"{f}: 10 records, 9 problems",
    ]
    # --no-images skips opening them: only the schema problems remain.
    assert main(["check", str(f), "--no-images"]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == f"{f}: 10 records, 5 problems"


def test_check_reports_a_deeply_nested_line_and_goes_on(tmp_path, capsys):
    png(tmp_path / "a.png")
    deep = '{"image": "a.png", "conversations": ' + "[" * 100_000 + "]" * 100_000 + "}"
    f = write_lines(tmp_path / "gt.jsonl", [json.dumps(rec()), deep, json.dumps(rec())])
    assert main(["check", str(f)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{f}:2: JSON nested too deeply to parse",
        f"{f}: 3 records, 1 problems",
    ]
    array = tmp_path / "llava.json"
    array.write_text("[\n" + json.dumps(rec()) + ",\n" + "[" * 100_000 + "]" * 100_000 + "\n]\n")
    assert main(["check", str(array)]) == 1
    assert f"{array}:3: JSON nested too deeply to parse" in capsys.readouterr().out


def test_check_unreadable_file(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    assert main(["check", str(missing)]) == 1
    assert capsys.readouterr().out.startswith(f"{missing}: cannot read: No such file or directory")
