"""BERT-style post-LN encoder (the all-MiniLM-L6-v2 shape), with plain or BitLinear projections."""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from .arch_config import BERT_ENCODER, EncoderConfig, LINEAR_KINDS  # noqa: F401 (re-exported)
from .bitlinear import BitLinear
from ..errors import ModelFileError


def make_linear(kind: str, in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    if kind == "bitlinear":
        return BitLinear(in_features, out_features, bias)
    return nn.Linear(in_features, out_features, bias)


class Embeddings(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position = nn.Embedding(cfg.max_position, cfg.hidden_size)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word(input_ids) + self.position(positions)[None] + self.token_type(token_type_ids)
        return self.norm(x)


class SelfAttention(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        h = cfg.hidden_size
        self.num_heads = cfg.num_heads
        self.head_dim = h // cfg.num_heads
        self.q = make_linear(cfg.linear, h, h)
        self.k = make_linear(cfg.linear, h, h)
        self.v = make_linear(cfg.linear, h, h)
        self.o = make_linear(cfg.linear, h, h)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + additive_mask
        ctx = torch.softmax(scores, dim=-1) @ v
        return self.o(ctx.transpose(1, 2).reshape(b, t, h))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.attn = SelfAttention(cfg)
        self.attn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.up = make_linear(cfg.linear, cfg.hidden_size, cfg.intermediate_size)
        self.down = make_linear(cfg.linear, cfg.intermediate_size, cfg.hidden_size)
        self.ffn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        x = self.attn_norm(x + self.attn(x, additive_mask))
        return self.ffn_norm(x + self.down(F.gelu(self.up(x))))


class BertEncoder(nn.Module):
    architecture = BERT_ENCODER

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.config = cfg
        self.hidden_size = cfg.hidden_size
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, output_hidden_states: bool = False):
        """input_ids [B, T] -> hidden states [B, T, H]; with output_hidden_states also the tuple of
        (embedding output, layer 1, ..., layer N) states.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        # [B, 1, 1, T]: 0 where a key may be attended, a large negative where it is padding.
        additive = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        states = [x]
        for layer in self.layers:
            x = layer(x, additive)
            states.append(x)
        return (x, tuple(states)) if output_hidden_states else x


def _hf_key_map(num_layers: int) -> dict[str, str]:
    """Our parameter name -> Hugging Face BertModel name."""
    m = {
        "embeddings.word.weight": "embeddings.word_embeddings.weight",
        "embeddings.position.weight": "embeddings.position_embeddings.weight",
        "embeddings.token_type.weight": "embeddings.token_type_embeddings.weight",
        "embeddings.norm.weight": "embeddings.LayerNorm.weight",
        "embeddings.norm.bias": "embeddings.LayerNorm.bias",
    }
    parts = {
        "attn.q": "attention.self.query", "attn.k": "attention.self.key", "attn.v": "attention.self.value",
        "attn.o": "attention.output.dense", "attn_norm": "attention.output.LayerNorm",
        "up": "intermediate.dense", "down": "output.dense", "ffn_norm": "output.LayerNorm",
    }
    for i in range(num_layers):
        for ours, theirs in parts.items():
            for p in ("weight", "bias"):
                m[f"layers.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
    return m


def load_hf_bert_state_dict(model: BertEncoder, state_dict: dict[str, torch.Tensor],
                            source: str = "state dict") -> None:
    """Copy a Hugging Face BertModel state dict (keys with or without a 'bert.' prefix) into ``model``.

    The pooler and position_ids buffer are ignored. Raises ModelFileError naming a missing or mismatched key.
    """
    sd = {k.removeprefix("bert."): v for k, v in state_dict.items()}
    params = dict(model.named_parameters())
    with torch.no_grad():
        for ours, theirs in _hf_key_map(model.config.num_layers).items():
            if theirs not in sd:
                raise ModelFileError(f"{source}: missing tensor '{theirs}'")
            src, dst = sd[theirs], params[ours]
            if tuple(src.shape) != tuple(dst.shape):
                raise ModelFileError(
                    f"{source}: tensor '{theirs}' has shape {tuple(src.shape)}, expected {tuple(dst.shape)}")
            dst.copy_(src.to(dst.dtype))
