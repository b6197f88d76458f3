"""The CPU decode transform: `prepare_cpu_decode(model, int8=False)` rewrites a TabVLM, in place,
into an inference-only model that decodes faster on CPU. The recognizer applies it on CPU.

Why: at batch 1 a decode step on CPU is bound by per-op overhead and by reading weights, not by
FLOPs. The transform makes fewer, larger matmuls in the layout BLAS reads fastest:
- each attention's q/k/v, and each MLP's gate/up, become one matmul against one row-major
  (in, sum of outs) weight (`FusedLinear`); o, down and the head are transposed the same way;
- with `int8=True` those weights are stored as weight-only int8 instead (symmetric, one scale per
  output channel, |error| <= scale / 2 a weight) and multiplied with bfloat16 activations through
  `torch._weight_int8pack_mm`: a quarter of float32's bytes to read. Outputs are close to, not
  equal to, float32's (docs/BENCHMARKS.md measures both).
The vision tower, the connector, the norms, the embeddings and attention itself are unchanged.

Memory: the LM's linears are replaced, not copied (float32: the same bytes; int8: a quarter).
The head is the exception when it is tied to the token embeddings (the default): the
embeddings stay for the input side, so its transposed copy adds vocab x hidden weights (12.6 MB
in float32, 3.1 MB in int8 for `models/tabvlm-base`: 12,288 x 256).

The result is for inference only: its fused weights are buffers (no gradients, no training), and
its state dict is not TabVLM's (save or export the model before the transform).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tabvlm.errors import TabVLMError
from tabvlm.model.lm import MLP, Attention
from tabvlm.model.vlm import TabVLM


class FusedLinear(nn.Module):
    """Several nn.Linear layers of one input as one matmul; the outputs are concatenated along
    the last dimension in the order given."""

    def __init__(self, *linears: nn.Linear, int8: bool = False):
        super().__init__()
        if len({lin.bias is None for lin in linears}) > 1:
            raise TabVLMError("FusedLinear: all or none of the fused layers need a bias")
        weight = torch.cat([lin.weight.detach() for lin in linears])  # (out, in)
        bias = torch.cat([lin.bias.detach() for lin in linears]) if linears[0].bias is not None else None
        self.int8 = int8
        if int8:
            w = weight.float()
            # the kernel takes bf16 scales: quantise against the rounded ones (error <= scale / 2)
            scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-30).to(torch.bfloat16)  # (out,)
            q = torch.round(w / scales.float()[:, None]).clamp(-127, 127).to(torch.int8)
            self.register_buffer("weight", q.contiguous())  # (out, in) int8
            self.register_buffer("scales", scales)
        else:
            self.register_buffer("weight", weight.t().contiguous())  # (in, out)
            self.scales = None
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.int8:
            flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)  # (M, in)
            y = torch._weight_int8pack_mm(flat, self.weight, self.scales).to(x.dtype)
            y = y.view(*x.shape[:-1], -1)
        else:
            y = x @ self.weight
        return y if self.bias is None else y + self.bias


class DecodeAttention(Attention):
    """`Attention` with q/k/v as one fused matmul and o transposed (same forward otherwise)."""

    def __init__(self, attn: Attention, int8: bool):
        nn.Module.__init__(self)  # not Attention's: its Linears are what this replaces
        self.layer_idx, self.head_dim = attn.layer_idx, attn.head_dim
        self.num_heads, self.num_kv_heads, self.qk_norm = attn.num_heads, attn.num_kv_heads, attn.qk_norm
        if attn.qk_norm:
            self.q_norm, self.k_norm = attn.q_norm, attn.k_norm
        self.qkv_proj = FusedLinear(attn.q_proj, attn.k_proj, attn.v_proj, int8=int8)
        self.out_proj = FusedLinear(attn.o_proj, int8=int8)
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.sizes = [q, kv, kv]

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = self.qkv_proj(x).split(self.sizes, dim=-1)
        return q, k, v

    def project_out(self, y: torch.Tensor) -> torch.Tensor:
        return self.out_proj(y)


class DecodeMLP(nn.Module):
    """`MLP` (SwiGLU) with gate/up as one fused matmul and down transposed."""

    def __init__(self, mlp: MLP, int8: bool):
        super().__init__()
        self.gate_up_proj = FusedLinear(mlp.gate_proj, mlp.up_proj, int8=int8)
        self.down_proj = FusedLinear(mlp.down_proj, int8=int8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


def prepare_cpu_decode(model: TabVLM, int8: bool = False) -> TabVLM:
    """Rewrite `model` in place for decoding on CPU (see the module docstring) and return it, in
    eval mode. Its LM layers become `DecodeAttention` / `DecodeMLP` and its head a `FusedLinear`."""
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise TabVLMError("prepare_cpu_decode: the model must be on CPU (the fused kernels are CPU ones)")
    if int8 and next(model.language_model.parameters()).dtype != torch.float32:
        raise TabVLMError("prepare_cpu_decode(int8=True): expected a float32 model")
    with torch.no_grad():
        for layer in model.language_model.layers:
            layer.self_attn = DecodeAttention(layer.self_attn, int8)
            layer.mlp = DecodeMLP(layer.mlp, int8)
        model.lm_head = FusedLinear(model.lm_head, int8=int8)
    return model.eval().requires_grad_(False)
