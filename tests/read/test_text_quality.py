"""The reader's text quality (tabvlm.evaluate): tokens, multiset token F1, words vs a table."""

from __future__ import annotations

import pytest

from tabvlm.evaluate import reader_f1, text_tokens, token_f1
from tabvlm.read import Word
from tabvlm.tables.grid import Cell, Table


def test_text_tokens_split_on_whitespace_and_cjk_per_character() -> None:
    assert text_tokens("Total  revenue 2021年") == ["Total", "revenue", "2021", "年"]
    assert text_tokens("（１２％）") == ["(12%)"]  # NFKC, as the TEDS text
    assert text_tokens(" \n") == []


def test_token_f1_counts_a_multiset_overlap() -> None:
    assert token_f1(["a", "a", "b"], ["a", "b", "b", "c"]) == pytest.approx((2 / 3, 2 / 4, 4 / 7))
    assert token_f1([], []) == (1.0, 1.0, 1.0)
    assert token_f1([], ["a"]) == (0.0, 0.0, 0.0)
    assert token_f1(["a"], []) == (0.0, 0.0, 0.0)


def test_reader_f1_compares_words_with_every_cell() -> None:
    table = Table(2, 2, [Cell("Item", 0, 0), Cell("金额", 0, 1), Cell("bolts", 1, 0), Cell("", 1, 1)])
    words = [Word(t, (0, 0, 1, 1)) for t in ["Item", "金", "额", "bolt", "extra"]]
    p, r, f1 = reader_f1(words, table)
    assert (p, r) == pytest.approx((3 / 5, 3 / 4)) and f1 == pytest.approx(2 * p * r / (p + r))
    html = "<table><tr><td>Item</td><td>金额</td></tr><tr><td>bolts</td><td></td></tr></table>"
    assert reader_f1(words, html) == (p, r, f1)
