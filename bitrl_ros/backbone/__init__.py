"""Frozen text backbones: BitLinear quantization, BERT encoder, BitNet decoder, tokenizer, model files, registry."""

from .bert import BertEncoder, EncoderConfig, load_hf_bert_state_dict
from .bitlinear import BitLinear, pack_ternary, quantize_activations, ternarize, unpack_ternary
from .bitnet import bitnet_2b4t_config, bitnet_tiny_config, BitNetDecoder, DecoderConfig
from .model_file import load_model, save_model
from .registry import available_backbones, Backbone, load_backbone, load_tokenizer
from .teacher import load_teacher, teacher_dir, ternarize_ptq
from .tokenizer import Tokenizer

__all__ = [
    "Backbone", "BertEncoder", "BitLinear", "BitNetDecoder", "DecoderConfig", "EncoderConfig", "Tokenizer",
    "available_backbones", "bitnet_2b4t_config", "bitnet_tiny_config", "load_backbone", "load_hf_bert_state_dict",
    "load_model", "load_teacher", "load_tokenizer", "pack_ternary", "quantize_activations", "save_model", "teacher_dir",
    "ternarize", "ternarize_ptq", "unpack_ternary",
]
