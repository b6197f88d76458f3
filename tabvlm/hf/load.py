"""Pretrained backbones from local transformers folders (config.json + safetensors), by name map.

- Vision: SigLIP (`SiglipModel` / `SiglipVisionModel`, model_type `siglip` or
  `siglip_vision_model`) and SigLIP2 (`siglip2` / `siglip2_vision_model`). SigLIP2 checkpoints
  published without NaFlex (e.g. `siglip2-base-patch16-512`) are stored as model_type `siglip`
  and load as SigLIP. The NaFlex `Siglip2VisionModel` embeds flattened patches with a Linear
  over (patch_row, patch_col, channel) and resizes its square position table to each image's
  patch grid (bilinear, antialiased); both are mapped onto tabvlm's fixed square input: the
  Linear becomes the equivalent Conv2d, and the table is resized once to the model's grid.
  A SigLIP table is resized the same way when `vision.image_size` differs from the checkpoint's.
- LM: Llama (SmolLM2 is a Llama), Qwen2 (q/k/v biases) and Qwen3 (QK-norm) causal LMs; the
  checkpoint's `lm_head` becomes `TabVLM.lm_head` unless the embeddings are tied.

No network access: a folder path is required. The recipe's shape fields must match the folder;
`vision_config_from_hf` / `lm_config_from_hf` give the values to write in the YAML.
"""

from __future__ import annotations

import json
import logging
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from tabvlm.errors import ConfigError
from tabvlm.model.config import LMConfig, ModelConfig, VisionConfig
from tabvlm.model.vlm import TabVLM

log = logging.getLogger(__name__)

SIGLIP_TYPES = {"siglip", "siglip_vision_model"}
SIGLIP2_TYPES = {"siglip2", "siglip2_vision_model"}
LM_TYPES = {"llama", "qwen2", "qwen3"}


def read_hf_config(folder: str | Path) -> dict[str, Any]:
    """The folder's config.json as a dict (ConfigError when absent or not JSON)."""
    path = Path(folder) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(
            f"{path}: no such file (a pretrained folder holds config.json + safetensors)"
        ) from e
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from e


def read_hf_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor in model.safetensors, or in the shards a model.safetensors.index.json names."""
    folder = Path(folder)
    single = folder / "model.safetensors"
    if single.is_file():
        return load_file(str(single), device="cpu")
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        raise ConfigError(f"{folder}: no model.safetensors or model.safetensors.index.json")
    shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(load_file(str(folder / shard), device="cpu"))
    return state


def _vision_section(cfg: dict[str, Any], folder: str | Path) -> tuple[str, dict[str, Any]]:
    """(family 'siglip' | 'siglip2', the vision config dict) of a SigLIP-family config.json."""
    kind = cfg.get("model_type")
    if kind in SIGLIP_TYPES | SIGLIP2_TYPES:
        vision = cfg.get("vision_config", cfg) if kind in {"siglip", "siglip2"} else cfg
        return ("siglip2" if kind in SIGLIP2_TYPES else "siglip"), vision
    raise ConfigError(
        f"{folder}: model_type {kind!r} is not a SigLIP vision model "
        f"(expected one of {sorted(SIGLIP_TYPES | SIGLIP2_TYPES)})"
    )


def vision_config_from_hf(folder: str | Path, image_size: int | None = None) -> VisionConfig:
    """The VisionConfig a SigLIP / SigLIP2 folder describes; `image_size` None: the checkpoint's
    own (SigLIP2 NaFlex: its position table's side times the patch size)."""
    family, v = _vision_section(read_hf_config(folder), folder)
    act = v.get("hidden_act", "gelu_pytorch_tanh")
    if act != "gelu_pytorch_tanh":
        raise ConfigError(f"{folder}: hidden_act {act!r}; tabvlm's ViT uses gelu_pytorch_tanh")
    patch = v.get("patch_size", 16)
    if image_size is None:
        side = (
            round(v.get("num_patches", 256) ** 0.5)
            if family == "siglip2"
            else v.get("image_size", 224) // patch
        )
        image_size = side * patch
    return VisionConfig(
        image_size=image_size,
        patch_size=patch,
        num_channels=v.get("num_channels", 3),
        hidden_size=v.get("hidden_size", 768),
        num_layers=v.get("num_hidden_layers", 12),
        num_heads=v.get("num_attention_heads", 12),
        intermediate_size=v.get("intermediate_size", 3072),
        layer_norm_eps=v.get("layer_norm_eps", 1e-6),
        pretrained=str(folder),
    )


def _rope_theta(cfg: dict[str, Any], folder: str | Path) -> float:
    # transformers 5 nests RoPE under `rope_parameters`; 4.x used `rope_theta` + `rope_scaling`.
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        raise ConfigError(f"{folder}: rope_type {kind!r} is not supported (tabvlm uses plain RoPE)")
    return float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))


