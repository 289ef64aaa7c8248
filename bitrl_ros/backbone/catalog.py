"""The backbone ids and where each one's tokenizer is, without the engines (registry.py loads the backbones):
a process that only tokenizes (the state_serializer node) imports this, not the registry.
"""
from __future__ import annotations

from pathlib import Path

from .locations import shipped_model_dir, teacher_dir
from .tokenizer import Tokenizer
from ..settings import DEFAULT_BACKBONE

# Model directories shipped with the package (under models/ in the source tree, share/bitrl_ros/models installed).
SHIPPED_MODELS = (DEFAULT_BACKBONE,)
# The default model's architecture and tokenizer with random ternary weights (seeded): what pre-training buys.
RANDOM_TERNARY = "minilm-ternary-random"
# The teacher's quantize-dequantize precision variants (variants.py), by id: the weight format of their linears.
PRECISION_VARIANTS = {"minilm-fp16": "fp16", "minilm-int8": "int8", "minilm-int4-g32": "int4-g32",
                      "minilm-nvfp4": "nvfp4"}
TEACHER_DERIVED = ("minilm-fp32", "minilm-ternary-ptq", *PRECISION_VARIANTS)
BACKBONE_IDS = (*SHIPPED_MODELS, *TEACHER_DERIVED, RANDOM_TERNARY, "mlp")


def load_tokenizer(backbone_id: str, plain_python: bool = False) -> Tokenizer | None:
    """The tokenizer of a backbone without loading its weights (for the state_serializer stage); plain_python:
    see Tokenizer.
    """
    if backbone_id == "mlp":
        return None
    if backbone_id in TEACHER_DERIVED:
        return Tokenizer(teacher_dir() / "tokenizer.json", plain_python)
    if backbone_id in SHIPPED_MODELS or backbone_id == RANDOM_TERNARY:
        return Tokenizer(shipped_model_dir(backbone_id if backbone_id in SHIPPED_MODELS else DEFAULT_BACKBONE)
                         / "tokenizer.json", plain_python)
    if Path(backbone_id).is_dir():
        return Tokenizer(Path(backbone_id) / "tokenizer.json", plain_python)
    raise ValueError(f"unknown backbone {backbone_id!r}; valid ids: {', '.join(BACKBONE_IDS)} "
                     f"or the path of a model directory")
