"""The decoder: causality, KV-cache decoding, padding, packing, GQA/QK-norm variants."""

import pytest
import torch
from tiny_lm import VARIANTS, text_ids, tiny

from tabvlm.errors import TabVLMError
from tabvlm.model.lm import RotaryEmbedding, apply_rotary, positions_and_mask
from tabvlm.train.loss import mean_token_loss


@pytest.mark.parametrize("variant", VARIANTS)
def test_causal_later_tokens_never_change_earlier_logits(variant):
    model = tiny(**variant)
    gen = torch.Generator().manual_seed(1)
    ids = text_ids(gen, 2, 24)
    changed = ids.clone()
    changed[:, 15:] = text_ids(gen, 2, 9)
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    assert torch.equal(a[:, :15], b[:, :15])
    assert not torch.allclose(a[:, 15:], b[:, 15:])


@pytest.mark.parametrize("variant", VARIANTS)
def test_kv_cache_step_by_step_equals_full_forward(variant):
    model = tiny(**variant)
    gen = torch.Generator().manual_seed(2)
    ids = text_ids(gen, 2, 20)
    with torch.no_grad():
        full = model(ids).logits
        cache = model.new_cache(2, 32)
        steps = [model(ids[:, :5], cache=cache).logits]  # a prefill chunk, then one token a step
        steps += [model(ids[:, t : t + 1], cache=cache).logits for t in range(5, 20)]
    assert cache.length == 20
    assert (torch.cat(steps, dim=1) - full).abs().max() <= 1e-5


