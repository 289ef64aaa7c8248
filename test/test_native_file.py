"""A model directory straight into the native engine, without torch: the same numbers as the torch-built native
model, the same refusals as the torch loader, an int8 embedding table kept int8, and node processes that encode
without ever importing torch.
"""
import json
import subprocess
import sys

import numpy as np
import pytest

from bitrl_ros.backbone import load_backbone
from bitrl_ros.backbone.engines.native import native_available, NativeEncoder
from bitrl_ros.backbone.locations import shipped_model_dir
from bitrl_ros.backbone.model_file import load_model, save_model
from test_backbone_file import _raises, tiny_encoder, tokenizer_json  # noqa: F401 (a fixture)
from test_native_engine import tiny_decoder

pytestmark = pytest.mark.skipif(not native_available()[0], reason="native engine not built")
SHIPPED = "minilm-bitnet-distilled"


def _seqs(vocab: int, n: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, size=int(k)).tolist() for k in rng.integers(1, 24, size=n)]


def test_shipped_model_from_file_is_bit_identical_to_the_torch_built_one():
    from bitrl_ros.backbone.engines.native.from_file import load_native_model

    model, _ = load_model(shipped_model_dir(SHIPPED))
    from_torch = NativeEncoder(model)
    from_file = NativeEncoder(load_native_model(shipped_model_dir(SHIPPED)))
    seqs = _seqs(30522, seed=1)
    for pooling in ("mean", "cls", "last"):
        np.testing.assert_array_equal(from_file.run(seqs, pooling), from_torch.run(seqs, pooling))
    np.testing.assert_array_equal(from_file.hidden(seqs), from_torch.hidden(seqs))
    # the shipped table is int8 in the file and stays int8 in the engine: a quarter of float32, plus row scales
    vocab, hidden = 30522, 384
    assert from_torch.native.embedding_bytes() == vocab * hidden * 4
    assert from_file.native.embedding_bytes() == vocab * hidden + vocab * 4


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
@pytest.mark.parametrize("embedding_dtype", ["float32", "float16", "int8"])
def test_saved_models_load_into_the_native_engine_as_torch_computes_them(tmp_path, tokenizer_json, kind,  # noqa: F811
                                                                         embedding_dtype):
    from bitrl_ros.backbone.engines.native.from_file import load_native_model

    model = tiny_encoder() if kind == "encoder" else tiny_decoder()
    directory = save_model(model, tokenizer_json, tmp_path / "m", embedding_dtype=embedding_dtype)
    reloaded, _ = load_model(directory)  # what the torch loader makes of the file (stored embedding values)
    seqs = _seqs(model.config.vocab_size, seed=2)
    want = NativeEncoder(reloaded).run(seqs, "mean")
    np.testing.assert_array_equal(NativeEncoder(load_native_model(directory)).run(seqs, "mean"), want)


@pytest.fixture
def saved(tmp_path, tokenizer_json):  # noqa: F811
    return save_model(tiny_encoder(), tokenizer_json, tmp_path / "m", embedding_dtype="int8")


def _refused(directory, *fragments):
    from bitrl_ros.backbone.engines.native.from_file import load_native_model

    _raises(directory, *fragments, load=load_native_model)


