"""Pretrained backbones: tiny random transformers models saved to disk, loaded by name map, and
compared with transformers' own outputs (fp32, max abs diff <= 1e-4)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import transformers  # a dev dependency: a missing install fails, never skips

from tabvlm.errors import ConfigError
from tabvlm.hf.load import init_model, lm_config_from_hf, vision_config_from_hf, with_pretrained_shapes
from tabvlm.model.config import ModelConfig, ProjectorConfig
from tabvlm.model.vlm import TabVLM

TOL = 1e-4
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=8)
TEXT = dict(
    vocab_size=300,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
)


def _randomise(model: torch.nn.Module, seed: int) -> None:
    # Norm weights and biases start at 1 / 0 in transformers; random values test their mapping too.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def _model_with(tmp_path, vision=None, lm=None, image_size: int = 32) -> TabVLM:
    """A TabVLM whose recipe points at the given folders (shapes copied from them)."""
    cfg = ModelConfig(projector=ProjectorConfig(scale_factor=2))
    cfg = dataclasses.replace(
        cfg,
        vision=dataclasses.replace(cfg.vision, image_size=image_size, patch_size=8, pretrained=vision),
        lm=dataclasses.replace(cfg.lm, vocab_size=300, pretrained=lm),
    )
    return init_model(with_pretrained_shapes(cfg)).eval()


def test_siglip_vision_matches_transformers(tmp_path):
    torch.manual_seed(0)
    hf = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(image_size=32, **VISION)).eval()
    _randomise(hf, 1)
    hf.save_pretrained(tmp_path)
    model = _model_with(tmp_path, vision=str(tmp_path))
    px = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = hf(pixel_values=px).last_hidden_state  # after post_layernorm
        got = model.vision_model(px)
    assert (got - want).abs().max() <= TOL


def test_siglip2_naflex_vision_matches_transformers(tmp_path):
    """Linear patch embedding -> conv; a 3x3 position table resized to the 4x4 grid."""
    torch.manual_seed(0)
    hf = transformers.Siglip2VisionModel(transformers.Siglip2VisionConfig(num_patches=9, **VISION)).eval()
    _randomise(hf, 2)
    hf.save_pretrained(tmp_path)
    model = _model_with(tmp_path, vision=str(tmp_path), image_size=32)
    px = torch.randn(2, 3, 32, 32)
    # Siglip2's processor flattens each patch as (row, col, channel).
    patches = px.permute(0, 2, 3, 1).reshape(2, 4, 8, 4, 8, 3).permute(0, 1, 3, 2, 4, 5).reshape(2, 16, 192)
    with torch.no_grad():
        want = hf(
            pixel_values=patches,
            pixel_attention_mask=torch.ones(2, 16, dtype=torch.long),
            spatial_shapes=torch.tensor([[4, 4], [4, 4]]),
        ).last_hidden_state
        got = model.vision_model(px)
    assert (got - want).abs().max() <= TOL


@pytest.mark.parametrize(
    "arch",
    [
        ("LlamaForCausalLM", "LlamaConfig", dict(tie_word_embeddings=False, rope_theta=5000.0)),
        ("Qwen3ForCausalLM", "Qwen3Config", dict(head_dim=16, tie_word_embeddings=True)),
        ("Qwen2ForCausalLM", "Qwen2Config", dict(tie_word_embeddings=False)),  # q/k/v biases
    ],
    ids=["llama", "qwen3", "qwen2"],
)
def test_causal_lm_logits_match_transformers(tmp_path, arch):
    model_cls, config_cls, extra = arch
    torch.manual_seed(0)
    hf = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**TEXT, **extra)).eval()
    _randomise(hf, 3)
    hf.save_pretrained(tmp_path)
    model = _model_with(tmp_path, lm=str(tmp_path))
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = hf(input_ids=ids).logits
        got = model(ids).logits
    assert (got - want).abs().max() <= TOL


def test_lm_config_fields_are_mapped(tmp_path):
    cfg = transformers.Qwen3Config(
        **TEXT, head_dim=16, rope_theta=1e6, rms_norm_eps=1e-5, tie_word_embeddings=True
    )
    cfg.save_pretrained(tmp_path)
    lm = lm_config_from_hf(tmp_path)
    assert (lm.hidden_size, lm.num_layers, lm.num_heads, lm.num_kv_heads, lm.head_dim) == (32, 2, 4, 2, 16)
    assert (lm.intermediate_size, lm.rope_theta, lm.rms_norm_eps) == (64, 1e6, 1e-5)
    assert lm.qk_norm and lm.tie_embeddings and not lm.attention_bias


def test_recipe_that_disagrees_with_the_folder_is_an_error(tmp_path):
    transformers.SiglipVisionConfig(image_size=32, **VISION).save_pretrained(tmp_path)
    transformers.SiglipVisionModel(transformers.SiglipVisionConfig(image_size=32, **VISION)).save_pretrained(
        tmp_path
    )
    vision = dataclasses.replace(vision_config_from_hf(tmp_path), num_layers=3)
    cfg = ModelConfig(vision=vision)
    cfg = dataclasses.replace(cfg, lm=dataclasses.replace(cfg.lm, vocab_size=300))
    with pytest.raises(ConfigError, match=r"vision.num_layers=2 \(recipe has 3\)"):
        init_model(cfg)


def test_the_model_constructor_reads_no_disk(tmp_path):
    """Only init_model (training) reads the backbone folders: TabVLM(config) is random weights."""
    vision = dataclasses.replace(ModelConfig().vision, pretrained=str(tmp_path / "absent"))
    TabVLM(dataclasses.replace(ModelConfig(), vision=vision))  # no folder, no error
    with pytest.raises(ConfigError, match="absent"):
        init_model(dataclasses.replace(ModelConfig(), vision=vision))


def test_saved_model_does_not_reread_the_pretrained_folder(tmp_path):
    src = tmp_path / "siglip"
    transformers.SiglipVisionModel(transformers.SiglipVisionConfig(image_size=32, **VISION)).save_pretrained(
        src
    )
    model = _model_with(tmp_path, vision=str(src))
    model.save_pretrained(tmp_path / "out")
    for f in src.iterdir():
        f.unlink()
    again = TabVLM.from_pretrained(tmp_path / "out")
    assert torch.equal(again.vision_model.post_layernorm.weight, model.vision_model.post_layernorm.weight)
