"""BitNet b1.58 quantization: absmean ternary weights, per-token absmax int8 activations, 2-bit packing."""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .model_format import pack_ternary_array, unpack_ternary_array

WEIGHT_EPS = 1e-5
ACT_EPS = 1e-5


def absmean_scale(weight: torch.Tensor) -> torch.Tensor:
    """One scale per tensor: mean |W|, clamped away from zero (0-dim float32)."""
    return weight.detach().abs().mean().float().clamp(min=WEIGHT_EPS)


def ternarize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmean ternarization: (int8 values in {-1, 0, 1}, float32 scale) with W ~= q * scale."""
    scale = absmean_scale(weight)
    q = torch.round(torch.clamp(weight.detach().float() / scale, -1.0, 1.0)).to(torch.int8)
    return q, scale


def quantize_activations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token absmax int8: (int8 values, float32 scale of shape [..., 1]) with x ~= xq / scale."""
    x_scale = 127.0 / x.detach().abs().amax(dim=-1, keepdim=True).float().clamp(min=ACT_EPS)
    xq = torch.round(torch.clamp(x.float() * x_scale, -128.0, 127.0)).to(torch.int8)
    return xq, x_scale


def fake_quant_activations(x: torch.Tensor) -> torch.Tensor:
    """int8 round trip in float, with a straight-through gradient when autograd is recording."""
    x_scale = 127.0 / x.detach().abs().amax(dim=-1, keepdim=True).clamp(min=ACT_EPS)
    deq = torch.round(torch.clamp(x * x_scale, -128.0, 127.0)) / x_scale
    if torch.is_grad_enabled() and x.requires_grad:
        return x + (deq - x).detach()
    return deq


def fake_quant_weight(weight: torch.Tensor) -> torch.Tensor:
    """Ternary round trip (q * scale) in float, straight-through when autograd is recording."""
    q, scale = ternarize(weight)
    deq = q.to(weight.dtype) * scale.to(weight.dtype)
    if torch.is_grad_enabled() and weight.requires_grad:
        return weight + (deq - weight).detach()
    return deq


class BitLinear(nn.Linear):
    """nn.Linear with ternary weights and int8 activations (fake-quantized, so it trains with STE).

    After ``freeze()`` the ternary weight is computed once and cached; every forward then uses the cache
    (weights no longer change, so there is nothing to re-quantize). Activations are still quantized per call.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.frozen = False
        self.register_buffer("weight_q", None, persistent=False)
        self.register_buffer("weight_scale", None, persistent=False)
        self.register_buffer("_w_eff", None, persistent=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "BitLinear":
        """A BitLinear carrying a copy of ``linear``'s weight and bias (not yet frozen)."""
        out = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                  device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(linear.weight)
            if linear.bias is not None:
                out.bias.copy_(linear.bias)
        return out

    def ternary(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(int8 {-1,0,1} [out, in], float32 scalar scale): the cached pair when frozen, else from the weight."""
        if self.frozen:
            return self.weight_q, self.weight_scale
        return ternarize(self.weight)

    def freeze(self) -> "BitLinear":
        """Quantize the weight once, cache it, and stop gradients to this layer."""
        q, scale = ternarize(self.weight)
        return self.set_ternary(q, scale)

    def set_ternary(self, q: torch.Tensor, scale: torch.Tensor) -> "BitLinear":
        """Install an exact ternary weight (e.g. from a model file) and freeze."""
        if q.shape != self.weight.shape:
            raise ValueError(f"ternary weight shape {tuple(q.shape)} != {tuple(self.weight.shape)}")
        dtype = self.weight.dtype
        self.weight_q = q.to(torch.int8).contiguous()
        self.weight_scale = scale.detach().float().reshape(())
        self._w_eff = self.weight_q.to(dtype) * self.weight_scale.to(dtype)
        with torch.no_grad():
            # Keep the float weight consistent with what the layer computes.
            self.weight.copy_(self._w_eff)
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.frozen = True
        return self

    def unfreeze(self) -> "BitLinear":
        self.frozen = False
        self.weight_q = self.weight_scale = self._w_eff = None
        self.weight.requires_grad_(True)
        if self.bias is not None:
            self.bias.requires_grad_(True)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self._w_eff if self.frozen else fake_quant_weight(self.weight)
        return F.linear(fake_quant_activations(x), w, self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", frozen={self.frozen}"


def pack_ternary(t: torch.Tensor) -> torch.Tensor:
    """Pack an int8 {-1,0,1} matrix [out, in] into uint8 [out, ceil(in/4)] (model_format.pack_ternary_array: each
    weight the 2-bit code value+1, four per byte, the first weight in the lowest bits; padding codes 0).
    """
    if t.dim() != 2:
        raise ValueError(f"pack_ternary expects a 2-D tensor, got shape {tuple(t.shape)}")
    return torch.from_numpy(pack_ternary_array(t.detach().to(torch.int8).cpu().numpy()))


def unpack_ternary(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """Inverse of ``pack_ternary``: uint8 [out, ceil(in/4)] -> int8 {-1,0,1} [out, in_features]."""
    if packed.dim() != 2 or packed.dtype != torch.uint8:
        raise ValueError(f"unpack_ternary expects a 2-D uint8 tensor, got {packed.dtype} {tuple(packed.shape)}")
    return torch.from_numpy(unpack_ternary_array(packed.cpu().numpy(), in_features))
