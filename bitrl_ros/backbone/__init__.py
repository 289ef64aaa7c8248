"""Frozen text backbones: BitLinear quantization, BERT encoder, BitNet decoder, tokenizer, model files, registry.

The names below load their module when first used (PEP 562), so that importing one torch-free part (the
tokenizer, the registry's native path, the model format) does not import torch with the rest.
"""

from importlib import import_module

_EXPORTS = {
    "Backbone": "registry", "available_backbones": "registry", "load_backbone": "registry",
    "load_tokenizer": "catalog",
    "BertEncoder": "bert", "load_hf_bert_state_dict": "bert", "EncoderConfig": "arch_config",
    "BitNetDecoder": "bitnet", "DecoderConfig": "arch_config", "bitnet_2b4t_config": "arch_config",
    "bitnet_tiny_config": "arch_config",
    "BitLinear": "bitlinear", "pack_ternary": "bitlinear", "quantize_activations": "bitlinear",
    "ternarize": "bitlinear", "unpack_ternary": "bitlinear",
    "load_model": "model_file", "save_model": "model_file",
    "load_teacher": "teacher", "ternarize_ptq": "teacher", "teacher_dir": "locations",
    "Tokenizer": "tokenizer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
