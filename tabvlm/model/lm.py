"""The language model: a decoder-only Llama/Qwen3-family transformer, and its KV cache.

RMSNorm, rotary position embeddings (precomputed cos/sin tables indexed by position ids, so the
graph is shape-static and `torch.compile` has no data-dependent branch to trip on), grouped-query
attention through `F.scaled_dot_product_attention`, SwiGLU MLP, optional QK-norm (Qwen3).
Parameter names follow transformers' Llama/Qwen3 (`embed_tokens`, `layers.N.self_attn.q_proj`,
`...q_norm`, `...mlp.gate_proj`, `...input_layernorm`, `norm`). The LM head lives in `TabVLM`.

Masks and positions: `attention_mask` (B, past+T) is 1 for real tokens (left padding allowed) and
positions are `cumsum(mask) - 1`; `segment_ids` (B, T) packs several samples into one row, with
attention kept inside each segment and positions restarting at each segment start.

Decoding speed (batch 1 on CPU is bound by per-op overhead and weight reads, not FLOPs): a decode
step (one new token after a filled cache) builds no causal mask, only the padding row of
`attention_mask` when there is one; GQA uses SDPA's `enable_gqa` instead of copying the cached
keys/values for every query head; RoPE is one `roll` and two multiplies. Fusing q/k/v and
gate/up into one matmul each, and int8 weights, are an explicit transform of a loaded model
(`tabvlm.model.decode.prepare_cpu_decode`), which overrides `Attention.project_qkv` /
`project_out`; the modules here hold only their parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tabvlm.errors import TabVLMError
from tabvlm.model.config import LMConfig


class KVCache:
    """Preallocated keys and values for every layer, (B, n_kv, max_len, head_dim), and a length.

    Each forward writes its T new keys/values at `[length, length+T)` in every layer, then the
    model advances `length` by T. Generation code owns the cache; the model only fills it.
    """

    def __init__(
        self,
        num_layers: int,
        batch: int,
        num_kv_heads: int,
        max_len: int,
        head_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        shape = (batch, num_kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.keys[0].shape[2]

    @property
    def batch(self) -> int:
        return self.keys[0].shape[0]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's k, v (B, n_kv, T, hd) for `layer`; return all keys/values so far."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise TabVLMError(f"KV cache full: {end} positions needed, max_len is {self.max_len}")
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]  # (B, n_kv, past+T, hd)

    def advance(self, n: int) -> None:
        """Mark `n` more positions as filled (called once per forward, after every layer)."""
        self.length += n

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only batch rows `rows` (generation drops its finished rows): a gather per layer."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]


def positions_and_mask(
    batch: int,
    length: int,
    past: int,
    attention_mask: torch.Tensor | None,
    segment_ids: torch.Tensor | None,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Position ids (B, T) and a boolean SDPA mask (B, 1, T, past+T), True = may attend.

    The mask is None when plain causal attention suffices (no padding, no packing, nothing
    cached) and on a decode step without padding (one query row sees every cached key). Every
    query may attend to itself, so a padded query row is never fully masked (SDPA would turn
    that row into NaN, which then leaks into gradients and the cache).
    """
    T, S = length, past + length
    if attention_mask is not None and attention_mask.shape != (batch, S):
        raise TabVLMError(
            f"attention_mask has shape {tuple(attention_mask.shape)}, expected ({batch}, {S}) "
            f"(past {past} + current {T} tokens)"
        )
    if T == 1 and past > 0 and segment_ids is None:
        # Decode step: the one query is the newest position, so causality masks nothing.
        if attention_mask is None:
            return torch.full((batch, 1), past, device=device), None
        positions = (attention_mask.sum(-1, keepdim=True) - 1).clamp(min=0)  # (B, 1)
        allowed = attention_mask != 0  # (B, S), a new tensor: safe to write into
        allowed[:, -1] = True  # a query always sees itself
        return positions, allowed[:, None, None]  # (B, 1, 1, S)
    q_idx = past + torch.arange(T, device=device)  # (T,)
    k_idx = torch.arange(S, device=device)  # (S,)
    allowed = (k_idx[None, :] <= q_idx[:, None])[None]  # (1, T, S) causal
    if segment_ids is not None:
        idx = torch.arange(T, device=device).expand(batch, T)  # (B, T)
        starts = torch.ones_like(segment_ids, dtype=torch.bool)
        starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
        # The start index of each token's segment: a running max of the starts seen so far.
        seg_start = torch.cummax(torch.where(starts, idx, 0), dim=1).values
        positions = idx - seg_start
        allowed = allowed & (segment_ids[:, :, None] == segment_ids[:, None, :])  # (B, T, S)
        if attention_mask is not None:
            allowed = allowed & attention_mask.bool()[:, None, :]
    elif attention_mask is not None:
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]  # (B, T)
        allowed = allowed & attention_mask.bool()[:, None, :]  # (B, T, S)
    else:
        positions = q_idx[None].expand(batch, T)
        if past == 0:
            return positions, None
    allowed = allowed | (k_idx[None, :] == q_idx[:, None])[None]  # a query always sees itself
    return positions, allowed[:, None]  # (B or 1, 1, T, S)


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale, computed in fp32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused op instead of five; the scale is applied after the cast back, as in Llama.
        h = F.rms_norm(x.float(), self.weight.shape, eps=self.eps)
        return self.weight * h.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """cos/sin tables (max_positions, head_dim), looked up by position ids.

    `sin` is stored with the sign of Llama's rotate-half folded in (first half negated), so
    rotate_half(x) * sin == roll(x, hd/2) * sin_signed, bit for bit, with one op less.
    """

    def __init__(self, head_dim: int, max_positions: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)  # (P, hd/2)
        self.register_buffer("cos", torch.cat([angles.cos(), angles.cos()], dim=-1), persistent=False)
        self.register_buffer("sin", torch.cat([-angles.sin(), angles.sin()], dim=-1), persistent=False)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, signed sin), each (B, 1, T, hd) in `dtype`: broadcast over heads."""
        return self.cos[positions][:, None].to(dtype), self.sin[positions][:, None].to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, H, T, hd) by the per-position angles cos, signed sin (B, 1, T, hd)."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin


class Attention(nn.Module):
    """Grouped-query causal self-attention with RoPE and optional QK-norm."""

    def __init__(self, cfg: LMConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads = cfg.num_heads, cfg.num_kv_heads
        self.head_dim = cfg.attn_head_dim
        q_dim, kv_dim = cfg.num_heads * self.head_dim, cfg.num_kv_heads * self.head_dim
        bias = cfg.attention_bias
        self.q_proj = nn.Linear(cfg.hidden_size, q_dim, bias=bias)  # Qwen2 has q/k/v biases
        self.k_proj = nn.Linear(cfg.hidden_size, kv_dim, bias=bias)
        self.v_proj = nn.Linear(cfg.hidden_size, kv_dim, bias=bias)
        self.o_proj = nn.Linear(cfg.num_heads * self.head_dim, cfg.hidden_size, bias=False)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
        self.qk_norm = cfg.qk_norm

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (B, T, H*hd), k and v (B, T, KV*hd)."""
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

    def project_out(self, y: torch.Tensor) -> torch.Tensor:
        return self.o_proj(y)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        H, KV, hd = self.num_heads, self.num_kv_heads, self.head_dim
        q, k, v = self.project_qkv(x)
        q, k, v = q.view(B, T, H, hd), k.view(B, T, KV, hd), v.view(B, T, KV, hd)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H or n_kv, T, hd)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (B, n_kv, past+T, hd)
        # enable_gqa shares each kv head with its query group without copying keys/values;
        # without a mask, T > 1 means a causal forward from position 0, T == 1 a decode step.
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None and T > 1, enable_gqa=True
        )  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, -1)  # (B, T, H*hd)
        return self.project_out(y)  # (B, T, C)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: LMConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class LanguageModel(nn.Module):
    """Token embeddings + decoder stack + final norm; returns hidden states (B, T, C)."""

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(cfg.attn_head_dim, cfg.max_position_embeddings, cfg.rope_theta)

    def new_cache(
        self, batch: int, max_len: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> KVCache:
        """An empty cache for `batch` rows of up to `max_len` positions (model device/dtype by default)."""
        w = self.embed_tokens.weight
        return KVCache(
            self.config.num_layers,
            batch,
            self.config.num_kv_heads,
            max_len,
            self.config.attn_head_dim,
            device=device or w.device,
            dtype=dtype or w.dtype,
        )

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        B, T, _ = inputs_embeds.shape
        if segment_ids is not None and cache is not None:
            raise TabVLMError("segment_ids (packed training) cannot be combined with a KV cache")
        past = cache.length if cache is not None else 0
        positions, mask = positions_and_mask(B, T, past, attention_mask, segment_ids, inputs_embeds.device)
        cos, sin = self.rotary_emb(positions, inputs_embeds.dtype)  # (B, 1, T, hd) each
        x = inputs_embeds
        for layer in self.layers:
            x = layer(x, cos, sin, mask, cache)
        if cache is not None:
            cache.advance(T)
        return self.norm(x)  # (B, T, C)
