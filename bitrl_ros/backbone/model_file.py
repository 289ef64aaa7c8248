"""Our model directory format: model.safetensors (packed ternary weights + scales), config.json, tokenizer.json.

For every BitLinear `<name>`: `<name>.weight_packed` (uint8, 2 bits per weight, see pack_ternary),
`<name>.weight_scale` (float32 scalar) and `<name>.bias` if any. Every other tensor keeps its state-dict name
and float dtype, except that the word-embedding table may be stored smaller (config.json ``"embedding_dtype"``;
absent means float32): "float16", or "int8" with one float32 absmax scale per row in ``<key>_scale`` (shape [V]);
it is dequantized to float32 on load. Loading installs the exact ternary weights, so save -> load -> forward is
bit-identical (given the stored embedding values).
"""

from __future__ import annotations

import json
from pathlib import Path
import shutil

from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
import torch
from torch import nn

from .bert import BertEncoder, EncoderConfig
from .bitlinear import BitLinear, pack_ternary, unpack_ternary
from .bitnet import BitNetDecoder, DecoderConfig
from .tokenizer import Tokenizer
from ..errors import ModelFileError
from ..fileio import atomic_write_bytes, read_json_object

FORMAT_VERSION = 1
WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE = "model.safetensors", "config.json", "tokenizer.json"
EMBEDDING_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int8": torch.int8}
SCALE_SUFFIX = "_scale"
TERNARY_QUANT = {"weights": "ternary-absmean", "activations": "int8-absmax-per-token"}
ARCHITECTURES = {
    BertEncoder.architecture: (BertEncoder, EncoderConfig),
    BitNetDecoder.architecture: (BitNetDecoder, DecoderConfig),
}


def _bitlinears(model: nn.Module) -> dict[str, BitLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, BitLinear)}


def _word_embedding_key(model: nn.Module) -> str | None:
    for key in ("embeddings.word.weight", "embed_tokens.weight"):
        if key in model.state_dict():
            return key
    return None


