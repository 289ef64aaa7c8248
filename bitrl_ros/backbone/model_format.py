"""Reading our model directory format without torch: config.json, the safetensors tensors as numpy arrays, the
2-bit packed ternary weights, the int8 word-embedding rows. model_file.py builds torch modules from what this
reads; the native engine's file loader (engines/native/from_file.py) builds its C++ model from it directly, so a
process that only encodes never imports torch.

Format: model.safetensors (packed ternary weights + scales), config.json, tokenizer.json. For every BitLinear
`<name>`: `<name>.weight_packed` (uint8, 2 bits per weight: code = value + 1, four codes per byte, the first weight
in the lowest bits), `<name>.weight_scale` (float32 scalar) and `<name>.bias` if any. A model of int8 linears
(``"quantization": INT8_QUANT``, config ``linear: fp``: the INT8 teacher variant, W8A8) stores for each of them
`<name>.weight_int8` (int8 [out, in]) and `<name>.weight_scale` (float32 [out], one absmax / 127 per row).
Every other tensor keeps its state-dict name and float dtype, except that the word-embedding table may be stored
smaller (config.json ``"embedding_dtype"``; absent means float32): "float16", or "int8" with one float32 absmax
scale per row in ``<key>_scale`` (shape [V]).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import load as st_load

from .arch_config import BERT_ENCODER, BITNET_DECODER, CONFIGS
from ..errors import ModelFileError
from ..fileio import read_json_object

FORMAT_VERSION = 1
WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE = "model.safetensors", "config.json", "tokenizer.json"
EMBEDDING_DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8}
SCALE_SUFFIX = "_scale"
TERNARY_QUANT = {"weights": "ternary-absmean", "activations": "int8-absmax-per-token"}
INT8_QUANT = {"weights": "int8-absmax-per-channel", "activations": "int8-absmax-per-token"}
WEIGHT_FORMATS = {"ternary": TERNARY_QUANT, "int8": INT8_QUANT, "fp": None}
# The state-dict key of each architecture's word-embedding table (the one tensor that may be stored smaller).
WORD_EMBEDDING_KEY = {BERT_ENCODER: "embeddings.word.weight", BITNET_DECODER: "embed_tokens.weight"}
WORD_EMBEDDING_KEYS = tuple(WORD_EMBEDDING_KEY.values())


def read_config(path: Path):
    """config.json -> (architecture name, its config object, embedding dtype name); every field checked."""
    raw = read_json_object(path, ModelFileError)
    arch = raw.get("architecture")
    if arch not in CONFIGS:
        raise ModelFileError(f"{path}: unknown architecture {arch!r}; expected one of {sorted(CONFIGS)}")
    if raw.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{path}: unsupported format_version {raw.get('format_version')!r}; "
                             f"this build reads {FORMAT_VERSION}")
    if not isinstance(raw.get("config"), dict):
        raise ModelFileError(f"{path}: missing or invalid 'config' object")
    try:
        cfg = CONFIGS[arch].from_dict(raw["config"])
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: invalid 'config': {e}") from None
    expected_quant = [TERNARY_QUANT] if cfg.linear == "bitlinear" else [None, INT8_QUANT]
    if raw.get("quantization") not in expected_quant:
        raise ModelFileError(f"{path}: 'quantization' is {raw.get('quantization')!r}, expected "
                             f"{' or '.join(map(repr, expected_quant))} for linear={cfg.linear!r}")
    emb = raw.get("embedding_dtype", "float32")
    if emb not in EMBEDDING_DTYPES:
        raise ModelFileError(f"{path}: unsupported embedding_dtype {emb!r}; expected one of {sorted(EMBEDDING_DTYPES)}")
    return arch, cfg, emb


def weight_format(path: Path) -> str:
    """A config.json's linear weight format: "ternary", "int8" or "fp" (read_config has checked it)."""
    quant = read_json_object(path, ModelFileError).get("quantization")
    return next(name for name, q in WEIGHT_FORMATS.items() if q == quant)


