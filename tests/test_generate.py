"""Batched KV-cache decoding: batch == one by one, cached == uncached, stopping, budgets, grammar."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tabvlm.errors import TabVLMError
from tabvlm.generate import generate, image_prompt
from tabvlm.model import KVCache, TabVLM, VLMOutput, load_model_config
from tabvlm.tables.html import find_table, parse_html
from tabvlm.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def tiny() -> TabVLM:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TabVLM(load_model_config("configs/tiny.yaml"))
    return model.eval()


def images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 128, 128, generator=g) * 2 - 1  # (n, 3, S, S) in [-1, 1]


def prompts(tok, model: TabVLM) -> list[str]:
    # different tasks give prompts of different lengths, so the batch is really left padded
    return [image_prompt(tok, model.image_tokens, task) for task in ("html", "ocr", "formula")]


@pytest.mark.parametrize("constrain", [False, True])
def test_batch_equals_one_by_one(tok, tiny: TabVLM, constrain: bool) -> None:
    ps, px = prompts(tok, tiny), images(3)
    batched = generate(tiny, tok, px, ps, max_new_tokens=12, constrain=constrain)
    for i in range(3):
        single = generate(tiny, tok, px[i : i + 1], ps[i : i + 1], max_new_tokens=12, constrain=constrain)
        assert single.tokens[0] == batched.tokens[i]
        assert single.finish_reasons[0] == batched.finish_reasons[i]


@pytest.mark.parametrize("constrain", [False, True])
def test_cached_equals_uncached(tok, tiny: TabVLM, constrain: bool) -> None:
    ps, px = prompts(tok, tiny), images(3, seed=1)
    cached = generate(tiny, tok, px, ps, max_new_tokens=10, constrain=constrain)
    uncached = generate(tiny, tok, px, ps, max_new_tokens=10, constrain=constrain, use_cache=False)
    assert cached.tokens == uncached.tokens
    assert all(len(t) == 10 for t in cached.tokens) or constrain


class ScriptedLM(nn.Module):
    """A stand-in model whose next token is `script[last token]` (default: last + 1)."""

    def __init__(self, script: dict[int, int], vocab: int = 12288):
        super().__init__()
        self.script, self.vocab = script, vocab
        self.dummy = nn.Parameter(torch.zeros(1))
        self.calls: list[int] = []  # batch size of each forward

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        return KVCache(1, batch, 1, max_len, 1)

    def forward(
        self, input_ids, pixel_values=None, attention_mask=None, cache=None, logits_to_keep=0
    ) -> VLMOutput:
        self.calls.append(input_ids.shape[0])
        last = input_ids[:, -1].tolist()
        logits = torch.zeros(input_ids.shape[0], input_ids.shape[1], self.vocab)
        for b, t in enumerate(last):
            logits[b, -1, self.script.get(t, (t + 1) % self.vocab)] = 1.0
        if cache is not None:
            cache.advance(input_ids.shape[1])
        return VLMOutput(logits)


def test_stops_at_eos_and_finished_rows_leave_the_batch(tok) -> None:
    model = ScriptedLM({100: tok.eos_id})
    seen: dict[int, list[int]] = {0: [], 1: []}
    out = generate(
        model, tok, None, [[5, 97], [7, 8, 10]], max_new_tokens=6, constrain=False,
        on_token=lambda i, t, delta: seen[i].append(t),
    )  # fmt: skip
    assert out.tokens == [[98, 99, 100], [11, 12, 13, 14, 15, 16]]
    assert out.finish_reasons == ["eos", "length"]
    assert seen[0] == [98, 99, 100, tok.eos_id] and seen[1] == out.tokens[1]
    assert model.calls == [2, 2, 2, 2, 1, 1]  # prefill, then the EOS row is dropped after step 4


def test_stops_after_table_and_streams_text(tok) -> None:
    ids = tok.encode("<table><tbody><tr><td>价格</td></tr></tbody></table>")
    script = dict(zip([1] + ids[:-1], ids))  # each token of this table is distinct
    model = ScriptedLM(script)
    text: list[str] = []
    out = generate(model, tok, None, [[1]], max_new_tokens=50, on_token=lambda i, t, d: text.append(d))
    assert out.tokens == [ids] and out.finish_reasons == ["table"]
    assert "".join(text) == out.texts[0] == tok.decode(ids)
    # with stopping disabled the grammar forces EOS after </table> until max_new_tokens
    longer = generate(model, tok, None, [[1]], max_new_tokens=len(ids) + 3, ignore_eos=True)
    assert longer.tokens[0][: len(ids)] == ids and longer.finish_reasons == ["length"]
    assert set(longer.tokens[0][len(ids) :]) <= {tok.eos_id, tok.endoftext_id}


def test_max_new_tokens_respected(tok, tiny: TabVLM) -> None:
    ps, px = prompts(tok, tiny), images(3, seed=2)
    free = generate(tiny, tok, px, ps, max_new_tokens=5, constrain=False)
    assert [len(t) for t in free.tokens] == [5, 5, 5] and free.finish_reasons == ["length"] * 3
    tight = generate(tiny, tok, px, ps, max_new_tokens=9)  # just above the 7-8 tokens a table needs
    for ids, text in zip(tight.tokens, tight.texts):
        assert len(ids) <= 9 and text.endswith("</table>")


def test_sampling_is_reproducible(tok, tiny: TabVLM) -> None:
    ps, px = prompts(tok, tiny), images(3, seed=3)

    def run(seed: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(seed)
        return generate(tiny, tok, px, ps, max_new_tokens=8, temperature=1.0, top_p=0.9, generator=g).tokens

    assert run(7) == run(7)


def test_random_tiny_model_writes_tables_for_50_images(tok, tiny: TabVLM) -> None:
    px = images(50, seed=4)
    out = generate(tiny, tok, px, [image_prompt(tok, tiny.image_tokens)] * 50, max_new_tokens=40)
    for text in out.texts:
        assert text.startswith("<table>") and text.endswith("</table>")
        assert find_table(text) is not None
        table = parse_html(text)
        assert table.n_rows >= 1 and table.n_cols >= 1


def test_generation_never_passes_the_models_positions(tok) -> None:
    """max_new_tokens above what the model holds is capped (the RoPE table has 64 rows here)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        short = TabVLM(load_model_config("configs/tiny.yaml", ["lm.max_position_embeddings=64"])).eval()
    prompt = image_prompt(tok, short.image_tokens)
    T = len(tok.encode(prompt))
    for constrain in (False, True):
        out = generate(short, tok, images(2), [prompt] * 2, max_new_tokens=2048, constrain=constrain)
        assert [T + len(t) for t in out.tokens] == [64, 64] or constrain
        assert all(T + len(t) <= 64 for t in out.tokens) and out.finish_reasons == ["length"] * 2
        assert all(text.endswith("</table>") for text in out.texts) or not constrain
    with pytest.raises(TabVLMError, match="the prompt has 70 tokens and the model holds 64 positions"):
        generate(short, tok, None, [[7] * 70], max_new_tokens=5, constrain=False)


def test_a_table_closed_early_by_the_budget_is_cut_short(tok, tiny: TabVLM) -> None:
    ids = tok.encode("<table><tbody><tr><td>价格</td></tr></tbody></table>")
    model = ScriptedLM(dict(zip([1] + ids[:-1], ids)))
    assert generate(model, tok, None, [[1]], max_new_tokens=len(ids)).finish_reasons == ["table"]
    cut = generate(model, tok, None, [[1]], max_new_tokens=len(ids) - 1)
    assert cut.finish_reasons == ["length"] and cut.texts[0].endswith("</table>")
    # a random tiny model wants more than 9 tokens: the grammar closed its tables for it
    tight = generate(tiny, tok, images(3, seed=2), prompts(tok, tiny), max_new_tokens=9)
    assert tight.finish_reasons == ["length"] * 3
