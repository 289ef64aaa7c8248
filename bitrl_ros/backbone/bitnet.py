"""BitNet b1.58 decoder (the microsoft/bitnet-b1.58-2B-4T architecture), parameter names as in HF BitNet."""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from .arch_config import (bitnet_2b4t_config, BITNET_DECODER, bitnet_tiny_config,  # noqa: F401 (re-exported)
                          DecoderConfig)
from .bert import make_linear


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """Map positions [B, T] -> cos, sin [B, 1, T, head_dim] (frequencies duplicated for rotate-half)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim))
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        d, hd = cfg.hidden_size, cfg.head_dim
        self.q_proj = make_linear(cfg.linear, d, cfg.num_attention_heads * hd, bias=False)
        self.k_proj = make_linear(cfg.linear, d, cfg.num_key_value_heads * hd, bias=False)
        self.v_proj = make_linear(cfg.linear, d, cfg.num_key_value_heads * hd, bias=False)
        self.o_proj = make_linear(cfg.linear, cfg.num_attention_heads * hd, d, bias=False)
        self.attn_sub_norm = RMSNorm(d, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, additive_mask):
        cfg = self.cfg
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, cfg.num_attention_heads, cfg.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, cfg.num_key_value_heads, cfg.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, cfg.num_key_value_heads, cfg.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # Grouped-query attention: query head h reads KV head h // n_rep.
        n_rep = cfg.num_attention_heads // cfg.num_key_value_heads
        k = k.repeat_interleave(n_rep, dim=1)
        v = v.repeat_interleave(n_rep, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(cfg.head_dim) + additive_mask
        ctx = (torch.softmax(scores.float(), dim=-1).to(v.dtype) @ v).transpose(1, 2).reshape(b, t, -1)
        return self.o_proj(self.attn_sub_norm(ctx))


class MLP(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.gate_proj = make_linear(cfg.linear, cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = make_linear(cfg.linear, cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = make_linear(cfg.linear, cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.ffn_sub_norm = RMSNorm(cfg.intermediate_size, cfg.rms_norm_eps)

    def forward(self, x):
        return self.down_proj(self.ffn_sub_norm(F.relu(self.gate_proj(x)).square() * self.up_proj(x)))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, additive_mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, additive_mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class BitNetDecoder(nn.Module):
    architecture = BITNET_DECODER

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.config = cfg
        self.hidden_size = cfg.hidden_size
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                output_hidden_states: bool = False):
        """input_ids [B, T] -> final-norm hidden states [B, T, H].

        Positions count only non-padding tokens, so left- and right-padded batches give the same states at
        real tokens as unpadded inputs. With output_hidden_states also returns (embeddings, layer 1..N) states.
        """
        b, t = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = attention_mask.bool()
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        x = self.embed_tokens(input_ids)
        cos, sin = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta, x.dtype)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        allowed = causal[None, None] & mask[:, None, None, :]
        additive = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device)
        additive.masked_fill_(~allowed, torch.finfo(x.dtype).min)
        states = [x]
        for layer in self.layers:
            x = layer(x, cos, sin, additive)
            states.append(x)
        x = self.norm(x)
        return (x, tuple(states)) if output_hidden_states else x