def lm_config_from_hf(folder: str | Path) -> LMConfig:
    """The LMConfig a Llama / Qwen2 / Qwen3 (or SmolLM2) folder describes."""
    cfg = read_hf_config(folder)
    kind = cfg.get("model_type")
    if kind not in LM_TYPES:
        raise ConfigError(f"{folder}: model_type {kind!r} is not one of {sorted(LM_TYPES)}")
    if cfg.get("hidden_act", "silu") != "silu" or cfg.get("mlp_bias", False):
        raise ConfigError(f"{folder}: tabvlm's LM is SwiGLU (silu, no MLP bias)")
    if kind == "qwen2" and cfg.get("use_sliding_window", False):
        raise ConfigError(f"{folder}: sliding-window attention is not supported")
    heads = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    return LMConfig(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        num_layers=cfg["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=cfg.get("num_key_value_heads") or heads,
        # None keeps configs short when head_dim is the default hidden // heads.
        head_dim=None if head_dim * heads == cfg["hidden_size"] else head_dim,
        intermediate_size=cfg["intermediate_size"],
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
        rope_theta=_rope_theta(cfg, folder),
        max_position_embeddings=cfg.get("max_position_embeddings", 4096),
        qk_norm=kind == "qwen3",
        tie_embeddings=bool(cfg.get("tie_word_embeddings", kind != "llama")),
        attention_bias=kind == "qwen2" or bool(cfg.get("attention_bias", False)),
        pretrained=str(folder),
    )


def _check_shape(section: str, ours: Any, theirs: Any, ignore: set[str], folder: str | Path) -> None:
    diffs = [
        f"{section}.{f.name}={getattr(theirs, f.name)!r} (recipe has {getattr(ours, f.name)!r})"
        for f in fields(ours)
        if f.name not in ignore and getattr(ours, f.name) != getattr(theirs, f.name)
    ]
    if diffs:
        raise ConfigError(
            f"{folder}: the recipe does not match the pretrained weights; set " + ", ".join(diffs)
        )


def resize_positions(table: torch.Tensor, grid: int) -> torch.Tensor:
    """A (side*side, D) position table -> (grid*grid, D), bilinear + antialias as SigLIP2 does."""
    side = round(table.shape[0] ** 0.5)
    if side == grid:
        return table
    x = table.float().reshape(side, side, -1).permute(2, 0, 1)[None]  # (1, D, side, side)
    x = F.interpolate(x, size=(grid, grid), mode="bilinear", align_corners=False, antialias=True)
    return x[0].reshape(table.shape[1], grid * grid).T.to(table.dtype)  # (grid*grid, D)


def vision_state_from_hf(folder: str | Path, cfg: VisionConfig) -> dict[str, torch.Tensor]:
    """The folder's SigLIP / SigLIP2 tower as a state dict for `VisionTransformer(cfg)`."""
    family, _ = _vision_section(read_hf_config(folder), folder)
    _check_shape("vision", cfg, vision_config_from_hf(folder, cfg.image_size), {"pretrained"}, folder)
    # Whole SigLIP models prefix the tower with `vision_model.`; transformers 5 saves a bare
    # SiglipVisionModel without it. The text tower and the pooling head are not used.
    state = {
        name: v
        for k, v in read_hf_weights(folder).items()
        if (name := k.removeprefix("vision_model.")).startswith(
            ("embeddings.", "encoder.", "post_layernorm.")
        )
    }
    emb = "embeddings.patch_embedding.weight"
    if family == "siglip2":
        # Linear over (row, col, channel)-flattened patches == Conv2d with a permuted kernel.
        p = cfg.patch_size
        state[emb] = state[emb].reshape(cfg.hidden_size, p, p, cfg.num_channels).permute(0, 3, 1, 2)
    pos = "embeddings.position_embedding.weight"
    if state[pos].shape[0] != cfg.grid_size**2:
        log.info("resizing %s position embeddings to a %dx%d grid", folder, cfg.grid_size, cfg.grid_size)
    state[pos] = resize_positions(state[pos], cfg.grid_size)
    return state


def lm_state_from_hf(folder: str | Path, cfg: LMConfig) -> dict[str, torch.Tensor]:
    """The folder's causal LM as a state dict for `TabVLM`: `language_model.*` and `lm_head.weight`."""
    _check_shape("lm", cfg, lm_config_from_hf(folder), {"pretrained", "max_position_embeddings"}, folder)
    state = {}
    for k, v in read_hf_weights(folder).items():
        if k.startswith("model."):
            state["language_model." + k.removeprefix("model.")] = v
        elif k == "lm_head.weight" and not cfg.tie_embeddings:
            state[k] = v
    return state


def load_backbones(model: torch.nn.Module, config: ModelConfig) -> None:
    """Copy `config.vision.pretrained` / `config.lm.pretrained` weights into a fresh TabVLM."""
    if config.vision.pretrained:
        state = vision_state_from_hf(config.vision.pretrained, config.vision)
        model.vision_model.load_state_dict(state, strict=True)
        log.info("vision tower loaded from %s", config.vision.pretrained)
    if config.lm.pretrained:
        state = lm_state_from_hf(config.lm.pretrained, config.lm)
        expected = {"language_model." + k for k in model.language_model.state_dict()}
        if not config.lm.tie_embeddings:
            expected.add("lm_head.weight")
        if set(state) != expected:
            raise ConfigError(
                f"{config.lm.pretrained}: weights do not match; missing {sorted(expected - set(state))[:5]}, "
                f"unexpected {sorted(set(state) - expected)[:5]}"
            )
        model.load_state_dict(state, strict=False)
        log.info("language model loaded from %s", config.lm.pretrained)


def init_model(config: ModelConfig) -> TabVLM:
    """A new TabVLM for training: random weights, then the pretrained backbones its config names
    (local transformers folders), if any."""
    model = TabVLM(config)
    if config.vision.pretrained or config.lm.pretrained:
        load_backbones(model, config)
    return model


def with_pretrained_shapes(config: ModelConfig) -> ModelConfig:
    """`config` with the vision / LM shape fields taken from its pretrained folders (helper for
    writing recipes; the vision image_size and LM max_position_embeddings stay the recipe's)."""
    vision, lm = config.vision, config.lm
    if vision.pretrained:
        vision = vision_config_from_hf(vision.pretrained, vision.image_size)
    if lm.pretrained:
        lm = replace(lm_config_from_hf(lm.pretrained), max_position_embeddings=lm.max_position_embeddings)
    return replace(config, vision=vision, lm=lm)
