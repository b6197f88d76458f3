"""Words, reading order and text, and how rapidocr's word boxes become words (no model run)."""

from __future__ import annotations

import random

from tabvlm.read import Word, join_words, line_groups, sort_words, split_text, text_lines
from tabvlm.read.ppocr import _line_words


def w(text: str, x0: float, y0: float, x1: float, y1: float) -> Word:
    return Word(text, (x0, y0, x1, y1))


def test_sort_words_reads_rows_top_down_and_each_left_to_right() -> None:
    rows = [
        [w("Name", 10, 10, 60, 30), w("Qty", 100, 12, 140, 31), w("价", 200, 9, 220, 29)],
        [w("bolts", 10, 50, 60, 70), w("12", 100, 51, 120, 70), w("3.5", 200, 49, 230, 71)],
    ]
    flat = [x for row in rows for x in row]
    shuffled = flat[:]
    random.Random(0).shuffle(shuffled)
    assert sort_words(shuffled) == flat
    assert [[flat[i] for i in g] for g in line_groups(flat)] == rows
    assert text_lines(shuffled) == ["Name Qty价", "bolts 12 3.5"]


def test_split_text_and_join_words_agree() -> None:
    assert split_text("Q3 收入  12.5\tUSD") == ["Q3", "收", "入", "12.5", "USD"]
    assert split_text("") == [] and split_text("   ") == []
    assert join_words(split_text("2021年 增长率 12%")) == "2021年增长率12%"
    assert join_words(split_text("Lewis, Smith and Young")) == "Lewis, Smith and Young"


def test_a_mixed_line_split_per_character_by_rapidocr_is_regrouped_into_words() -> None:
    # rapidocr gives one box per character on a line with CJK in it, and drops the space
    items = [
        (ch, 0.9, [[10 * i, 0], [10 * i + 10, 0], [10 * i + 10, 20], [10 * i, 20]])
        for i, ch in enumerate("2021年Q3")
    ]
    words = _line_words("2021年 Q3", 0.97, (0, 0, 70, 20), items, 100, 50)
    assert [x.text for x in words] == ["2021", "年", "Q3"]
    assert [x.box for x in words] == [(0, 0, 40, 20), (40, 0, 50, 20), (50, 0, 70, 20)]
    assert {x.score for x in words} == {0.97}  # the line's score: rapidocr's per-word scores are misaligned


def test_latin_word_items_keep_their_boxes_and_unmatched_items_fall_back_to_the_line_box() -> None:
    items = [
        ("Lewis,", 1.0, [[0, 0], [60, 0], [60, 20], [0, 20]]),
        ("Smith", 1.0, [[70, 0], [120, 0], [120, 20], [70, 20]]),
    ]
    words = _line_words("Lewis, Smith", 0.9, (0, 0, 120, 20), items, 200, 50)
    assert [(x.text, x.box) for x in words] == [("Lewis,", (0, 0, 60, 20)), ("Smith", (70, 0, 120, 20))]
    # items that do not spell the line: the line's box shared in proportion to the characters
    words = _line_words(
        "ab cd", 0.9, (0, 0, 50, 10), [("zz", 1.0, [[0, 0], [1, 0], [1, 1], [0, 1]])], 200, 50
    )
    assert [(x.text, x.box) for x in words] == [("ab", (0, 0, 20, 10)), ("cd", (30, 0, 50, 10))]
    assert [x.text for x in _line_words("表 b", 0.9, (0, 0, 30, 10), None, 200, 50)] == ["表", "b"]


def test_word_dict_round_trip() -> None:
    word = Word("表", (1.04, 2.0, 3.0, 4.0), 0.912345)
    assert Word.from_dict(word.to_dict()) == Word("表", (1.0, 2.0, 3.0, 4.0), 0.9123)


def test_a_word_has_no_instance_dict_and_survives_pickling() -> None:
    import pickle

    word = Word("12.5", (1.0, 2.0, 30.0, 14.0), 0.98)
    assert not hasattr(word, "__dict__")  # slots: a page of words holds only their fields
    assert pickle.loads(pickle.dumps(word)) == word  # as a DataLoader worker hands words back
