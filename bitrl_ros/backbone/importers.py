"""Importers for real BitNet b1.58 checkpoints (Hugging Face layout) into our BitNetDecoder, and a hub fetcher.

Supported: ``microsoft/bitnet-b1.58-2B-4T`` (packed: uint8 weights + ``weight_scale``) and
``microsoft/bitnet-b1.58-2B-4T-bf16`` (bf16 master weights, ternarized here with absmean, as BitNet does online).

Facts this module relies on (transformers ``src/transformers/integrations/bitnet.py`` and ``models/bitnet``):

* Packing (``pack_weights`` / ``unpack_weights``, ``VALUES_PER_ITEM = 4``): a ternary ``[out, in]`` matrix is
  stored as uint8 ``[ceil(out/4), in]``; with ``R = packed.shape[0]``, bits ``2i..2i+1`` of row ``r`` hold
  the code ``w + 1`` of weight row ``i*R + r`` (i = 0..3). Unpacking yields ``4*R`` rows.
* ``weight_scale``: one value per tensor, shape ``(1,)``, dtype bf16 (the model's dtype). Its meaning depends
  on ``quantization_config.linear_class``:
    - ``"autobitlinear"`` (``AutoBitLinear``, offline mode): ``output = F.linear(ActQuant(x), w_ternary) *
      weight_scale`` -> real weight = ternary * weight_scale;
    - ``"bitlinear"`` (``BitLinear``, the ``BitNetQuantConfig`` default): ``y = F.linear(x_int8, w_ternary)``
      then ``y / (weight_scale * input_scale)`` -> real weight = ternary / weight_scale.
  (mlx-lm's ``bitnet_quantize`` does the same: ``invert_weight_scales = linear_class != "autobitlinear"``.)
  The 2B4T packed config ships ``{"quant_method": "bitnet", "linear_class": "autobitlinear",
  "quantization_mode": "offline"}``; a missing ``linear_class`` means ``"bitlinear"`` (transformers' default).
* Activations: per-token absmax to [-128, 127] with scale 127 / max|x| (clamped at 1e-5): what our BitLinear does.
* The ``-bf16`` checkpoint stores plain bf16 ``nn.Linear`` weights with ``quantization_mode: "online"``;
  ``WeightQuant`` ternarizes them per tensor with absmean (scale = mean|W| clamped at 1e-5), as ``ternarize``.
* Architecture (``modeling_bitnet.py``): LLaMA block with ``attn_sub_norm`` before ``o_proj`` and
  ``ffn_sub_norm`` before ``down_proj``; ``down(ffn_sub_norm(relu(gate(x))**2 * up(x)))``; tied embeddings.

Memory: tensors are read one at a time with ``safetensors.safe_open``; the decoder is created on the meta
device and materialized uninitialized, so no random init and at most one source tensor in flight.
"""

from __future__ import annotations

import os
from pathlib import Path
import re
import socket
from urllib.parse import urlparse

from safetensors import safe_open
import torch

from .bitlinear import BitLinear, ternarize
from .bitnet import BitNetDecoder, DecoderConfig
from .tokenizer import Tokenizer
from ..errors import BitrlError, ModelFileError
from ..fileio import read_json_object

CONFIG_FILE, WEIGHTS_FILE, INDEX_FILE, TOKENIZER_FILE = (
    "config.json", "model.safetensors", "model.safetensors.index.json", "tokenizer.json")
LINEAR_CLASSES = ("autobitlinear", "bitlinear")
KNOWN_MODELS = ("microsoft/bitnet-b1.58-2B-4T", "microsoft/bitnet-b1.58-2B-4T-bf16")
FETCH_PATTERNS = ["config.json", "generation_config.json", "model.safetensors", "model-*.safetensors",
                  "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
                  "special_tokens_map.json", "LICENSE", "README.md"]
_FLOAT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
# Tensors an HF checkpoint may carry that our decoder has no use for (it returns hidden states; the LM head
# is tied to the embeddings in 2B4T, and RoPE frequencies are recomputed).
_IGNORED = re.compile(r"^(lm_head\.weight|model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq)$")


class NetworkUnavailable(BitrlError):
    """The model hub cannot be reached from this machine."""


# ----------------------------------------------------------------------------------------------- config


