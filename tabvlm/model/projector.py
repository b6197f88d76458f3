"""The connector: pixel shuffle (space-to-depth) then a 2-layer SwiGLU MLP to the LM width.

Pixel shuffle folds each `s x s` block of neighbouring patches into one token `s^2` times wider,
so an image costs `s^2` times fewer LM tokens while no pixel information is dropped.

The layout is transformers' `Cohere2VisionMultiModalProjector` (same pixel-shuffle order,
`linear_1` producing value and gate halves, `silu(gate) * value`, `linear_2`), so the HF export
(`tabvlm.hf.export`) is a rename with exact numerical parity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tabvlm.model.config import ModelConfig


def pixel_shuffle(x: torch.Tensor, scale: int) -> torch.Tensor:
    """(N, g*g, D) row-major patch grid -> (N, (g/s)^2, s*s*D), row-major over blocks."""
    N, L, D = x.shape
    g = math.isqrt(L)
    x = x.view(N, g // scale, scale, g // scale, scale, D)  # (N, gy, sy, gx, sx, D)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (N, gy, gx, sy, sx, D)
    return x.reshape(N, (g // scale) ** 2, scale * scale * D)


class Connector(nn.Module):
    """Vision features (N, L, Dv) -> LM-width image tokens (N, L / s^2, Dlm)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.scale_factor = cfg.projector.scale_factor
        in_dim = cfg.vision.hidden_size * self.scale_factor**2
        mid = cfg.projector.intermediate_size or cfg.lm.hidden_size
        self.linear_1 = nn.Linear(in_dim, 2 * mid)  # value and gate halves, one matmul
        self.linear_2 = nn.Linear(mid, cfg.lm.hidden_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = pixel_shuffle(features, self.scale_factor)  # (N, L/s^2, s^2*Dv)
        value, gate = self.linear_1(x).chunk(2, dim=-1)  # (N, L/s^2, mid) each
        return self.linear_2(F.silu(gate) * value)  # (N, L/s^2, Dlm)
