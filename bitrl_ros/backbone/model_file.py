"""Writing and loading model directories as torch modules (the format: model_format.py, which reads it without
torch). Loading installs the exact ternary weights, so save -> load -> forward is bit-identical (given the stored
embedding values).
"""

from __future__ import annotations

import json
from pathlib import Path
import shutil

from safetensors.torch import save as st_save
import torch
from torch import nn

from .bert import BertEncoder
from .bitlinear import BitLinear, pack_ternary
from .bitnet import BitNetDecoder
from .model_format import (CONFIG_FILE, dequantize_rows_int8_array, EMBEDDING_DTYPES, embedding_keys, expect,
                           FORMAT_VERSION, INT8_QUANT, read_config, read_tensors, read_ternary_linear,
                           read_word_embedding, SCALE_SUFFIX, TERNARY_QUANT, TOKENIZER_FILE, weight_format,
                           WEIGHTS_FILE, WORD_EMBEDDING_KEYS)
from .tokenizer import Tokenizer
from ..errors import ModelFileError
from ..fileio import atomic_write_bytes

ARCHITECTURES = {BertEncoder.architecture: BertEncoder, BitNetDecoder.architecture: BitNetDecoder}
TORCH_EMBEDDING_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int8": torch.int8}


def _bitlinears(model: nn.Module) -> dict[str, BitLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, BitLinear)}


def _word_embedding_key(model: nn.Module) -> str | None:
    for key in WORD_EMBEDDING_KEYS:
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
    """What loading makes of quantize_rows_int8's pair (model_format's dequantization, the one definition)."""
    return torch.from_numpy(dequantize_rows_int8_array(q.numpy(), scale.numpy()))


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
        out[emb_key] = out[emb_key].to(TORCH_EMBEDDING_DTYPES[embedding_dtype]).contiguous()
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


def save_int8_model(model: BertEncoder, tokenizer_path: str | Path, directory: str | Path,
                    derived_from: dict | None = None) -> Path:
    """Write an int8 teacher variant (variants.quantize_linears(teacher, "int8")) as a model directory of int8
    linears, which the native engine loads without torch to the same weights; returns the directory.
    derived_from: recorded in config.json (what the file was made from, to tell a stale copy).
    """
    from .variants import QuantizedLinear

    quantized = {name: m for name, m in model.named_modules()
                 if isinstance(m, QuantizedLinear) and m.weight_format == "int8"}
    if getattr(model, "architecture", None) != BertEncoder.architecture or not quantized:
        raise TypeError(f"cannot save a {type(model).__name__} as int8 linears: not an int8 BertEncoder variant")
    tensors = {}
    for name, layer in quantized.items():
        tensors[f"{name}.weight_int8"] = torch.from_numpy(layer.packed.arrays["q"].copy())
        tensors[f"{name}.weight_scale"] = torch.from_numpy(layer.packed.arrays["scale"].astype("float32"))
    for key, t in model.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        if not (owner in quantized and leaf == "weight"):
            tensors[key] = t.detach().float().contiguous().clone()
    config = {"architecture": BertEncoder.architecture, "format_version": FORMAT_VERSION,
              "quantization": INT8_QUANT, "config": model.config.to_dict(), "derived_from": derived_from or {}}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tokenizer_path, directory / TOKENIZER_FILE)
    atomic_write_bytes(directory / WEIGHTS_FILE, st_save(tensors, metadata={"format": "pt"}))
    # config.json last: a directory with one is complete.
    atomic_write_bytes(directory / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
    return directory


def load_model(directory: str | Path):
    """Read a model directory -> (model in eval mode with frozen BitLinears, Tokenizer)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelFileError(f"{directory}: model directory not found")
    arch, cfg, emb_name = read_config(directory / CONFIG_FILE)
    if weight_format(directory / CONFIG_FILE) == "int8":
        raise ModelFileError(f"{directory}: a model of int8 linears runs on the native engine only (engine auto or "
                             "native); the torch engine builds minilm-int8 from the teacher")
    weights_path = directory / WEIGHTS_FILE
    tensors = read_tensors(weights_path)
    model = ARCHITECTURES[arch](cfg)
    bit = _bitlinears(model)
    used = set()
    for name, layer in bit.items():
        q, scale = read_ternary_linear(tensors, name, *layer.weight.shape, weights_path)
        layer.set_ternary(torch.from_numpy(q), torch.from_numpy(scale))
        used.update({f"{name}.weight_packed", f"{name}.weight_scale"})
    emb_key = _word_embedding_key(model)
    with torch.no_grad():
        for key, dst in model.state_dict().items():
            owner, _, leaf = key.rpartition(".")
            if owner in bit and leaf == "weight":
                continue
            if key == emb_key:
                src = read_word_embedding(tensors, key, tuple(dst.shape), emb_name, weights_path)
                used.update(embedding_keys(key, emb_name))
            else:
                src = expect(tensors, key, tuple(dst.shape), dst.numpy().dtype, weights_path)
                used.add(key)
            dst.copy_(torch.from_numpy(src))
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
    arch, cfg, _ = read_config(directory / CONFIG_FILE)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = ARCHITECTURES[arch](cfg)
    finally:
        torch.random.set_rng_state(generator_state)
    for layer in _bitlinears(model).values():
        layer.freeze()
    model.eval()
    model.requires_grad_(False)
    return model, Tokenizer(directory / TOKENIZER_FILE)