def hf_decoder_config(raw: dict, path: Path) -> tuple[DecoderConfig, dict]:
    """(DecoderConfig, quantization info) from an HF BitNet config.json dict."""
    archs = raw.get("architectures") or []
    if raw.get("model_type") not in (None, "bitnet") or (archs and "BitNetForCausalLM" not in archs):
        raise ModelFileError(f"{path}: not a BitNet checkpoint (model_type={raw.get('model_type')!r}, "
                             f"architectures={archs!r}); expected model_type 'bitnet' / BitNetForCausalLM")
    required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    missing = [k for k in required if k not in raw]
    if missing:
        raise ModelFileError(f"{path}: missing config fields {missing}")
    if raw.get("rope_scaling"):
        raise ModelFileError(f"{path}: rope_scaling {raw['rope_scaling']!r} is not supported")
    for flag in ("attention_bias", "mlp_bias"):
        if raw.get(flag):
            raise ModelFileError(f"{path}: {flag}=true is not supported (BitNet b1.58 has no biases)")
    heads = raw["num_attention_heads"]
    if raw.get("head_dim") not in (None, raw["hidden_size"] // max(heads, 1)):
        raise ModelFileError(f"{path}: head_dim {raw['head_dim']} != hidden_size / num_attention_heads")
    try:
        cfg = DecoderConfig(
            vocab_size=int(raw["vocab_size"]), hidden_size=int(raw["hidden_size"]),
            intermediate_size=int(raw["intermediate_size"]), num_hidden_layers=int(raw["num_hidden_layers"]),
            num_attention_heads=int(heads), num_key_value_heads=int(raw.get("num_key_value_heads") or heads),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)), rope_theta=float(raw.get("rope_theta", 500000.0)),
            max_position_embeddings=int(raw.get("max_position_embeddings", 4096)),
            hidden_act=str(raw.get("hidden_act", "relu2")), linear="bitlinear")
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: invalid config: {e}") from None
    qc = raw.get("quantization_config")
    if qc is None:
        quant = {"quant_method": None, "quantization_mode": "online", "linear_class": "autobitlinear"}
    else:
        if not isinstance(qc, dict):
            raise ModelFileError(f"{path}: quantization_config must be an object, got {qc!r}")
        if qc.get("quant_method") != "bitnet":
            raise ModelFileError(f"{path}: unknown quantization_config.quant_method {qc.get('quant_method')!r}; "
                                 f"only 'bitnet' is supported")
        linear_class = qc.get("linear_class", "bitlinear")  # transformers' BitNetQuantConfig default
        if linear_class not in LINEAR_CLASSES:
            raise ModelFileError(f"{path}: unknown quantization_config.linear_class {linear_class!r}; "
                                 f"expected one of {LINEAR_CLASSES}")
        mode = qc.get("quantization_mode", "offline")
        if mode not in ("offline", "online"):
            raise ModelFileError(f"{path}: unknown quantization_config.quantization_mode {mode!r}")
        quant = {"quant_method": "bitnet", "quantization_mode": mode, "linear_class": linear_class}
    return cfg, quant


# ---------------------------------------------------------------------------------------------- weights


class _TensorSource:
    """Key -> file map over a single or sharded safetensors checkpoint; reads one tensor at a time."""

    def __init__(self, directory: Path):
        single, index = directory / WEIGHTS_FILE, directory / INDEX_FILE
        self.files: dict[str, Path] = {}
        if index.is_file():
            raw = read_json_object(index, ModelFileError)
            wmap = raw.get("weight_map")
            if not isinstance(wmap, dict) or not wmap:
                raise ModelFileError(f"{index}: missing or empty 'weight_map'")
            for key, fname in wmap.items():
                p = directory / str(fname)
                if not p.is_file():
                    raise ModelFileError(f"{index}: tensor '{key}' maps to missing shard {p}")
                self.files[key] = p
            self.where = index
        elif single.is_file():
            self.where = single
            for k in self._keys(single):
                self.files[k] = single
        else:
            raise ModelFileError(f"{directory}: neither {WEIGHTS_FILE} nor {INDEX_FILE} found")
        self._handles: dict[Path, object] = {}

    @staticmethod
    def _open(path: Path):
        try:
            return safe_open(str(path), framework="pt")
        except Exception as e:  # safetensors raises its own error types for every kind of corruption
            raise ModelFileError(f"{path}: corrupt or truncated safetensors file "
                                 f"({str(e).strip() or type(e).__name__})") from None

    def _keys(self, path: Path) -> list[str]:
        return list(self._open(path).keys())

    def __contains__(self, key: str) -> bool:
        return key in self.files

    def file_of(self, key: str) -> Path:
        return self.files.get(key, self.where)

    def get(self, key: str) -> torch.Tensor:
        if key not in self.files:
            raise ModelFileError(f"{self.where}: missing tensor '{key}'")
        path = self.files[key]
        h = self._handles.get(path)
        if h is None:
            h = self._handles[path] = self._open(path)
        try:
            return h.get_tensor(key)
        except Exception as e:
            raise ModelFileError(f"{path}: cannot read tensor '{key}' ({str(e).strip() or type(e).__name__})") \
                from None