def test_the_native_loader_refuses_what_the_torch_loader_refuses(saved):
    from safetensors.numpy import load_file, save_file

    cfg = json.loads((saved / "config.json").read_text())
    cfg["config"]["intermediate_size"] = 48
    (saved / "config.json").write_text(json.dumps(cfg))
    _refused(saved, "model.safetensors", "layers.0.up", "shape")
    cfg["config"]["intermediate_size"] = 64
    (saved / "config.json").write_text(json.dumps(cfg))
    tensors = load_file(saved / "model.safetensors")
    save_file({**tensors, "stray.weight": np.zeros(3, np.float32)}, saved / "model.safetensors")
    _refused(saved, "unexpected tensors", "stray.weight")
    del tensors["embeddings.word.weight_scale"]
    save_file(tensors, saved / "model.safetensors")
    _refused(saved, "missing tensor", "embeddings.word.weight_scale")
    data = (saved / "model.safetensors").read_bytes()
    (saved / "model.safetensors").write_bytes(data[: len(data) // 2])
    _refused(saved, "corrupt")


def test_load_backbone_reads_a_ternary_model_directory_without_a_torch_module():
    auto = load_backbone(SHIPPED, cache_mb=0)
    assert auto.engine_name == "native" and auto.model is None
    torch_engine = load_backbone(SHIPPED, cache_mb=0, engine="torch")
    assert torch_engine.model is not None
    ids = auto.tokenize(["12 -3 4 0", "cart at 0.1"])
    np.testing.assert_allclose(auto.encode_tokens(ids), torch_engine.encode_tokens(ids), atol=0.05)
    assert auto.encode_fields(ids, [[-1] + [0] * (len(i) - 2) + [-1] for i in ids], 1).shape == (2, 384)


NO_TORCH_PROCESS = """
import sys
import numpy as np
from bitrl_ros.nodes import ternary_encoder, state_serializer, sim_bridge, diagnostics_monitor  # noqa: F401
from bitrl_ros.backbone import load_backbone
from bitrl_ros.envs import get_spec
from bitrl_ros.features import EmbedStage, FeatureLayout, TextStage
from bitrl_ros.serialize import get_serializer
spec = get_spec("CartPole-v1")
serializer = get_serializer("CartPole-v1")
bb = load_backbone("minilm-bitnet-distilled")
layout = FeatureLayout.build(spec, bb.id, bb.hidden_size, "fields_proj", False, serializer)
_, _, ids, fields = TextStage(spec, serializer, bb.tokenizer)(np.zeros((2, 4)))
feats = EmbedStage(bb, layout).embed(ids, fields)
assert feats.shape == (2, 4 * 384), feats.shape
assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))[:5]
print("ok", bb.engine_name)
"""


def test_the_encoding_nodes_never_import_torch():
    """The encoder, serializer, bridge and diagnostics processes of the graph encode with numpy and the native
    engine alone (only policy_value, which trains, imports torch).
    """
    out = subprocess.run([sys.executable, "-c", NO_TORCH_PROCESS], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["ok", "native"]


def test_an_int8_embedding_table_can_be_handed_over_in_chunks():
    """How a big vocabulary (2B4T: 128k rows) is loaded without a second full copy: rows in chunks, same output."""
    import torch

    from bitrl_ros.backbone.model_file import dequantize_rows_int8, quantize_rows_int8

    model = tiny_decoder()
    with torch.no_grad():  # a float table that int8 rows represent exactly
        q, s = quantize_rows_int8(model.embed_tokens.weight)
        model.embed_tokens.weight.copy_(dequantize_rows_int8(q, s))
    reference, chunked = NativeEncoder(model), NativeEncoder(model)
    q, s = q.numpy(), s.numpy()
    for start in range(0, len(q), 100):
        chunked.native.set_embedding_int8("embed_tokens", q[start:start + 100], s[start:start + 100], start)
    chunked.native.check_ready()
    assert chunked.native.embedding_bytes() == q.size + 4 * len(q) < reference.native.embedding_bytes()
    seqs = _seqs(len(q), seed=3)
    np.testing.assert_array_equal(chunked.run(seqs, "mean"), reference.run(seqs, "mean"))
    partial = NativeEncoder(model).native
    partial.set_embedding_int8("embed_tokens", q[:100], s[:100], 0)
    with pytest.raises(RuntimeError, match="embedding"):
        partial.check_ready()
    with pytest.raises(ValueError, match="do not fit"):
        partial.set_embedding_int8("embed_tokens", q[:100], s[:100], len(q) - 50)