def quantize_rows_int8(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row absmax int8: (q int8 [V, D], scale float32 [V]) with table ~= q * scale[:, None]."""
    table = table.detach().float()
    scale = table.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(table / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


def dequantize_rows_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale[:, None]


def model_tensors(model: nn.Module, embedding_dtype: str = "float32") -> dict[str, torch.Tensor]:
    """The tensors written to model.safetensors for ``model`` (word embeddings in ``embedding_dtype``)."""
    if embedding_dtype not in EMBEDDING_DTYPES:
        raise ValueError(f"embedding_dtype must be one of {sorted(EMBEDDING_DTYPES)}, got {embedding_dtype!r}")
    emb_key = _word_embedding_key(model) if embedding_dtype != "float32" else None
    bit = _bitlinears(model)
    out = {}
    for name, layer in bit.items():
        q, scale = layer.ternary()
        out[f"{name}.weight_packed"] = pack_ternary(q)
        out[f"{name}.weight_scale"] = scale.detach().float().reshape(()).clone()
    for key, t in model.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        if owner in bit and leaf == "weight":
            continue
        out[key] = t.detach().contiguous().clone()
    if emb_key is not None and embedding_dtype == "int8":
        out[emb_key], out[emb_key + SCALE_SUFFIX] = quantize_rows_int8(out[emb_key])
    elif emb_key is not None:
        out[emb_key] = out[emb_key].to(EMBEDDING_DTYPES[embedding_dtype]).contiguous()
    return out


def save_model(model: BertEncoder | BitNetDecoder, tokenizer_path: str | Path, directory: str | Path,
               embedding_dtype: str = "float32") -> Path:
    """Write ``model`` and a copy of ``tokenizer_path`` as a model directory; returns the directory.

    ``embedding_dtype`` "float16" or "int8" (per-row scales) stores the word-embedding table smaller; it is
    loaded back as float32.
    """
    arch = getattr(model, "architecture", None)
    if arch not in ARCHITECTURES:
        raise TypeError(f"cannot save a {type(model).__name__}: not a BertEncoder or BitNetDecoder")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    config = {
        "architecture": arch,
        "format_version": FORMAT_VERSION,
        "quantization": TERNARY_QUANT if cfg.linear == "bitlinear" else None,
        "config": cfg.to_dict(),
    }
    tensors = model_tensors(model, embedding_dtype)
    if embedding_dtype != "float32":
        config["embedding_dtype"] = embedding_dtype
    atomic_write_bytes(directory / WEIGHTS_FILE, st_save(tensors, metadata={"format": "pt"}))
    atomic_write_bytes(directory / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
    tokenizer_path = Path(tokenizer_path)
    if tokenizer_path.resolve() != (directory / TOKENIZER_FILE).resolve():
        shutil.copyfile(tokenizer_path, directory / TOKENIZER_FILE)
    return directory


def _read_config(path: Path):
    raw = read_json_object(path, ModelFileError)
    arch = raw.get("architecture")
    if arch not in ARCHITECTURES:
        raise ModelFileError(f"{path}: unknown architecture {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    if raw.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{path}: unsupported format_version {raw.get('format_version')!r}; "
                             f"this build reads {FORMAT_VERSION}")
    model_cls, cfg_cls = ARCHITECTURES[arch]
    if not isinstance(raw.get("config"), dict):
        raise ModelFileError(f"{path}: missing or invalid 'config' object")
    try:
        cfg = cfg_cls.from_dict(raw["config"])
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: invalid 'config': {e}") from None
    expected_quant = TERNARY_QUANT if cfg.linear == "bitlinear" else None
    if raw.get("quantization") != expected_quant:
        raise ModelFileError(f"{path}: 'quantization' is {raw.get('quantization')!r}, expected {expected_quant!r} "
                             f"for linear={cfg.linear!r}")
    emb = raw.get("embedding_dtype", "float32")
    if emb not in EMBEDDING_DTYPES:
        raise ModelFileError(f"{path}: unsupported embedding_dtype {emb!r}; expected one of {sorted(EMBEDDING_DTYPES)}")
    return model_cls, cfg, emb


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelFileError(f"{path}: file not found")
    try:
        return st_load(path.read_bytes())
    except Exception as e:  # safetensors raises its own error types for every kind of corruption
        raise ModelFileError(f"{path}: corrupt or truncated safetensors file ({str(e).strip() or type(e).__name__})") \
            from None


def _expect(tensors: dict, key: str, shape: tuple, dtype: torch.dtype, path: Path) -> torch.Tensor:
    if key not in tensors:
        raise ModelFileError(f"{path}: missing tensor '{key}'")
    t = tensors[key]
    if tuple(t.shape) != tuple(shape):
        raise ModelFileError(f"{path}: tensor '{key}' has shape {tuple(t.shape)}, expected {tuple(shape)}")
    if t.dtype != dtype:
        raise ModelFileError(f"{path}: tensor '{key}' has dtype {t.dtype}, expected {dtype}")
    return t


def load_model(directory: str | Path):
    """Read a model directory -> (model in eval mode with frozen BitLinears, Tokenizer)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelFileError(f"{directory}: model directory not found")
    model_cls, cfg, emb_name = _read_config(directory / CONFIG_FILE)
    weights_path = directory / WEIGHTS_FILE
    tensors = _read_tensors(weights_path)
    model = model_cls(cfg)
    bit = _bitlinears(model)
    used = set()
    for name, layer in bit.items():
        out_f, in_f = layer.weight.shape
        packed = _expect(tensors, f"{name}.weight_packed", (out_f, (in_f + 3) // 4), torch.uint8, weights_path)
        scale = _expect(tensors, f"{name}.weight_scale", (), torch.float32, weights_path)
        try:
            q = unpack_ternary(packed, in_f)
        except ValueError as e:
            raise ModelFileError(f"{weights_path}: tensor '{name}.weight_packed': {e}") from None
        layer.set_ternary(q, scale)
        used.update({f"{name}.weight_packed", f"{name}.weight_scale"})
    state = model.state_dict()
    emb_key = _word_embedding_key(model)
    with torch.no_grad():
        for key, dst in state.items():
            owner, _, leaf = key.rpartition(".")
            if owner in bit and leaf == "weight":
                continue
            if key == emb_key and emb_name == "int8":
                q = _expect(tensors, key, tuple(dst.shape), torch.int8, weights_path)
                scale = _expect(tensors, key + SCALE_SUFFIX, (dst.shape[0],), torch.float32, weights_path)
                dst.copy_(dequantize_rows_int8(q, scale))
                used.update({key, key + SCALE_SUFFIX})
                continue
            dtype = EMBEDDING_DTYPES[emb_name] if key == emb_key else dst.dtype
            dst.copy_(_expect(tensors, key, tuple(dst.shape), dtype, weights_path).to(dst.dtype))
            used.add(key)
    extra = sorted(set(tensors) - used)
    if extra:
        raise ModelFileError(f"{weights_path}: unexpected tensors {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    model.eval()
    model.requires_grad_(False)
    tokenizer = Tokenizer(directory / TOKENIZER_FILE)
    return model, tokenizer


def random_model(directory: str | Path, seed: int):
    """(model, Tokenizer): the architecture and tokenizer of a model directory with freshly drawn weights (torch's
    default initialisation, seeded), every BitLinear ternarized: the untrained baseline of the same shape, which
    shows what pre-training buys.
    """
    directory = Path(directory)
    model_cls, cfg, _ = _read_config(directory / CONFIG_FILE)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = model_cls(cfg)
    finally:
        torch.random.set_rng_state(generator_state)
    for layer in _bitlinears(model).values():
        layer.freeze()
    model.eval()
    model.requires_grad_(False)
    return model, Tokenizer(directory / TOKENIZER_FILE)
