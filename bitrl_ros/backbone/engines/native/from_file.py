"""A native model straight from a model directory: the packed ternary (or int8) weights and the float tensors read
with numpy (model_format.py), no torch module built and no second copy kept; an int8 word-embedding table stays int8
in the engine (dequantized row by row on lookup, to the same values). How a process that only encodes (the
ternary_encoder node) loads the shipped model.
"""
from __future__ import annotations

from pathlib import Path

from . import assemble, NativeEngineError
from ...arch_config import BERT_ENCODER
from ...model_format import (CONFIG_FILE, embedding_keys, expect, read_config, read_int8_linear, read_tensors,
                             read_ternary_linear, read_word_embedding, read_word_embedding_int8, weight_format,
                             WEIGHTS_FILE, WORD_EMBEDDING_KEY, WORD_EMBEDDING_KEYS)
from ....errors import ModelFileError


def load_native_model(directory: str | Path, threads: int = 1):
    """The native model of a ternary model directory; every tensor checked against the config, extra tensors
    refused, like model_file.load_model.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelFileError(f"{directory}: model directory not found")
    arch, cfg, emb_name = read_config(directory / CONFIG_FILE)
    fmt = weight_format(directory / CONFIG_FILE)
    if fmt == "fp":
        raise NativeEngineError(f"{directory}: the native engine needs ternary or int8 linears, but this model's "
                                "are floating point: use engine='torch'")
    if fmt == "int8" and arch != BERT_ENCODER:
        raise NativeEngineError(f"{directory}: the native engine runs int8 linears in BERT encoders only")
    path = directory / WEIGHTS_FILE
    tensors = read_tensors(path)
    used: set[str] = set()

    def tensor(key):
        if key in WORD_EMBEDDING_KEYS:
            used.update(embedding_keys(key, emb_name))
            return read_word_embedding(tensors, key, (cfg.vocab_size, cfg.hidden_size), emb_name, path)
        used.add(key)
        if key not in tensors:
            raise ModelFileError(f"{path}: missing tensor '{key}'")
        return expect(tensors, key, tensors[key].shape, "float32", path)

    def linear(name, out_f, in_f):
        if fmt == "int8":
            q, scale = read_int8_linear(tensors, name, out_f, in_f, path)
            used.update({f"{name}.weight_int8", f"{name}.weight_scale"})
        else:
            q, scale = read_ternary_linear(tensors, name, out_f, in_f, path)
            used.update({f"{name}.weight_packed", f"{name}.weight_scale"})
        bias = None
        if f"{name}.bias" in tensors:
            bias = expect(tensors, f"{name}.bias", (out_f,), "float32", path)
            used.add(f"{name}.bias")
        return q, scale, bias

    embedding_int8 = None
    if emb_name == "int8":
        key = WORD_EMBEDDING_KEY[arch]
        embedding_int8 = read_word_embedding_int8(tensors, key, (cfg.vocab_size, cfg.hidden_size), path)
        used.update(embedding_keys(key, emb_name))
    try:
        model = assemble(arch, cfg, tensor, linear, threads, embedding_int8)
    except ValueError as e:  # the extension's shape and value checks
        raise ModelFileError(f"{path}: {e}") from None
    extra = sorted(set(tensors) - used)
    if extra:
        raise ModelFileError(f"{path}: unexpected tensors {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    return model