def read_tensors(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise ModelFileError(f"{path}: file not found")
    try:
        return st_load(path.read_bytes())
    except Exception as e:  # safetensors raises its own error types for every kind of corruption
        raise ModelFileError(f"{path}: corrupt or truncated safetensors file ({str(e).strip() or type(e).__name__})") \
            from None


def expect(tensors: dict, key: str, shape: tuple, dtype, path: Path) -> np.ndarray:
    """tensors[key], refused with the file and key named unless it has this shape and dtype."""
    if key not in tensors:
        raise ModelFileError(f"{path}: missing tensor '{key}'")
    t = tensors[key]
    if tuple(t.shape) != tuple(shape):
        raise ModelFileError(f"{path}: tensor '{key}' has shape {tuple(t.shape)}, expected {tuple(shape)}")
    if t.dtype != np.dtype(dtype):
        raise ModelFileError(f"{path}: tensor '{key}' has dtype {t.dtype}, expected {np.dtype(dtype)}")
    return t


def pack_ternary_array(q: np.ndarray) -> np.ndarray:
    """int8 {-1,0,1} [out, in] -> uint8 [out, ceil(in/4)] (the format's 2-bit codes; padding codes are 0)."""
    q = np.asarray(q)
    if q.ndim != 2:
        raise ValueError(f"pack_ternary expects a 2-D array, got shape {q.shape}")
    codes = q.astype(np.int16) + 1
    if codes.size and (codes.min() < 0 or codes.max() > 2):
        raise ValueError("pack_ternary expects values in {-1, 0, 1}")
    out_f, in_f = codes.shape
    codes = np.pad(codes, ((0, 0), (0, (-in_f) % 4))).astype(np.uint8).reshape(out_f, -1, 4)
    return np.ascontiguousarray(codes[..., 0] | (codes[..., 1] << 2) | (codes[..., 2] << 4) | (codes[..., 3] << 6))


def unpack_ternary_array(packed: np.ndarray, in_features: int) -> np.ndarray:
    """Inverse of pack_ternary_array: uint8 [out, ceil(in/4)] -> int8 {-1,0,1} [out, in_features]."""
    if packed.ndim != 2 or packed.dtype != np.uint8:
        raise ValueError(f"unpack_ternary expects a 2-D uint8 array, got {packed.dtype} {tuple(packed.shape)}")
    if packed.shape[1] != (in_features + 3) // 4:
        raise ValueError(f"packed width {packed.shape[1]} does not fit in_features={in_features}")
    codes = (packed[..., None] >> np.array([0, 2, 4, 6], dtype=np.uint8)) & 3
    codes = codes.reshape(packed.shape[0], -1)[:, :in_features]
    if codes.size and codes.max() > 2:
        raise ValueError("packed ternary data holds the invalid code 3")
    return np.ascontiguousarray(codes.astype(np.int8) - 1)


def dequantize_rows_int8_array(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """int8 rows [V, D] x float32 per-row scales [V] (absmax / 127) -> float32 [V, D]."""
    return q.astype(np.float32) * scale.astype(np.float32)[:, None]


def read_ternary_linear(tensors: dict, name: str, out_features: int, in_features: int, path: Path):
    """(int8 ternary weight [out, in], float32 scale) of the BitLinear `name`, checked."""
    packed = expect(tensors, f"{name}.weight_packed", (out_features, (in_features + 3) // 4), np.uint8, path)
    scale = expect(tensors, f"{name}.weight_scale", (), np.float32, path)
    try:
        return unpack_ternary_array(packed, in_features), scale
    except ValueError as e:
        raise ModelFileError(f"{path}: tensor '{name}.weight_packed': {e}") from None


def read_int8_linear(tensors: dict, name: str, out_features: int, in_features: int, path: Path):
    """(int8 weight [out, in], float32 row scales [out]) of the int8 linear `name`, checked."""
    q = expect(tensors, f"{name}.weight_int8", (out_features, in_features), np.int8, path)
    scale = expect(tensors, f"{name}.weight_scale", (out_features,), np.float32, path)
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ModelFileError(f"{path}: tensor '{name}.weight_scale' holds a scale that is not finite and positive")
    return q, scale


def read_word_embedding_int8(tensors: dict, key: str, shape: tuple, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An int8 word-embedding table as stored: (int8 rows [V, D], float32 per-row scales [V]), checked."""
    q = expect(tensors, key, shape, np.int8, path)
    return q, expect(tensors, key + SCALE_SUFFIX, (shape[0],), np.float32, path)


def read_word_embedding(tensors: dict, key: str, shape: tuple, dtype_name: str, path: Path) -> np.ndarray:
    """The word-embedding table as float32, whatever dtype it is stored in."""
    if dtype_name == "int8":
        return dequantize_rows_int8_array(*read_word_embedding_int8(tensors, key, shape, path))
    return expect(tensors, key, shape, EMBEDDING_DTYPES[dtype_name], path).astype(np.float32)


def embedding_keys(key: str, dtype_name: str) -> set[str]:
    return {key, key + SCALE_SUFFIX} if dtype_name == "int8" else {key}
