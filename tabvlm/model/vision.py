"""The vision tower: a ViT with the SigLIP parameter layout.

Conv patch embedding, learned position embeddings, pre-norm blocks, a final LayerNorm, no CLS
token. Parameter names match transformers' `SiglipVisionTransformer`
(`embeddings.patch_embedding`, `embeddings.position_embedding`, `encoder.layers.N.layer_norm1`,
`...self_attn.{q,k,v,out}_proj`, `...layer_norm2`, `...mlp.fc1/fc2`, `post_layernorm`), so
SigLIP / SigLIP2 weights load by a name map (SigLIP's pooling `head` is not used here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tabvlm.model.config import VisionConfig


class ConvStem(nn.Sequential):
    """log2(patch) 3x3 stride-2 convolutions with GELU between them, widths doubling up to
    `hidden_size`: (N, C, S, S) -> (N, hidden, S/patch, S/patch), the patch grid's shape."""

    def __init__(self, cfg: VisionConfig):
        n = cfg.patch_size.bit_length() - 1  # stride-2 stages
        widths = [max(8, cfg.hidden_size >> (n - 1 - i)) for i in range(n)]
        layers: list[nn.Module] = []
        c_in = cfg.num_channels
        for i, c_out in enumerate(widths):
            layers.append(nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1))
            if i < n - 1:
                layers.append(nn.GELU())
            c_in = c_out
        super().__init__(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He init (fan-in, ReLU gain), zero biases: the small-normal init of the rest of the
        model would shrink the signal ~5x a layer through this stack."""
        for m in self:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)


class VisionEmbeddings(nn.Module):
    """Pixels -> one token a patch, plus a learned position embedding."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        if cfg.stem == "conv":
            self.patch_embedding: nn.Module = ConvStem(cfg)
        else:
            self.patch_embedding = nn.Conv2d(
                cfg.num_channels, cfg.hidden_size, kernel_size=cfg.patch_size, stride=cfg.patch_size
            )
        self.pixel_offset = cfg.pixel_offset  # see VisionConfig.pixel_offset
        self.num_patches = cfg.grid_size**2
        self.position_embedding = nn.Embedding(self.num_patches, cfg.hidden_size)
        self.register_buffer("position_ids", torch.arange(self.num_patches)[None], persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.to(self.position_embedding.weight.dtype)
        if self.pixel_offset:
            pixel_values = pixel_values - self.pixel_offset
        x = self.patch_embedding(pixel_values)  # (N, D, g, g)
        x = x.flatten(2).transpose(1, 2)  # (N, g*g, D), row-major over the patch grid
        return x + self.position_embedding(self.position_ids)


class VisionAttention(nn.Module):
    """Full (non-causal) multi-head self-attention with biases, as SigLIP."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.hidden_size // cfg.num_heads
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.out_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, L, D = x.shape
        q = self.q_proj(x).view(N, L, self.num_heads, self.head_dim).transpose(1, 2)  # (N, H, L, hd)
        k = self.k_proj(x).view(N, L, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(N, L, self.num_heads, self.head_dim).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v)  # (N, H, L, hd)
        return self.out_proj(y.transpose(1, 2).reshape(N, L, D))


class VisionMLP(nn.Module):
    """fc1 -> GELU (tanh approximation, as SigLIP) -> fc2."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class VisionEncoderLayer(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = VisionAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = VisionMLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class VisionEncoder(nn.Module):
    """The stack of blocks (a module of its own so names read `encoder.layers.N`)."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.layers = nn.ModuleList(VisionEncoderLayer(cfg) for _ in range(cfg.num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class VisionTransformer(nn.Module):
    """(N, 3, S, S) pixels, SigLIP-normalised -> (N, (S/patch)^2, hidden) patch features."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = VisionEmbeddings(cfg)
        self.encoder = VisionEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(pixel_values)  # (N, L, D)
        return self.post_layernorm(self.encoder(x))  # (N, L, D)