def test_kv_cache_with_left_padding_matches_full_forward_and_unpadded_rows():
    model = tiny()
    gen = torch.Generator().manual_seed(3)
    ids = text_ids(gen, 3, 16)
    mask = torch.ones(3, 16, dtype=torch.long)
    mask[1, :4] = 0  # left padding
    mask[2, :9] = 0
    ids[mask == 0] = 0
    with torch.no_grad():
        full = model(ids, attention_mask=mask).logits
        cache = model.new_cache(3, 16)
        steps = [
            model(ids[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=cache).logits for t in range(16)
        ]
        alone = model(ids[1:2, 4:]).logits  # row 1 without its padding
    step = torch.cat(steps, dim=1)
    assert not torch.isnan(full).any() and not torch.isnan(step).any()
    assert (step - full).abs().max() <= 1e-5
    assert (full[1, 4:] - alone[0]).abs().max() <= 1e-5


def test_prefill_with_padding_then_decode_matches_full_forward():
    model = tiny()
    gen = torch.Generator().manual_seed(4)
    ids = text_ids(gen, 2, 14)
    mask = torch.ones(2, 14, dtype=torch.long)
    mask[0, :3] = 0
    with torch.no_grad():
        full = model(ids, attention_mask=mask).logits
        cache = model.new_cache(2, 20)
        pre = model(ids[:, :10], attention_mask=mask[:, :10], cache=cache).logits
        rest = [
            model(ids[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=cache).logits
            for t in range(10, 14)
        ]
    assert (torch.cat([pre, *rest], dim=1) - full).abs().max() <= 1e-5


def test_packed_segments_equal_separate_samples():
    model = tiny()
    gen = torch.Generator().manual_seed(5)
    lengths = [7, 4, 9]
    samples = [text_ids(gen, 1, n) for n in lengths]
    packed = torch.cat(samples, dim=1)  # (1, 20)
    segments = torch.cat([torch.full((1, n), i) for i, n in enumerate(lengths)], dim=1)
    with torch.no_grad():
        out = model(packed, segment_ids=segments).logits
        alone = [model(s).logits for s in samples]
    assert (out - torch.cat(alone, dim=1)).abs().max() <= 1e-5


def test_packed_loss_equals_mean_over_separate_samples():
    model = tiny()
    gen = torch.Generator().manual_seed(6)
    a, b = text_ids(gen, 1, 6), text_ids(gen, 1, 8)
    packed = torch.cat([a, b], dim=1)
    labels = packed.clone()
    labels[0, 6] = -100  # the first token of segment 2 is not predicted from segment 1
    segments = torch.tensor([[0] * 6 + [1] * 8])
    with torch.no_grad():
        loss = mean_token_loss(model, packed, labels, segment_ids=segments)
        la, lb = mean_token_loss(model, a, a), mean_token_loss(model, b, b)
    assert torch.allclose(loss, (la * 5 + lb * 7) / 12, atol=1e-5)


def test_positions_restart_per_segment_and_follow_the_mask():
    seg = torch.tensor([[0, 0, 0, 1, 1, 2]])
    pos, mask = positions_and_mask(1, 6, 0, None, seg, torch.device("cpu"))
    assert pos.tolist() == [[0, 1, 2, 0, 1, 0]]
    assert mask[0, 0, 4].tolist() == [False, False, False, True, True, False]
    att = torch.tensor([[0, 0, 1, 1, 1]])
    pos, mask = positions_and_mask(1, 5, 0, att, None, torch.device("cpu"))
    assert pos.tolist() == [[0, 0, 0, 1, 2]]
    assert mask[0, 0, 0].tolist() == [True, False, False, False, False]  # a pad row sees itself
    assert mask[0, 0, 3].tolist() == [False, False, True, True, False]


def test_packing_with_a_cache_and_a_full_cache_are_errors():
    model = tiny()
    ids = torch.ones(1, 4, dtype=torch.long) * 20
    with pytest.raises(TabVLMError, match="segment_ids"):
        model(ids, segment_ids=torch.zeros(1, 4, dtype=torch.long), cache=model.new_cache(1, 8))
    with pytest.raises(TabVLMError, match="KV cache full"):
        model(ids, cache=model.new_cache(1, 3))
    with pytest.raises(TabVLMError, match=r"attention_mask has shape \(1, 3\), expected \(1, 4\)"):
        model(ids, attention_mask=torch.ones(1, 3))


def test_cache_buffers_are_preallocated_per_layer():
    model = tiny()
    cache = model.new_cache(2, 50)
    cfg = model.config.lm
    assert len(cache.keys) == len(cache.values) == cfg.num_layers
    assert cache.keys[0].shape == (2, cfg.num_kv_heads, 50, cfg.attn_head_dim)
    assert cache.length == 0 and cache.max_len == 50


def test_decode_step_mask_is_only_the_padding_row():
    pos, mask = positions_and_mask(2, 1, 5, None, None, torch.device("cpu"))
    assert pos.tolist() == [[5], [5]] and mask is None  # no padding: attend to every cached key
    att = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    pos, mask = positions_and_mask(2, 1, 5, att, None, torch.device("cpu"))
    assert pos.tolist() == [[3], [5]]
    assert mask.shape == (2, 1, 1, 6) and torch.equal(mask[:, 0, 0], att)
    att[0, -1] = False  # a padded query still sees itself, and the caller's mask is not written
    _, mask = positions_and_mask(2, 1, 5, att, None, torch.device("cpu"))
    assert mask[0, 0, 0].tolist() == [False, False, True, True, True, True] and not att[0, -1]


def test_rotary_matches_the_rotate_half_formula_exactly():
    rope = RotaryEmbedding(8, 32, 10000.0)
    x = torch.randn(2, 3, 5, 8, generator=torch.Generator().manual_seed(7))  # (B, H, T, hd)
    positions = torch.tensor([[0, 1, 2, 3, 4], [3, 9, 17, 30, 31]])
    cos, sin = rope(positions, x.dtype)
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, 8, 2, dtype=torch.float32) / 8))
    angles = positions[..., None].float() * inv_freq  # (B, T, hd/2)
    angles = torch.cat([angles, angles], dim=-1)[:, None]  # (B, 1, T, hd)
    x1, x2 = x.chunk(2, dim=-1)
    expected = x * angles.cos() + torch.cat([-x2, x1], dim=-1) * angles.sin()
    assert torch.equal(apply_rotary(x, cos, sin), expected)


@pytest.mark.parametrize("variant", VARIANTS)
def test_logits_to_keep_gives_the_last_positions_only(variant):
    model = tiny(**variant)
    ids = text_ids(torch.Generator().manual_seed(8), 2, 12)
    with torch.no_grad():
        full = model(ids).logits
        last = model(ids, logits_to_keep=1).logits
        cache = model.new_cache(2, 16)
        model(ids[:, :11], cache=cache, logits_to_keep=1)
        step = model(ids[:, 11:], cache=cache, logits_to_keep=1).logits
    assert last.shape == (2, 1, full.shape[-1]) and (last - full[:, -1:]).abs().max() <= 1e-5
    assert (step - full[:, -1:]).abs().max() <= 1e-5
