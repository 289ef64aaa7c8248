"""The native engine: BERT-encoder and BitNet-decoder forward passes in C++ on the ternary x int8 kernels.

The extension ``_native`` is built by ``pip install -e .`` when pybind11 and a C++17 compiler are present;
without it everything runs on the torch engine and :func:`native_available` says why. This module never imports
torch: a model comes either from a model directory (``from_file.load_native_model``, how a node that only encodes
loads the shipped model) or from a torch module (``from_torch.build_native_model``); both fill the C++ model
through :func:`assemble`.

    ok, reason = native_available()
    enc = NativeEncoder(ternary_model, threads=1)      # BertEncoder / BitNetDecoder with frozen BitLinears
    enc = NativeEncoder(load_native_model(directory))  # or straight from a model directory
    feats = enc.run([[101, 2023, 102], [101, 102]], "mean")   # float32 [2, hidden]
    hidden = enc.hidden([[101, 2023, 102]])                   # float32 [1, 3, hidden] (pre-pooling)
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ...arch_config import BERT_ENCODER, BITNET_DECODER
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


def require_native():
    """The extension module, or NativeEngineError saying why it is unavailable."""
    if _native is None:
        raise NativeEngineError(f"native engine unavailable: {_IMPORT_ERROR}")
    return _native


BERT_LINEARS = ("q", "k", "v", "o", "up", "down")
BITNET_LINEARS = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
                  "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


def _check_architecture(arch: str) -> None:
    if arch not in (BERT_ENCODER, BITNET_DECODER):
        raise NativeEngineError(f"the native engine has no implementation of architecture {arch!r}; "
                                f"it runs {BERT_ENCODER} and {BITNET_DECODER}")


def linear_plan(arch: str, cfg) -> dict[tuple[int, str], tuple[str, int, int]]:
    """(layer, native linear name) -> (state-dict module name, out features, in features) of every ternary
    linear of the architecture: the names the torch modules and the model files share.
    """
    _check_architecture(arch)
    if arch == BERT_ENCODER:
        h, f = cfg.hidden_size, cfg.intermediate_size
        shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "o": (h, h), "up": (f, h), "down": (h, f)}
        return {(i, p): (f"layers.{i}.attn.{p}" if p in "qkvo" else f"layers.{i}.{p}", *shapes[p])
                for i in range(cfg.num_layers) for p in BERT_LINEARS}
    h, f, kv = cfg.hidden_size, cfg.intermediate_size, cfg.num_key_value_heads * cfg.head_dim
    shapes = {"q_proj": (h, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, h), "gate_proj": (f, h),
              "up_proj": (f, h), "down_proj": (h, f)}
    return {(i, p): (f"layers.{i}.{parent}.{p}", *shapes[p])
            for i in range(cfg.num_hidden_layers) for p, parent in BITNET_LINEARS.items()}


def tensor_plan(arch: str, cfg) -> dict[tuple[str, int], str]:
    """(native tensor name, layer or -1) -> state-dict key of every float tensor the native model takes."""
    _check_architecture(arch)
    if arch == BERT_ENCODER:
        out = {("word", -1): "embeddings.word.weight", ("position", -1): "embeddings.position.weight",
               ("token_type", -1): "embeddings.token_type.weight", ("emb_norm.weight", -1): "embeddings.norm.weight",
               ("emb_norm.bias", -1): "embeddings.norm.bias"}
        for i in range(cfg.num_layers):
            for norm in ("attn_norm", "ffn_norm"):
                out[(f"{norm}.weight", i)] = f"layers.{i}.{norm}.weight"
                out[(f"{norm}.bias", i)] = f"layers.{i}.{norm}.bias"
        return out
    out = {("embed_tokens", -1): "embed_tokens.weight", ("norm", -1): "norm.weight"}
    for i in range(cfg.num_hidden_layers):
        out[("input_layernorm", i)] = f"layers.{i}.input_layernorm.weight"
        out[("post_attention_layernorm", i)] = f"layers.{i}.post_attention_layernorm.weight"
        out[("attn_sub_norm", i)] = f"layers.{i}.self_attn.attn_sub_norm.weight"
        out[("ffn_sub_norm", i)] = f"layers.{i}.mlp.ffn_sub_norm.weight"
    return out


def native_config(arch: str, cfg):
    """(the extension's config object, the model class) for the architecture."""
    nat = require_native()
    _check_architecture(arch)
    if arch == BERT_ENCODER:
        out = nat.BertConfig()
        out.vocab_size, out.hidden_size, out.num_layers = cfg.vocab_size, cfg.hidden_size, cfg.num_layers
        out.num_heads, out.intermediate_size, out.max_position = cfg.num_heads, cfg.intermediate_size, cfg.max_position
        out.type_vocab_size, out.layer_norm_eps = cfg.type_vocab_size, cfg.layer_norm_eps
        return out, nat.BertModel
    out = nat.BitNetConfig()
    out.vocab_size, out.hidden_size, out.intermediate_size = cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size
    out.num_layers, out.num_heads, out.num_kv_heads = cfg.num_hidden_layers, cfg.num_attention_heads, \
        cfg.num_key_value_heads
    out.rms_norm_eps, out.rope_theta, out.max_position = cfg.rms_norm_eps, cfg.rope_theta, cfg.max_position_embeddings
    return out, nat.BitNetModel


EMBEDDING_TABLES = {BERT_ENCODER: "word", BITNET_DECODER: "embed_tokens"}  # the native token-embedding tensor


def assemble(arch: str, cfg, tensor: Callable[[str], np.ndarray],
             linear: Callable[[str, int, int], tuple[np.ndarray, float, np.ndarray | None]], threads: int = 1,
             embedding_int8: tuple[np.ndarray, np.ndarray] | None = None):
    """A ``_native.BertModel`` / ``_native.BitNetModel`` of the architecture ``arch`` with config ``cfg``, filled
    from two callbacks keyed by state-dict names: ``tensor(key)`` -> a float array, ``linear(module name, out, in)``
    -> (int8 ternary weight [out, in], scale, bias or None), or (int8 weight, per-row scales [out], bias) for an
    int8 linear (BERT only). ``embedding_int8``: the token-embedding table as int8
    rows and per-row scales, kept so (a quarter of float32's memory) instead of asked of ``tensor``. The one place
    that knows the native model's layout.
    """
    ncfg, model_cls = native_config(arch, cfg)
    m = model_cls(ncfg, threads)
    for (name, layer), key in tensor_plan(arch, cfg).items():
        if name == EMBEDDING_TABLES[arch] and embedding_int8 is not None:
            q, scales = embedding_int8
            m.set_embedding_int8(name, np.ascontiguousarray(q, dtype=np.int8),
                                 np.ascontiguousarray(scales, dtype=np.float32))
            continue
        m.set_tensor(name, layer, np.ascontiguousarray(tensor(key), dtype=np.float32).reshape(-1))
    for (layer, name), (module, out_f, in_f) in linear_plan(arch, cfg).items():
        q, scale, bias = linear(module, out_f, in_f)  # one unpacked weight alive at a time
        bias = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32).reshape(-1)
        if np.ndim(scale) == 1:  # per-row scales: an int8 linear (the INT8 teacher variant)
            m.set_linear_int8(name, layer, np.ascontiguousarray(q, dtype=np.int8),
                              np.ascontiguousarray(scale, dtype=np.float32), bias)
        else:
            m.set_linear(name, layer, np.ascontiguousarray(q, dtype=np.int8), float(scale), bias)
    m.check_ready()
    return m