def unpack_hf_ternary(packed: torch.Tensor, out_features: int) -> torch.Tensor:
    """Unpack transformers' ``unpack_weights`` layout: uint8 [ceil(out/4), in] -> int8 {-1,0,1} [out, in]."""
    codes = torch.cat([(packed >> (2 * i)) & 3 for i in range(4)], dim=0)[:out_features]
    if codes.numel() and int(codes.max()) > 2:
        raise ValueError("packed ternary data holds the invalid code 3")
    return (codes.to(torch.int8) - 1).contiguous()


def pack_hf_ternary(q: torch.Tensor) -> torch.Tensor:
    """Inverse of ``unpack_hf_ternary`` (transformers' ``pack_weights`` layout), for tests and exporters."""
    out_f = q.shape[0]
    rows = (out_f + 3) // 4
    codes = torch.zeros((rows * 4, *q.shape[1:]), dtype=torch.uint8)
    codes[:out_f] = (q.to(torch.int16) + 1).to(torch.uint8)
    packed = torch.zeros((rows, *q.shape[1:]), dtype=torch.uint8)
    for i in range(4):
        packed |= codes[i * rows:(i + 1) * rows] << (2 * i)
    return packed


def _expect_float(src: _TensorSource, key: str, shape: tuple) -> torch.Tensor:
    t = src.get(key)
    if t.dtype not in _FLOAT_DTYPES:
        raise ModelFileError(f"{src.file_of(key)}: tensor '{key}' has dtype {t.dtype}, expected a float dtype")
    if tuple(t.shape) != tuple(shape):
        raise ModelFileError(f"{src.file_of(key)}: tensor '{key}' has shape {tuple(t.shape)}, expected {shape}")
    return t


