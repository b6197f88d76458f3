"""Model config dataclasses: vision tower, projector, language model, and the whole VLM.

YAML in/out goes through `tabvlm.config` (`load`, `from_dict`, `to_dict`, `save`); a model folder
holds the same dict as `config.json`. Defaults are the `configs/base.yaml` shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tabvlm.config import from_dict, load_yaml, merge, parse_overrides
from tabvlm.errors import ConfigError


@dataclass
class VisionConfig:
    """A SigLIP-layout ViT: square `image_size` input cut into `patch_size` patches, no CLS."""

    image_size: int = 512
    patch_size: int = 16
    num_channels: int = 3
    hidden_size: int = 288
    num_layers: int = 6
    num_heads: int = 6
    intermediate_size: int = 1152
    layer_norm_eps: float = 1e-6
    # Subtracted from the SigLIP-normalised pixels before the patch embedding. 0 is SigLIP. 1.0 puts
    # white paper at 0, for towers trained from scratch on documents: with a +1 background every
    # filter's response to blank paper is a sum of its 768 weights, AdamW grows that constant ~768x
    # faster than the text-dependent part, and within ~20 steps every patch looks alike (the LM then
    # never learns to read the image). Exports fold it into the patch-embedding bias.
    pixel_offset: float = 0.0
    # "patch": one patch_size x patch_size convolution (SigLIP; loads and exports as SigLIP).
    # "conv": log2(patch_size) 3x3 stride-2 convolutions (Xiao et al. 2021, "Early convolutions
    # help transformers see better"), the same token grid: a tower trained from scratch then sees
    # a glyph alike wherever it falls in a patch, instead of learning it once per offset. Not
    # loadable from / exportable to SigLIP.
    stem: str = "patch"
    # A local transformers SigLIP / SigLIP2 folder whose weights initialise the tower.
    pretrained: str | None = None

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"vision.image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"vision.hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}"
            )
        if self.stem not in ("patch", "conv"):
            raise ConfigError(f"vision.stem: expected 'patch' or 'conv', found {self.stem!r}")
        if self.stem == "conv" and (self.patch_size < 2 or self.patch_size & (self.patch_size - 1)):
            raise ConfigError(f"vision.stem 'conv' needs a power-of-two patch_size, found {self.patch_size}")
        if self.stem == "conv" and self.pretrained:
            raise ConfigError(
                "vision.stem 'conv' cannot load SigLIP weights (vision.pretrained); use stem 'patch'"
            )

    @property
    def grid_size(self) -> int:
        """Patches along one side of the image."""
        return self.image_size // self.patch_size


@dataclass
class ProjectorConfig:
    """Pixel shuffle by `scale_factor` (fewer, wider tokens), then a 2-layer SwiGLU MLP."""

    scale_factor: int = 2
    # Hidden width of the MLP; None: the LM's hidden size.
    intermediate_size: int | None = None


@dataclass
class LMConfig:
    """A Llama/Qwen3-family decoder. `head_dim` None: hidden_size // num_heads."""

    vocab_size: int = 12288
    hidden_size: int = 384
    num_layers: int = 8
    num_heads: int = 6
    num_kv_heads: int = 2
    head_dim: int | None = None
    intermediate_size: int = 1024
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 4096
    qk_norm: bool = False
    tie_embeddings: bool = True
    # Biases on q/k/v projections (Qwen2).
    attention_bias: bool = False
    # A local transformers Llama / Qwen2 / Qwen3 / SmolLM2 folder whose weights initialise the LM.
    pretrained: str | None = None

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"lm.num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}"
            )
        if self.head_dim is None and self.hidden_size % self.num_heads:
            raise ConfigError(
                f"lm.hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}; "
                "set lm.head_dim"
            )

    @property
    def attn_head_dim(self) -> int:
        """The per-head width actually used."""
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_heads


@dataclass
class ModelConfig:
    """The whole TabVLM. `image_token_id` is `<|image_pad|>` in the tokenizer the model uses."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    image_token_id: int = 3

    def __post_init__(self) -> None:
        grid, scale = self.vision.grid_size, self.projector.scale_factor
        if grid % scale:
            raise ConfigError(
                f"projector.scale_factor {scale} does not divide the {grid}x{grid} patch grid "
                f"(image_size {self.vision.image_size} / patch_size {self.vision.patch_size})"
            )
        if not 0 <= self.image_token_id < self.lm.vocab_size:
            raise ConfigError(
                f"image_token_id {self.image_token_id} is outside the vocabulary (size {self.lm.vocab_size})"
            )

    @property
    def image_tokens(self) -> int:
        """LM tokens one image becomes: (image_size / patch_size)^2 / scale_factor^2."""
        return (self.vision.grid_size // self.projector.scale_factor) ** 2


def load_model_config(path: str | Path, overrides: list[str] | None = None) -> ModelConfig:
    """A ModelConfig from a YAML file, a `config.json`, or a model folder holding `config.json`.

    A YAML recipe whose model lives under a top-level `model:` key is accepted too.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ConfigError(f"{path}: no such file") from e
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from e
    else:
        data = load_yaml(path)
    if "model" in data and "vision" not in data:
        data = data["model"]
    data = merge(data, parse_overrides(overrides or []))
    return from_dict(ModelConfig, data, str(path))
