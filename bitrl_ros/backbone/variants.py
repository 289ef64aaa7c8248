"""The teacher's precision variants (fp16, int8, int4-g32, nvfp4), run by the torch engine as quantize-dequantize.

Like the PTQ ternary copy (teacher.ternarize_ptq), a variant quantizes the six linear layers of every encoder layer
and keeps the embeddings, LayerNorms and biases in float32, so the variants differ only in the format of those
weights (precision.py). What each computes:

  fp16      weights and the linear layers' inputs rounded to fp16, products summed in float32 (as fp16 GEMMs
            accumulate).
  int8      W8A8: per-output-channel int8 weights and per-token absmax int8 inputs (the ternary layers' activation
            quantizer), an exact integer product rescaled in float32.
  int4-g32  W4A16: group-wise int4 weights, full-precision inputs.
  nvfp4     W4A16 in NVFP4 (E2M1 values, E4M3 block scales, float32 tensor scale), full-precision inputs.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
import torch.nn.functional as F

from .bitlinear import BitLinear, fake_quant_activations
from .precision import dequantize, quantize, WEIGHT_FORMATS

ACTIVATIONS = {"fp16": "fp16", "int8": "int8", "int4-g32": "fp32", "nvfp4": "fp32"}
FLOAT_BYTES = 4


class QuantizedLinear(nn.Linear):
    """A frozen linear layer computing with a weight stored in ``weight_format`` (dequantized once), its inputs
    rounded as ACTIVATIONS[weight_format] says. ``stored_bytes``: what the packed weight takes.
    """

    def __init__(self, linear: nn.Linear, weight_format: str):
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None)
        packed = quantize(linear.weight.detach().float().numpy(), weight_format)
        with torch.no_grad():
            self.weight.copy_(torch.from_numpy(dequantize(packed)))
            if linear.bias is not None:
                self.bias.copy_(linear.bias)
        self.requires_grad_(False)
        self.weight_format = weight_format
        self.stored_bytes = packed.nbytes()
        # The int8 weights themselves, for the native engine's int8 path (the other formats run in torch only).
        self.packed = packed if weight_format == "int8" else None
        self.activations = ACTIVATIONS[weight_format]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activations == "int8":
            x = fake_quant_activations(x)
        elif self.activations == "fp16":
            x = x.half().float()
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", weights={self.weight_format}, activations={self.activations}"


def quantize_linears(model: nn.Module, weight_format: str) -> nn.Module:
    """A copy of ``model`` with every plain nn.Linear replaced by a QuantizedLinear in ``weight_format``."""
    if weight_format not in WEIGHT_FORMATS:
        raise ValueError(f"unknown weight format {weight_format!r}; expected one of {', '.join(WEIGHT_FORMATS)}")
    out = copy.deepcopy(model)
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, QuantizedLinear(child, weight_format))
    out.eval().requires_grad_(False)
    return out


def storage(model: nn.Module) -> dict:
    """What the model takes stored in its formats: the linear weights as packed (ternary: 2 bits a weight plus a
    float32 scale per tensor; fp32 linears: 4 bytes), every other parameter (embeddings, norms, biases) in float32.
    """
    linear_weights = linear_bytes = 0
    weight_ids = set()
    for m in model.modules():
        if isinstance(m, nn.Linear):
            n = m.weight.numel()
            linear_weights += n
            weight_ids.add(id(m.weight))
            if isinstance(m, QuantizedLinear):
                linear_bytes += m.stored_bytes
            elif isinstance(m, BitLinear) and m.frozen:
                linear_bytes += (n + 3) // 4 + FLOAT_BYTES
            else:
                linear_bytes += n * FLOAT_BYTES
    other = sum(p.numel() for p in model.parameters() if id(p) not in weight_ids) * FLOAT_BYTES
    return {"linear_weights": linear_weights, "linear_bytes": linear_bytes,
            "bits_per_linear_weight": 8.0 * linear_bytes / max(linear_weights, 1), "other_bytes": other,
            "total_bytes": linear_bytes + other}