def _load_linear(src: _TensorSource, hf_name: str, layer: BitLinear, linear_class: str) -> str:
    """Install the ternary weight of ``hf_name`` into ``layer``; returns 'packed' or 'bf16'."""
    wkey, skey = f"{hf_name}.weight", f"{hf_name}.weight_scale"
    out_f, in_f = layer.weight.shape
    w = src.get(wkey)
    path = src.file_of(wkey)
    if w.dtype == torch.uint8:
        exp = ((out_f + 3) // 4, in_f)
        if tuple(w.shape) != exp:
            raise ModelFileError(f"{path}: packed tensor '{wkey}' has shape {tuple(w.shape)}, expected {exp} "
                                 f"(uint8, 4 ternary rows per byte along the output dimension)")
        if skey not in src:
            raise ModelFileError(f"{src.where}: missing tensor '{skey}' (packed weight '{wkey}' needs its scale)")
        s = src.get(skey)
        if s.dtype not in _FLOAT_DTYPES or s.numel() != 1:
            raise ModelFileError(f"{src.file_of(skey)}: tensor '{skey}' must be one float value, "
                                 f"got {s.dtype} {tuple(s.shape)}")
        s = s.float().reshape(())
        if not torch.isfinite(s) or float(s) <= 0:
            raise ModelFileError(f"{src.file_of(skey)}: tensor '{skey}' must be a positive finite scale, "
                                 f"got {float(s)}")
        try:
            q = unpack_hf_ternary(w, out_f)
        except ValueError as e:
            raise ModelFileError(f"{path}: tensor '{wkey}': {e}") from None
        # autobitlinear: W = q * weight_scale; bitlinear: W = q / weight_scale (see the module docstring).
        scale = s if linear_class == "autobitlinear" else 1.0 / s
        layer.set_ternary(q, scale)
        return "packed"
    if w.dtype in _FLOAT_DTYPES:
        if tuple(w.shape) != (out_f, in_f):
            raise ModelFileError(f"{path}: tensor '{wkey}' has shape {tuple(w.shape)}, expected {(out_f, in_f)}")
        if skey in src:
            raise ModelFileError(f"{src.file_of(skey)}: unexpected tensor '{skey}' beside the float weight "
                                 f"'{wkey}' (mixed packed / master layouts are not supported)")
        # absmean in float32, as WeightQuant does in online mode (x.float() first)
        q, scale = ternarize(w.float())
        layer.set_ternary(q, scale)
        return "bf16"
    raise ModelFileError(f"{path}: tensor '{wkey}' has dtype {w.dtype}; expected uint8 (packed) or bf16/fp16/fp32")


def import_hf_bitnet(checkpoint_dir: str | Path) -> tuple[BitNetDecoder, Tokenizer]:
    """Read an HF BitNet b1.58 checkpoint directory -> (frozen BitNetDecoder in eval mode, Tokenizer).

    The directory holds config.json, model.safetensors (or model.safetensors.index.json + shards) and
    tokenizer.json. Packed (uint8 + weight_scale) and bf16 master weights are detected per tensor by dtype.
    ``model.hf_import`` records what was read (format, linear_class, quantization_mode).
    """
    directory = Path(checkpoint_dir)
    if not directory.is_dir():
        raise ModelFileError(f"{directory}: checkpoint directory not found")
    cfg_path = directory / CONFIG_FILE
    cfg, quant = hf_decoder_config(read_json_object(cfg_path, ModelFileError), cfg_path)
    tokenizer = Tokenizer(directory / TOKENIZER_FILE)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise ModelFileError(f"{directory / TOKENIZER_FILE}: tokenizer has {tokenizer.vocab_size} tokens, more "
                             f"than the config's vocab_size {cfg.vocab_size}")
    src = _TensorSource(directory)

    with torch.device("meta"):
        model = BitNetDecoder(cfg)
    model = model.to_empty(device="cpu")  # uninitialized storage: every tensor is overwritten below

    used: set[str] = set()
    formats: set[str] = set()
    bit = {name: m for name, m in model.named_modules() if isinstance(m, BitLinear)}
    with torch.no_grad():
        for name, layer in bit.items():
            hf_name = f"model.{name}"
            formats.add(_load_linear(src, hf_name, layer, quant["linear_class"]))
            used.update({f"{hf_name}.weight", f"{hf_name}.weight_scale"})
        for key, dst in model.state_dict().items():
            owner, _, leaf = key.rpartition(".")
            if owner in bit and leaf == "weight":
                continue
            hf_key = f"model.{key}"
            dst.copy_(_expect_float(src, hf_key, tuple(dst.shape)))
            used.add(hf_key)
    extra = sorted(k for k in src.files if k not in used and not _IGNORED.match(k))
    if extra:
        raise ModelFileError(f"{src.where}: unexpected tensors {extra[:5]}{' ...' if len(extra) > 5 else ''} "
                             f"(not a BitNet b1.58 decoder layout)")
    model.eval()
    model.requires_grad_(False)
    model.hf_import = {"format": "+".join(sorted(formats)), **quant, "source": str(directory)}
    return model, tokenizer


def import_to_model_dir(src: str | Path, dst: str | Path) -> tuple[Path, dict]:
    """Convert an HF BitNet checkpoint into our model directory format; returns (dst, import info)."""
    from .model_file import save_model

    model, tokenizer = import_hf_bitnet(src)
    info = dict(model.hf_import)
    out = save_model(model, tokenizer.path, dst)
    return out, info


# ------------------------------------------------------------------------------------------------ fetch


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or "https://huggingface.co"


def check_hub_reachable(endpoint: str | None = None, timeout: float = 3.0) -> None:
    """Raise NetworkUnavailable unless a TCP connection to the hub endpoint opens within ``timeout`` s."""
    endpoint = endpoint or hub_endpoint()
    url = urlparse(endpoint)
    host = url.hostname
    if not host:
        raise NetworkUnavailable(f"no network access to the Hugging Face hub: bad endpoint {endpoint!r}")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        raise NetworkUnavailable(f"no network access to the Hugging Face hub: cannot reach {host}:{port} "
                                 f"({reason}); run `bitrl fetch-model` on a machine with internet and copy "
                                 f"the directory over") from None


def default_fetch_dest(name: str) -> Path:
    return Path("models") / "hf" / name.replace("/", "--")


def fetch_model(name: str, dest: str | Path | None = None, timeout: float = 3.0) -> Path:
    """Download checkpoint ``name`` (an HF repo id) into ``dest``: config, safetensors and tokenizer files."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        raise BitrlError(f"model name must be an owner/name repo id (e.g. {KNOWN_MODELS[0]}), got {name!r}")
    endpoint = hub_endpoint()
    check_hub_reachable(endpoint, timeout=timeout)
    os.environ["HF_HUB_OFFLINE"] = "0"
    import huggingface_hub
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = False  # read at import time; bitrl defaults it to 1 for everything else
    dest = Path(dest) if dest is not None else default_fetch_dest(name)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        path = huggingface_hub.snapshot_download(repo_id=name, local_dir=dest, allow_patterns=FETCH_PATTERNS,
                                                 endpoint=endpoint, etag_timeout=timeout)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise BitrlError(f"download of {name!r} from {endpoint} failed: {first}") from None
    return Path(path)
