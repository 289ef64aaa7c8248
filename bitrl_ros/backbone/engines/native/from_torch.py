"""A native model from a torch BertEncoder / BitNetDecoder whose linears are frozen BitLinears (the PTQ teacher,
a freshly distilled student, tests' small models). The model-file path (from_file.py) needs no torch at all.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from . import assemble, linear_plan, NativeEngineError
from ...bert import BertEncoder
from ...bitlinear import BitLinear
from ...bitnet import BitNetDecoder


def supports(model: nn.Module) -> bool:
    """Whether the native engine has an implementation of this architecture."""
    return isinstance(model, (BertEncoder, BitNetDecoder))


def _int8_module(lin: nn.Module):
    """The module if it is an int8 QuantizedLinear (the INT8 teacher variant), else None."""
    from ...variants import QuantizedLinear

    return lin if isinstance(lin, QuantizedLinear) and lin.weight_format == "int8" else None


def _ternary_module(lin: nn.Module, name: str) -> BitLinear:
    if _int8_module(lin) is not None:
        return lin
    if not isinstance(lin, BitLinear):
        raise NativeEngineError(
            f"the native engine needs ternary linears, but '{name}' is a {type(lin).__name__} (an fp model such as "
            "minilm-fp32): use engine='torch', or a ternary backbone such as minilm-bitnet-distilled")
    if not lin.frozen:
        raise NativeEngineError(f"the native engine needs frozen BitLinears, but '{name}' is not frozen "
                                "(call .freeze() after training)")
    return lin


def _ternary(lin: nn.Module, name: str) -> tuple[np.ndarray, float | np.ndarray, np.ndarray | None]:
    """(int8 weight, scale, bias): a ternary weight and its tensor scale, or an int8 one and its row scales."""
    bias = None if lin.bias is None else lin.bias.detach().float().cpu().numpy()
    if _int8_module(lin) is not None:
        return lin.packed.arrays["q"], lin.packed.arrays["scale"], bias
    q, scale = _ternary_module(lin, name).ternary()
    return q.detach().cpu().numpy().astype(np.int8), float(scale), bias


def _check_norm_eps(model: nn.Module) -> None:
    """The native model takes one eps from the config; a hand-built module could differ."""
    eps = getattr(model.config, "layer_norm_eps", None)
    for name, mod in model.named_modules():
        if isinstance(mod, nn.LayerNorm) and eps is not None and abs(mod.eps - eps) > 1e-20:
            raise NativeEngineError(f"{name}: eps {mod.eps} differs from the config's")


def build_native_model(model: nn.Module, threads: int = 1):
    """A ``_native.BertModel`` / ``_native.BitNetModel`` holding ``model``'s weights (ternary linears packed)."""
    if not supports(model):
        raise NativeEngineError(f"the native engine has no implementation of {type(model).__name__}; "
                                "it runs BertEncoder and BitNetDecoder")
    _check_norm_eps(model)
    modules = dict(model.named_modules())
    for name, _, _ in linear_plan(model.architecture, model.config).values():  # refuse before building anything
        _ternary_module(modules[name], name)
        if _int8_module(modules[name]) is not None and not isinstance(model, BertEncoder):
            raise NativeEngineError(f"'{name}': the native engine runs int8 linears in BERT encoders only")
    state = model.state_dict()
    return assemble(model.architecture, model.config, lambda key: state[key].detach().float().cpu().numpy(),
                    lambda name, out_f, in_f: _ternary(modules[name], name), threads)
