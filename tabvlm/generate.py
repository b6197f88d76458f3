"""Batched KV-cache decoding: prefill once, then one token a step for every unfinished sequence.

The model only computes logits; this loop owns the cache, the padding, the stopping rules, the
sampling and the table grammar (`tabvlm.constrain`). Prompts are LEFT padded, so every row's next
token sits in the last column and one (B, 1) forward serves the whole batch; the attention mask
(B, past+T) marks the padding and the model derives positions from it. A sequence stops at
`<|im_end|>` / `<|endoftext|>`, right after `</table>` (by default), or at `max_new_tokens`;
finished rows are dropped from the batch (and the cache), so they cost nothing afterwards.
`max_new_tokens` is capped so that prompt + new tokens fit the model's positions (its RoPE table
and KV cache hold no more); an output cut short, by that budget or by the grammar closing the
table early to stay within it, finishes with reason "length".
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from tabvlm.constrain import TableGrammar
from tabvlm.errors import TabVLMError
from tabvlm.tasks import user_prompt

logger = logging.getLogger(__name__)

TABLE_END = b"</table>"

# on_token(sequence index, token id, decoded text delta); the delta is "" for a stop token or
# while a multi-byte character is still incomplete
TokenCallback = Callable[[int, int, str], None]


@dataclass
class Generation:
    """What `generate` returns, one entry per prompt, in prompt order."""

    tokens: list[list[int]]  # generated ids, the stop token (EOS) excluded
    texts: list[str]  # decoded `tokens`
    # "eos" | "table" (stopped after </table>) | "length": cut short by max_new_tokens, or the
    # budget made the grammar close the table before the model would have
    finish_reasons: list[str]


def image_prompt(tokenizer: Any, n_image_tokens: int, task: str = "html") -> str:
    """The chat text a model is asked with: the user turn (image + task prompt), then the
    assistant header, with the image already expanded to `n_image_tokens` pad tokens."""
    chat = tokenizer.chat_prompt([{"role": "user", "content": user_prompt(task)}], add_generation_prompt=True)
    return tokenizer.expand_image(chat, n_image_tokens)


@lru_cache(maxsize=4)
def table_grammar(tokenizer: Any, vocab_size: int) -> TableGrammar:
    """The grammar tables for a tokenizer and logits width, built once (about 0.5 s)."""
    return TableGrammar.from_tokenizer(tokenizer, vocab_size)


@lru_cache(maxsize=4)
def _vocab_bytes(tokenizer: Any) -> tuple[bytes, ...]:
    return tuple(tokenizer.vocab_bytes())


def _left_pad(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids padded on the left and the (B, T) mask (1 = real token)."""
    T = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), T), dtype=torch.long)
    for i, x in enumerate(ids):
        if len(x):
            input_ids[i, T - len(x) :] = torch.as_tensor(list(x), dtype=torch.long)
            mask[i, T - len(x) :] = 1
    return input_ids, mask


