"""The native engine: BERT-encoder and BitNet-decoder forward passes in C++ on the ternary x int8 kernels.

The extension ``_native`` is built by ``pip install -e .`` when pybind11 and a C++17 compiler are present;
without it everything runs on the torch engine and :func:`native_available` says why.

    ok, reason = native_available()
    enc = NativeEncoder(ternary_model, threads=1)      # BertEncoder / BitNetDecoder with frozen BitLinears
    feats = enc.run([[101, 2023, 102], [101, 102]], "mean")   # float32 [2, hidden]
    hidden = enc.hidden([[101, 2023, 102]])                   # float32 [1, 3, hidden] (pre-pooling)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from ...bert import BertEncoder
from ...bitlinear import BitLinear
from ...bitnet import BitNetDecoder
from ....errors import BitrlError

_HERE = Path(__file__).resolve().parent

try:
    from . import _native  # noqa: F401
    _IMPORT_ERROR: str | None = None
except ImportError as _e:  # not built, or built against something missing
    _native = None
    _status = _HERE / "_native_build_status.txt"
    _built = _status.read_text().strip() if _status.is_file() else ""
    if _built and _built != "ok":
        _IMPORT_ERROR = f"the native extension was not built: {_built}"
    else:
        _IMPORT_ERROR = (f"the native extension bitrl_ros.backbone.engines.native._native cannot be imported ({_e}); "
                         "build it with `pip install --no-build-isolation -e .` (needs pybind11 and a C++17 compiler)")


class NativeEngineError(BitrlError, RuntimeError):
    """The native engine cannot run this model, or is not built."""


def native_available() -> tuple[bool, str]:
    """(True, 'ok: <best ISA>') when the extension imports, else (False, why)."""
    if _native is None:
        return False, _IMPORT_ERROR or "not built"
    isa = _native.best_isa()
    return True, f"ok: kernels {isa}"


def supports(model: nn.Module) -> bool:
    """Whether the native engine has an implementation of this architecture."""
    return isinstance(model, (BertEncoder, BitNetDecoder))


def _require():
    if _native is None:
        raise NativeEngineError(f"native engine unavailable: {_IMPORT_ERROR}")
    return _native


def _ternary(lin: nn.Module, name: str) -> tuple[np.ndarray, float]:
    if not isinstance(lin, BitLinear):
        raise NativeEngineError(
            f"the native engine needs ternary linears, but '{name}' is a {type(lin).__name__} (an fp model such as "
            "minilm-fp32): use engine='torch', or a ternary backbone such as minilm-bitnet-distilled")
    if not lin.frozen:
        raise NativeEngineError(f"the native engine needs frozen BitLinears, but '{name}' is not frozen "
                                "(call .freeze() after training)")
    q, scale = lin.ternary()
    return np.ascontiguousarray(q.detach().cpu().numpy().astype(np.int8)), float(scale)


def _f32(t) -> np.ndarray:
    return np.ascontiguousarray(t.detach().float().cpu().numpy().reshape(-1))


def _bias(lin: nn.Module):
    return None if lin.bias is None else _f32(lin.bias)


def build_native_model(model: nn.Module, threads: int = 1):
    """A ``_native.BertModel`` / ``_native.BitNetModel`` holding ``model``'s weights (ternary linears packed)."""
    nat = _require()
    if isinstance(model, BertEncoder):
        c = model.config
        cfg = nat.BertConfig()
        cfg.vocab_size, cfg.hidden_size, cfg.num_layers = c.vocab_size, c.hidden_size, c.num_layers
        cfg.num_heads, cfg.intermediate_size, cfg.max_position = c.num_heads, c.intermediate_size, c.max_position
        cfg.type_vocab_size, cfg.layer_norm_eps = c.type_vocab_size, c.layer_norm_eps
        linears = {f"layers.{i}.{p}": getattr(layer.attn, p) for i, layer in enumerate(model.layers)
                   for p in ("q", "k", "v", "o")}
        linears.update({f"layers.{i}.{p}": getattr(layer, p) for i, layer in enumerate(model.layers)
                        for p in ("up", "down")})
        packed = {k: _ternary(v, k) for k, v in linears.items()}  # check every linear before building anything
        m = nat.BertModel(cfg, threads)
        e = model.embeddings
        m.set_tensor("word", -1, _f32(e.word.weight))
        m.set_tensor("position", -1, _f32(e.position.weight))
        m.set_tensor("token_type", -1, _f32(e.token_type.weight))
        m.set_tensor("emb_norm.weight", -1, _f32(e.norm.weight))
        m.set_tensor("emb_norm.bias", -1, _f32(e.norm.bias))
        for i, layer in enumerate(model.layers):
            for norm in ("attn_norm", "ffn_norm"):
                mod = getattr(layer, norm)
                if abs(mod.eps - c.layer_norm_eps) > 1e-20:
                    raise NativeEngineError(f"layers.{i}.{norm}: eps {mod.eps} differs from the config's")
                m.set_tensor(f"{norm}.weight", i, _f32(mod.weight))
                m.set_tensor(f"{norm}.bias", i, _f32(mod.bias))
            for p in ("q", "k", "v", "o", "up", "down"):
                key = f"layers.{i}.{p}"
                q, s = packed[key]
                m.set_linear(p, i, q, s, _bias(linears[key]))
    elif isinstance(model, BitNetDecoder):
        c = model.config
        cfg = nat.BitNetConfig()
        cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size = c.vocab_size, c.hidden_size, c.intermediate_size
        cfg.num_layers, cfg.num_heads = c.num_hidden_layers, c.num_attention_heads
        cfg.num_kv_heads = c.num_key_value_heads
        cfg.rms_norm_eps, cfg.rope_theta, cfg.max_position = c.rms_norm_eps, c.rope_theta, c.max_position_embeddings
        names = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
                 "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
        linears = {(i, p): getattr(getattr(layer, parent), p) for i, layer in enumerate(model.layers)
                   for p, parent in names.items()}
        packed = {k: _ternary(v, f"layers.{k[0]}.{names[k[1]]}.{k[1]}") for k, v in linears.items()}
        m = nat.BitNetModel(cfg, threads)
        m.set_tensor("embed_tokens", -1, _f32(model.embed_tokens.weight))
        m.set_tensor("norm", -1, _f32(model.norm.weight))
        for i, layer in enumerate(model.layers):
            m.set_tensor("input_layernorm", i, _f32(layer.input_layernorm.weight))
            m.set_tensor("post_attention_layernorm", i, _f32(layer.post_attention_layernorm.weight))
            m.set_tensor("attn_sub_norm", i, _f32(layer.self_attn.attn_sub_norm.weight))
            m.set_tensor("ffn_sub_norm", i, _f32(layer.mlp.ffn_sub_norm.weight))
            for p in names:
                q, s = packed[(i, p)]
                if linears[(i, p)].bias is not None:
                    raise NativeEngineError(f"layers.{i}.{p}: BitNet linears have no bias")
                m.set_linear(p, i, q, s, None)
    else:
        raise NativeEngineError(f"the native engine has no implementation of {type(model).__name__}; "
                                "it runs BertEncoder and BitNetDecoder")
    m.check_ready()
    return m


