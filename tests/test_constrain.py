"""The table grammar: hand-written valid / invalid prefixes, budgets, and the shipped tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tabvlm.constrain import DEAD, DONE, FINAL, TableGrammar
from tabvlm.tables.grid import Cell, Table
from tabvlm.tables.html import to_html

EOS = 0
# A toy vocabulary: EOS, every single byte (so any text can be spelled), a few structure tokens.
STRUCT = ["<table>", "</table>", "<thead>", "</thead>", "<tbody>", "</tbody>", "<tr>", "</tr>", "<td>", "</td>",
          "<td", ' colspan="', ' rowspan="', '">', "&amp;", "ab c", "<tr><td>"]  # fmt: skip
VOCAB = [b"<|im_end|>"] + [bytes([i]) for i in range(256)] + [s.encode() for s in STRUCT]


@pytest.fixture(scope="module")
def grammar() -> TableGrammar:
    return TableGrammar(VOCAB, special_ids=[EOS], eos_ids=[EOS], vocab_size=len(VOCAB) + 3)


def byte_ids(text: str) -> list[int]:
    return [1 + b for b in text.encode()]


def state_of(grammar: TableGrammar, text: str) -> int:
    return grammar.walk(byte_ids(text))


VALID_TABLES = [
    "<table><tbody><tr><td></td></tr></tbody></table>",
    "<table><thead><tr><td>a</td></tr></thead><tbody></tbody></table>",
    '<table><tbody><tr><td colspan="2" rowspan="12">x &amp; y</td></tr><tr></tr></tbody></table>',
    '<table><tbody><tr><td rowspan="99">价格 &lt;5&gt;</td><td>1</td></tr></tbody></table>',
]

INVALID_PREFIXES = [
    " <table>",  # nothing before the table
    "<table><tr>",  # a section first
    "<table><tbody></tbody>",  # a table without thead has a row
    "<table><tbody><tr><td>a<b",  # no tags inside cells
    "<table><tbody><tr><td>a>",
    "<table><tbody><tr><td>a&nbsp;",  # only &amp; &lt; &gt;
    "<table><tbody><tr><td> a",  # canonical text: no leading space
    "<table><tbody><tr><td>a  b",  # ... no double space
    "<table><tbody><tr><td>a </td>",  # ... no trailing space
    "<table><tbody><tr><td>a\nb",  # ... no newline
    '<table><tbody><tr><td colspan="1"',  # spans of 1 are not written
    '<table><tbody><tr><td colspan="0',
    '<table><tbody><tr><td colspan="02',
    '<table><tbody><tr><td colspan="100',  # at most 99
    '<table><tbody><tr><td rowspan="2" colspan="2"',  # colspan comes first
    "<table><tbody><tr><th>",
    "<table><tbody><tr><td></td></tr></tbody></table> ",  # nothing after the table
]


@pytest.mark.parametrize("text", VALID_TABLES)
def test_valid_tables_are_accepted(grammar: TableGrammar, text: str) -> None:
    assert grammar.walk(byte_ids(text)) == FINAL
    assert grammar.walk(byte_ids(text) + [EOS]) == DONE


@pytest.mark.parametrize("text", INVALID_PREFIXES)
def test_invalid_prefixes_are_dead(grammar: TableGrammar, text: str) -> None:
    assert state_of(grammar, text) == DEAD


def test_canonical_html_of_grids_is_accepted(grammar: TableGrammar) -> None:
    table = Table(3, 3, [Cell("A & B", 0, 0, colspan=2), Cell("<x>", 0, 2), Cell("long one", 1, 0, rowspan=2),
                         Cell("", 1, 1), Cell("z", 1, 2), Cell("1", 2, 1, colspan=2)], header_rows=1)  # fmt: skip
    assert grammar.accepts(byte_ids(to_html(table)))


def test_multi_byte_tokens_and_partial_utf8(grammar: TableGrammar) -> None:
    tid = {b: i for i, b in enumerate(VOCAB)}
    ids = [tid[b"<table>"], tid[b"<tbody>"], tid[b"<tr><td>"], tid[b"ab c"]]
    s = grammar.walk(ids)
    assert s not in (DEAD, FINAL)
    # half of a UTF-8 character is fine inside a cell: only whole characters are closed later
    half = "价".encode()[:2]
    s2 = grammar.walk(ids + [1 + half[0], 1 + half[1]])
    assert s2 != DEAD
    assert grammar.next_state[s, tid[b"<td>"]] == DEAD  # a cell cannot open inside a cell


def test_masks_follow_the_automaton(grammar: TableGrammar) -> None:
    states = torch.tensor([grammar.start, state_of(grammar, "<table><tbody><tr><td>a")])
    mask = grammar.mask(states, remaining=1000)  # (2, V)
    assert mask.shape == (2, len(VOCAB) + 3)
    allowed0 = {VOCAB[i] for i in mask[0].nonzero().flatten().tolist()}
    assert allowed0 == {b"<", b"<table>"}
    assert mask[1, 1 + ord("b")] and mask[1, VOCAB.index(b"</td>")] and not mask[1, 1 + ord(">")]
    assert mask[1, 1 + ord("<")]  # may still spell </td> byte by byte
    assert not mask[:, EOS].any() and not mask[:, len(VOCAB) :].any()  # EOS and padding ids are off
    final = torch.tensor([FINAL])
    assert grammar.mask(final, 1000)[0].nonzero().flatten().tolist() == [EOS]


def test_budget_forces_the_table_closed(grammar: TableGrammar) -> None:
    """Random decoding under the budget always closes the table in time."""
    rng = np.random.default_rng(0)
    for budget in (12, 20, 40):
        state, ids = grammar.start, []
        for step in range(budget):
            if state == FINAL:
                break
            allowed = grammar.mask(torch.tensor([state]), budget - step)[0].nonzero().flatten().numpy()
            assert len(allowed) > 0
            t = int(rng.choice(allowed))
            ids.append(t)
            state = int(grammar.next_state[state, t])
        assert state == FINAL, (budget, b"".join(VOCAB[i] for i in ids))
    # <table> <tbody> <tr><td> </td> </tr> </tbody> </table>
    assert grammar.min_tokens_to_close(grammar.start) == 7


def test_shipped_tokenizer_grammar() -> None:
    from tabvlm.generate import table_grammar
    from tabvlm.tokenizer import load_tokenizer

    tok = load_tokenizer()
    g = table_grammar(tok, tok.vocab_size)
    html = '<table><thead><tr><td colspan="2">名称 &amp; 价格</td></tr></thead><tbody><tr><td>a</td><td>1.5</td></tr></tbody></table>'
    assert g.accepts(tok.encode(html))
    assert g.walk(tok.encode(html) + [tok.eos_id]) == DONE
    assert g.walk(tok.encode("<table><tbody><tr><td><b>")) == DEAD
    for special in tok.special_ids - {tok.eos_id, tok.endoftext_id}:
        assert not g.allowed[:, special].any()
