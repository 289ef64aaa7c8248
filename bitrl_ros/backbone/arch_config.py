"""The architectures' configurations and names, free of torch: what a model directory's config.json holds, read
by the torch modules (bert.py, bitnet.py) and by the native engine's file loader alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

BERT_ENCODER = "bert-encoder"
BITNET_DECODER = "bitnet-decoder"
LINEAR_KINDS = ("fp", "bitlinear")


class _DictConfig:
    """to_dict / from_dict of a config dataclass, refusing unknown fields."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**d)


@dataclass
class EncoderConfig(_DictConfig):
    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_position: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    linear: str = "fp"

    def __post_init__(self):
        if self.linear not in LINEAR_KINDS:
            raise ValueError(f"linear must be one of {LINEAR_KINDS}, got {self.linear!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")

    @classmethod
    def from_hf(cls, hf: dict, linear: str = "fp") -> "EncoderConfig":
        """From a Hugging Face BertConfig dict (config.json)."""
        if hf.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"only hidden_act 'gelu' is supported, got {hf.get('hidden_act')!r}")
        return cls(
            vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
            max_position=hf["max_position_embeddings"], type_vocab_size=hf.get("type_vocab_size", 2),
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12), linear=linear,
        )


@dataclass
class DecoderConfig(_DictConfig):
    vocab_size: int = 128256
    hidden_size: int = 2560
    intermediate_size: int = 6912
    num_hidden_layers: int = 30
    num_attention_heads: int = 20
    num_key_value_heads: int = 5
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    max_position_embeddings: int = 4096
    hidden_act: str = "relu2"
    linear: str = "bitlinear"

    def __post_init__(self):
        if self.hidden_act != "relu2":
            raise ValueError(f"only hidden_act 'relu2' is supported, got {self.hidden_act!r}")
        if self.linear not in LINEAR_KINDS:
            raise ValueError(f"linear must be one of {LINEAR_KINDS}, got {self.linear!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be divisible by num_key_value_heads")
        if (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError("head dimension must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def bitnet_2b4t_config() -> DecoderConfig:
    """microsoft/bitnet-b1.58-2B-4T."""
    return DecoderConfig()


def bitnet_tiny_config() -> DecoderConfig:
    """A few-thousand-parameter decoder of the same shape family, for tests."""
    return DecoderConfig(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         rope_theta=10000.0)


CONFIGS = {BERT_ENCODER: EncoderConfig, BITNET_DECODER: DecoderConfig}
