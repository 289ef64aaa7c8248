"""The torch engine (the reference, the only one that trains) and the engine choice for a torch module."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..bitlinear import BitLinear
from ...settings import ENGINES


class TorchEngine:
    """The model's own torch forward pass (right padding + attention mask), pooled in torch."""

    name = "torch"

    def __init__(self, model: nn.Module, pad_id: int):
        self.model = model
        self.pad_id = pad_id

    def _forward(self, seqs: list[list[int]]):
        lengths = torch.tensor([len(s) for s in seqs])
        ids = torch.full((len(seqs), int(lengths.max())), self.pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask = (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()
        with torch.inference_mode():
            return self.model(ids, attention_mask=mask), mask, lengths

    def _norms(self) -> dict[str, nn.Module]:
        from ..bitnet import RMSNorm

        return {name: m for name, m in self.model.named_modules() if isinstance(m, (nn.LayerNorm, RMSNorm))}

    def norm_gain_keys(self) -> list[str]:
        """Module names of every normalization layer (LayerNorm / RMSNorm) whose weight is a gain."""
        return [name for name, m in self._norms().items() if getattr(m, "weight", None) is not None]

    def get_norm_gain(self, key: str) -> np.ndarray:
        return self._norms()[key].weight.detach().float().numpy().copy()

    def set_norm_gain(self, key: str, gain: np.ndarray) -> None:
        with torch.no_grad():
            self._norms()[key].weight.copy_(torch.from_numpy(np.asarray(gain, dtype=np.float32)))

    def hidden(self, seqs: list[list[int]]) -> np.ndarray:
        """Last-layer token states float32 [B, T_max, hidden], zeros at padding (as the native engine)."""
        hidden, mask, _ = self._forward(seqs)
        return (hidden * mask[..., None].to(hidden.dtype)).float().numpy().copy()

    def run(self, seqs: list[list[int]], pooling: str) -> np.ndarray:
        hidden, mask, lengths = self._forward(seqs)
        with torch.inference_mode():
            if pooling == "mean":
                m = mask[..., None].to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
            elif pooling == "cls":
                pooled = hidden[:, 0]
            else:
                pooled = hidden[torch.arange(len(seqs)), lengths - 1]
        return pooled.float().numpy().copy()


def is_ternary(model: nn.Module) -> bool:
    """Whether every linear layer of ``model`` is a frozen BitLinear."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return bool(linears) and all(isinstance(m, BitLinear) and m.frozen for m in linears)


def native_runs(model: nn.Module) -> bool:
    """Whether the native engine runs every linear layer of ``model``: frozen BitLinears, or (in a BERT
    encoder) int8 QuantizedLinears.
    """
    from ..bert import BertEncoder
    from ..variants import QuantizedLinear

    def runs(m):
        if isinstance(m, BitLinear):
            return m.frozen
        return isinstance(m, QuantizedLinear) and m.weight_format == "int8" and isinstance(model, BertEncoder)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return bool(linears) and all(runs(m) for m in linears)


def make_engine(model: nn.Module, pad_id: int, engine: str = "auto", threads: int = 1):
    """The engine object for ``model``: see the module docstring for the choices."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")
    if engine == "torch":
        return TorchEngine(model, pad_id)
    from . import native
    from .native.from_torch import supports

    if engine == "native":
        return native.NativeEncoder(model, threads=threads)
    ok, _ = native.native_available()
    if ok and native_runs(model) and supports(model):
        return native.NativeEncoder(model, threads=threads)
    return TorchEngine(model, pad_id)
