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
keys/values for every query head; RoPE is one `roll` and two multiplies. Without autograd on
CPU, q/k/v and gate/up run as one matmul each against packed, transposed copies of their
weights (`PackedLinears`), and so does the head: fewer, larger matmuls in the layout BLAS reads
fastest at batch 1 (the speed-up is measured in docs/BENCHMARKS.md).
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


class PackedLinears:
    """One (in, sum of outs) contiguous copy of several Linear layers' weights (and biases) for
    inference on CPU: `x @ W` on a row-major (in, out) matrix is the layout BLAS reads fastest at
    batch 1, and one matmul replaces three (q/k/v) or two (gate/up). The copy is rebuilt whenever
    a weight changes (its storage or version counter), so training, `load_state_dict` and `.to()`
    never leave it stale. Used only when autograd is off and the input is on CPU (`active`).

    `int8 = True` keeps the copy as weight-only int8 instead (symmetric, one scale per output
    channel: |error| <= scale / 2 per weight) and multiplies with bfloat16 activations through
    `torch._weight_int8pack_mm`: a quarter of fp32's bytes to read at batch 1, where a decode step
    is bound by reading weights (docs/BENCHMARKS.md). Off by default: outputs are close to, not
    equal to, float32's."""

    def __init__(self, *linears: nn.Linear):
        if len({lin.bias is None for lin in linears}) > 1:
            raise TabVLMError("PackedLinears: all or none of the packed layers need a bias")
        self.linears = linears
        self.int8 = False
        self.key: tuple = ()
        self.weight: torch.Tensor | None = None
        self.scales: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None

    @staticmethod
    def active(x: torch.Tensor) -> bool:
        return x.device.type == "cpu" and not torch.is_grad_enabled()

    def _pack(self) -> None:
        weight = torch.cat([lin.weight for lin in self.linears]).detach()  # (out, in)
        has_bias = self.linears[0].bias is not None
        self.bias = torch.cat([lin.bias for lin in self.linears]).detach() if has_bias else None
        if self.int8:
            w = weight.float()
            # the kernel takes bf16 scales: quantise against the rounded ones (error <= scale / 2)
            scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-30).to(torch.bfloat16)  # (out,)
            q = torch.round(w / scales.float()[:, None]).clamp(-127, 127)
            self.weight, self.scales = q.to(torch.int8).contiguous(), scales  # (out, in), (out,)
        else:
            self.weight, self.scales = weight.t().contiguous(), None  # (in, out)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        params = [p for lin in self.linears for p in (lin.weight, lin.bias) if p is not None]
        key = (self.int8, *((p.data_ptr(), p._version, p.dtype) for p in params))
        if key != self.key:
            self._pack()
            self.key = key
        if self.int8:
            flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)  # (M, in)
            y = torch._weight_int8pack_mm(flat, self.weight, self.scales).to(x.dtype)
            y = y.view(*x.shape[:-1], -1)
        else:
            y = x @ self.weight
        return y if self.bias is None else y + self.bias


def packed_linears(module: nn.Module) -> list[PackedLinears]:
    """Every PackedLinears held by `module` or its submodules."""
    return [v for m in module.modules() for v in vars(m).values() if isinstance(v, PackedLinears)]


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
        self.packed_qkv = PackedLinears(self.q_proj, self.k_proj, self.v_proj)
        self.packed_o = PackedLinears(self.o_proj)

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
        packed = PackedLinears.active(x)
        if packed:
            q, k, v = self.packed_qkv(x).split([H * hd, KV * hd, KV * hd], dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
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
        return self.packed_o(y) if packed else self.o_proj(y)  # (B, T, C)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.packed_gate_up = PackedLinears(self.gate_proj, self.up_proj)
        self.packed_down = PackedLinears(self.down_proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if PackedLinears.active(x):
            gate, up = self.packed_gate_up(x).chunk(2, dim=-1)
            return self.packed_down(F.silu(gate) * up)
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
