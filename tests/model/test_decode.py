"""The CPU decode transform (tabvlm.model.decode): same outputs, fused layers, stated memory."""

import copy

import pytest
import torch
from tiny_lm import VARIANTS, text_ids, tiny
from torch import nn

from tabvlm.errors import TabVLMError
from tabvlm.model.decode import DecodeAttention, DecodeMLP, FusedLinear, prepare_cpu_decode

ALL = VARIANTS + [{"attention_bias": True}]


def nbytes(model: nn.Module) -> int:
    """Bytes of every distinct parameter and buffer (a tied weight once)."""
    tensors = {t.data_ptr(): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


@pytest.mark.parametrize("variant", ALL)
def test_float32_transform_gives_the_same_logits_full_and_cached(variant):
    plain = tiny(**variant)
    fused = prepare_cpu_decode(copy.deepcopy(plain))
    ids = text_ids(torch.Generator().manual_seed(5), 2, 12)
    with torch.no_grad():
        reference = plain(ids).logits
        torch.testing.assert_close(fused(ids).logits, reference, rtol=1e-5, atol=1e-5)
        cache = fused.new_cache(2, 16)
        steps = [fused(ids[:, :6], cache=cache).logits]
        steps += [fused(ids[:, t : t + 1], cache=cache).logits for t in range(6, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), reference, rtol=1e-5, atol=1e-5)
    # every LM linear and the head were replaced; nothing else was touched
    lm = fused.language_model
    assert not [m for m in lm.modules() if isinstance(m, nn.Linear)]
    assert all(isinstance(layer.self_attn, DecodeAttention) for layer in lm.layers)
    assert all(isinstance(layer.mlp, DecodeMLP) for layer in lm.layers)
    assert isinstance(fused.lm_head, FusedLinear)
    assert not any(p.requires_grad for p in fused.parameters())


@pytest.mark.parametrize("variant", VARIANTS)
def test_float32_transform_costs_only_the_tied_head_copy(variant):
    plain = tiny(**variant)
    before = nbytes(plain)
    fused = prepare_cpu_decode(copy.deepcopy(plain))
    cfg = plain.config.lm
    head = cfg.vocab_size * cfg.hidden_size * 4 if cfg.tie_embeddings else 0
    assert nbytes(fused) == before + head


@pytest.mark.parametrize("variant", ALL)
def test_int8_transform_quantises_within_half_a_step_and_tracks_float32(variant):
    plain = tiny(**variant)
    low = prepare_cpu_decode(copy.deepcopy(plain), int8=True)
    attn, fused_attn = plain.language_model.layers[0].self_attn, low.language_model.layers[0].self_attn
    qkv = fused_attn.qkv_proj
    assert qkv.weight.dtype == torch.int8 and low.lm_head.weight.dtype == torch.int8
    w = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).detach()
    deq = qkv.weight.float() * qkv.scales.float()[:, None]
    assert bool(((deq - w).abs() <= qkv.scales.float()[:, None] * 0.501).all())
    ids = text_ids(torch.Generator().manual_seed(6), 2, 9)
    with torch.no_grad():
        full, approx = plain(ids).logits, low(ids).logits
    cos = torch.nn.functional.cosine_similarity(full.flatten(1), approx.flatten(1), dim=1)
    assert float(cos.min()) > 0.999 and not torch.equal(full, approx)
    # the decoder layers hold about a quarter of their float32 bytes (int8 + a bf16 scale a row)
    layers = nbytes(low.language_model.layers) / nbytes(plain.language_model.layers)
    assert 0.25 <= layers < 0.3


def test_transform_refuses_what_it_cannot_run():
    with pytest.raises(TabVLMError, match="float32"):
        prepare_cpu_decode(tiny().to(torch.bfloat16), int8=True)
    a, b = nn.Linear(4, 3), nn.Linear(4, 2, bias=False)
    with pytest.raises(TabVLMError, match="bias"):
        FusedLinear(a, b)