class NativeEncoder:
    """Engine object for Backbone: token id lists -> pooled features, on the native model."""

    name = "native"

    def __init__(self, model: nn.Module, threads: int = 1):
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.native = build_native_model(model, threads=threads)
        self.hidden_size = self.native.hidden_size

    @property
    def threads(self) -> int:
        return self.native.threads

    @threads.setter
    def threads(self, n: int) -> None:
        self.native.threads = int(n)

    @staticmethod
    def _pad(seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int32, count=len(seqs))
        if not len(seqs) or lengths.min() < 1:
            raise ValueError("cannot encode an empty token sequence")
        ids = np.zeros((len(seqs), int(lengths.max())), dtype=np.int32)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s
        return ids, lengths

    def run(self, seqs: list[list[int]], pooling: str) -> np.ndarray:
        ids, lengths = self._pad(seqs)
        return self.native.forward(ids, lengths, pooling)

    def hidden(self, seqs: list[list[int]]) -> np.ndarray:
        """Pre-pooling hidden states float32 [B, T_max, hidden], zeros at padding."""
        ids, lengths = self._pad(seqs)
        return self.native.forward(ids, lengths, "none")

    def stats(self) -> dict:
        return {"threads": self.native.threads, "isa": self.native.isa, "scratch_bytes": self.native.scratch_bytes(),
                "scratch_grows": self.native.scratch_grows(), "weight_bytes": self.native.weight_bytes()}