def sample(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Next ids (b,) from logits (b, V): argmax when temperature <= 0, else temperature + top-p
    (nucleus) sampling drawn from `generator`."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # (b, V)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the top token always stays)
        drop = sorted_p.cumsum(dim=-1) - sorted_p > top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@torch.inference_mode()
def generate(
    model: Any,
    tokenizer: Any,
    pixel_values: torch.Tensor | None,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 1024,
    temperature: float = 0.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    constrain: bool | TableGrammar = True,
    stop_after_table: bool = True,
    ignore_eos: bool = False,
    on_token: TokenCallback | None = None,
    use_cache: bool = True,
) -> Generation:
    """Continue every prompt; greedy by default.

    Args:
        model: a `TabVLM` (anything with `forward(input_ids, pixel_values, attention_mask, cache,
            logits_to_keep)` returning `.logits`, and `new_cache(batch, max_len)` (a `KVCache`); a
            `max_positions` attribute, when it has one, caps prompt + new tokens).
        pixel_values: (B, 3, S, S) images in the order their `<|image_pad|>` runs appear, or None.
        prompts: chat texts (see `image_prompt`) or token id lists, one per sequence.
        constrain: True: the table grammar (only well-formed canonical tables, closed in time);
            a `TableGrammar` to use that one; False: free text.
        stop_after_table: end a sequence as soon as it ends with `</table>` (saves the EOS step).
        ignore_eos: never stop before `max_new_tokens` (benchmarks); the grammar then repeats EOS.
        on_token: streaming callback, called as each sequence gets a token.
        use_cache: False recomputes the whole sequence every step (a slow reference for tests).
    """
    if max_new_tokens < 1:
        raise TabVLMError(f"max_new_tokens must be >= 1; found {max_new_tokens}")
    if not prompts:
        return Generation([], [], [])
    ids = [tokenizer.encode(p) if isinstance(p, str) else list(p) for p in prompts]
    if any(not x for x in ids):
        raise TabVLMError("every prompt needs at least one token")
    device = next(model.parameters()).device
    input_ids, mask = _left_pad(ids, tokenizer.pad_id)  # (B, T) each
    input_ids, mask = input_ids.to(device), mask.to(device)
    if pixel_values is not None:
        pixel_values = pixel_values.to(device)
    B, T = input_ids.shape
    max_positions = getattr(model, "max_positions", None)
    if max_positions is not None:
        if T >= max_positions:
            raise TabVLMError(
                f"the prompt has {T} tokens and the model holds {max_positions} positions "
                "(lm.max_position_embeddings): no room to generate"
            )
        if T + max_new_tokens > max_positions:
            logger.debug("max_new_tokens %d capped to %d", max_new_tokens, max_positions - T)
            max_new_tokens = max_positions - T
    stop_ids = set() if ignore_eos else {tokenizer.eos_id, tokenizer.endoftext_id}
    vocab = _vocab_bytes(tokenizer)
    decoders = [codecs.getincrementaldecoder("utf-8")(errors="replace") for _ in range(B)] if on_token else []

    out_tokens: list[list[int]] = [[] for _ in range(B)]
    reasons = ["length"] * B
    overruled = [False] * B  # the budget made the grammar refuse the model's choice
    tails = [b""] * B  # last bytes of each text, to see `</table>`
    rows = list(range(B))  # prompt index of each row still in the batch
    # the full mask over the longest possible sequence; each step uses a prefix of its columns
    full_mask = torch.cat([mask, torch.ones(B, max_new_tokens, dtype=mask.dtype, device=device)], dim=1)
    cache = model.new_cache(B, T + max_new_tokens) if use_cache else None
    seqs = input_ids  # (b, T+step): only the uncached path keeps whole sequences

    logits = model(
        input_ids, pixel_values=pixel_values, attention_mask=mask, cache=cache, logits_to_keep=1
    ).logits[:, -1]
    grammar = None
    if isinstance(constrain, TableGrammar):
        grammar = constrain
    elif constrain:
        grammar = table_grammar(tokenizer, logits.shape[-1])
    states = np.full(B, grammar.start if grammar else 0, dtype=np.int64)  # grammar state per row
    for step in range(max_new_tokens):
        if grammar is not None:
            allowed = grammar.mask(torch.from_numpy(states), max_new_tokens - step).to(device)  # (b, V)
            if max_new_tokens - step <= grammar.max_dist:  # the budget may bind: did it overrule?
                free = grammar.allowed[torch.from_numpy(states)].to(device)  # (b, V) no budget
                wanted = logits.masked_fill(~free, float("-inf")).argmax(dim=-1, keepdim=True)  # (b, 1)
                for j in (~allowed.gather(1, wanted)).squeeze(1).nonzero().flatten().tolist():
                    overruled[rows[j]] = True
            logits = logits.masked_fill(~allowed, float("-inf"))
        next_ids = sample(logits, temperature, top_p, generator)  # (b,)
        picked = next_ids.tolist()  # the one host sync a step: stopping and the grammar need it
        if grammar is not None:
            states = grammar.advance(states, np.asarray(picked))
        keep: list[int] = []
        for j, (i, t) in enumerate(zip(rows, picked, strict=True)):
            if t in stop_ids:
                reasons[i] = "eos"
            else:
                out_tokens[i].append(t)
                tails[i] = (tails[i] + vocab[t])[-len(TABLE_END) :] if t < len(vocab) else tails[i]
                if stop_after_table and not ignore_eos and tails[i] == TABLE_END:
                    reasons[i] = "table"
                else:
                    keep.append(j)
            if on_token is not None:
                delta = "" if t in stop_ids or t >= len(vocab) else decoders[i].decode(vocab[t])
                on_token(i, t, delta)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(rows):  # some rows finished: drop them from everything
            sel = torch.tensor(keep, device=device)
            rows = [rows[j] for j in keep]
            states, next_ids, full_mask = states[keep], next_ids[sel], full_mask[sel]
            if cache is not None:
                cache.keep_rows(sel)
            else:
                seqs = seqs[sel]
                pixel_values = None if pixel_values is None else pixel_values[sel]
        step_mask = full_mask[:, : T + step + 1]  # (b, past+1)
        if cache is not None:
            out = model(next_ids[:, None], attention_mask=step_mask, cache=cache, logits_to_keep=1)
            logits = out.logits[:, -1]
        else:
            seqs = torch.cat([seqs, next_ids[:, None]], dim=1)
            logits = model(
                seqs, pixel_values=pixel_values, attention_mask=step_mask, logits_to_keep=1
            ).logits[:, -1]
    texts = [tokenizer.decode(t, skip_special=True) for t in out_tokens]
    reasons = ["length" if cut else r for r, cut in zip(reasons, overruled, strict=True)]
    return Generation(out_tokens, texts, reasons)
