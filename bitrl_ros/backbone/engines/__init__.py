"""Inference engines behind a Backbone.

``torch``: the reference (fake-quantized ternary or fp32 modules, the only engine that trains).
``native``: the C++ engine (``engines.native``): the whole forward pass on packed ternary weights (or, in a BERT
encoder, per-channel int8 ones) and int8 activations; only for models whose linears are all frozen BitLinears or
int8 QuantizedLinears (torch_engine.native_runs).
``auto``: native when the native engine runs the model and the extension is built, else torch.

An engine has ``name``, ``run(seqs, pooling) -> np.ndarray float32 [len(seqs), hidden]`` (token id lists,
unpadded; pooling mean / cls / last) and ``hidden(seqs) -> float32 [len(seqs), T_max, hidden]`` (per-token
last-layer states, zeros at padding; what the per-field readout averages).

This package imports no torch: ``TorchEngine``, ``is_ternary`` and ``make_engine`` (torch_engine.py) load it when
first used, so the native path (a model file straight into the C++ engine) stays torch-free.
"""

from __future__ import annotations

_TORCH_NAMES = ("TorchEngine", "is_ternary", "make_engine")


def __getattr__(name):
    if name in _TORCH_NAMES:
        from . import torch_engine

        return getattr(torch_engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