def _is_native_model(obj) -> bool:
    return _native is not None and isinstance(obj, (_native.BertModel, _native.BitNetModel))


class NativeEncoder:
    """Engine object for Backbone: token id lists -> pooled features, on the native model."""

    name = "native"

    def __init__(self, model, threads: int = 1):
        """model: a built native model (from_file.load_native_model), or a torch BertEncoder / BitNetDecoder
        with frozen BitLinears (copied in).
        """
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if _is_native_model(model):
            self.native = model
            self.native.threads = int(threads)
        else:
            from .from_torch import build_native_model

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

    def norm_gain_keys(self) -> list[tuple[str, int]]:
        """(native tensor name, layer) of every normalization gain (LayerNorm / RMSNorm weights; not biases)."""
        if isinstance(self.native, _native.BertModel):
            top, per_layer = ["emb_norm.weight"], ["attn_norm.weight", "ffn_norm.weight"]
        else:
            top, per_layer = ["norm"], ["input_layernorm", "post_attention_layernorm", "attn_sub_norm",
                                        "ffn_sub_norm"]
        keys = [(name, -1) for name in top]
        layer = 0
        while True:
            try:
                self.native.norm_tensor(per_layer[0], layer)
            except ValueError:  # past the last layer
                return keys
            keys += [(name, layer) for name in per_layer]
            layer += 1

    def get_norm_gain(self, key: tuple[str, int]) -> np.ndarray:
        return self.native.norm_tensor(*key)

    def set_norm_gain(self, key: tuple[str, int], gain: np.ndarray) -> None:
        self.native.set_tensor(key[0], key[1], np.ascontiguousarray(gain, dtype=np.float32))

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
