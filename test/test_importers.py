"""HF BitNet b1.58 importers: tiny checkpoints in the 2B4T layouts (packed and bf16), checked against an
independent plain-torch implementation of the 2B4T block; fetch-model's offline failure path.
"""

import json
import math
import time

import numpy as np
import pytest
from safetensors.torch import load_file, save_file
from tokenizers import decoders, models, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as HFTokenizer
import torch
import torch.nn.functional as F

from bitrl_ros import cli
from bitrl_ros.backbone.bitlinear import BitLinear
from bitrl_ros.backbone.engines.native import native_available, NativeEncoder
from bitrl_ros.backbone.importers import import_hf_bitnet
from bitrl_ros.backbone.model_file import load_model, save_model
from bitrl_ros.errors import ModelFileError

HIDDEN, INTER, LAYERS, HEADS, KV_HEADS, THETA, EPS = 64, 96, 2, 4, 2, 500000.0, 1e-5
HEAD_DIM = HIDDEN // HEADS
TEXTS = ["the robot arm moves left", "joint angle 0.25 velocity -1.5", "pole upright, cart at rest"]
LINEARS = [("self_attn", "q_proj", HEADS * HEAD_DIM, HIDDEN), ("self_attn", "k_proj", KV_HEADS * HEAD_DIM, HIDDEN),
           ("self_attn", "v_proj", KV_HEADS * HEAD_DIM, HIDDEN), ("self_attn", "o_proj", HIDDEN, HEADS * HEAD_DIM),
           ("mlp", "gate_proj", INTER, HIDDEN), ("mlp", "up_proj", INTER, HIDDEN), ("mlp", "down_proj", HIDDEN, INTER)]


# ------------------------------------------------------------------------------------------ fixtures


def _tokenizer_json(path):
    """A small byte-level BPE with LLaMA-3's special tokens and BOS post-processor."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TEXTS * 5, trainer=trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B",
                                                       special_tokens=[("<|begin_of_text|>", bos)])
    tok.save(str(path))
    return tok.get_vocab_size()


def _hf_pack(q):
    """transformers.integrations.bitnet.pack_weights, re-implemented: codes w+1 along dim 0, 4 row blocks."""
    q = q.clone().to(torch.int16)
    rows = (q.shape[0] + 3) // 4
    packed = torch.zeros((rows, q.shape[1]), dtype=torch.uint8)
    unpacked = (q + 1).to(torch.uint8)
    for i in range(min(4, q.shape[0] // rows + 1)):
        start, end = i * rows, min((i + 1) * rows, q.shape[0])
        packed[: end - start] |= unpacked[start:end] << (2 * i)
    return packed


def _config(vocab, quant):
    cfg = {"architectures": ["BitNetForCausalLM"], "model_type": "bitnet", "bos_token_id": 0, "eos_token_id": 1,
           "hidden_act": "relu2", "hidden_size": HIDDEN, "initializer_range": 0.02, "intermediate_size": INTER,
           "max_position_embeddings": 128, "rms_norm_eps": EPS, "num_attention_heads": HEADS,
           "num_hidden_layers": LAYERS, "num_key_value_heads": KV_HEADS, "rope_theta": THETA,
           "tie_word_embeddings": True, "torch_dtype": "bfloat16", "use_cache": True, "vocab_size": vocab}
    if quant:
        cfg["quantization_config"] = quant
    return cfg


def _build(directory, layout, seed=0, linear_class="autobitlinear"):
    """Write a tiny checkpoint; returns the reference weights {name: fp32 effective tensor}."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = _tokenizer_json(directory / "tokenizer.json") + 4  # padded vocab, like 2B4T's 128256
    g = torch.Generator().manual_seed(seed)
    tensors, ref = {}, {}

    def norm(n):
        return (1.0 + 0.3 * torch.randn(n, generator=g)).to(torch.bfloat16)

    tensors["model.embed_tokens.weight"] = torch.randn(vocab, HIDDEN, generator=g).to(torch.bfloat16)
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        for key in ("input_layernorm", "post_attention_layernorm", "self_attn.attn_sub_norm"):
            tensors[f"{p}.{key}.weight"] = norm(HIDDEN)
        tensors[f"{p}.mlp.ffn_sub_norm.weight"] = norm(INTER)
        for block, name, out_f, in_f in LINEARS:
            key = f"{p}.{block}.{name}"
            if layout == "packed":
                q = torch.randint(-1, 2, (out_f, in_f), generator=g, dtype=torch.int8)
                s = (0.5 + torch.rand(1, generator=g)).to(torch.bfloat16)  # shape (1,), bf16, as in 2B4T
                tensors[f"{key}.weight"] = _hf_pack(q)
                tensors[f"{key}.weight_scale"] = s
                real = q.float() * s.float() if linear_class == "autobitlinear" else q.float() / s.float()
            else:
                w = (torch.randn(out_f, in_f, generator=g) * 1.5).to(torch.bfloat16)
                tensors[f"{key}.weight"] = w
                # WeightQuant (online mode): s = 1 / mean|W|; round(W * s).clamp(-1, 1) / s
                wf = w.float()
                s = 1.0 / wf.abs().mean().clamp(min=1e-5)
                real = (wf * s).round().clamp(-1, 1) / s
            ref[key] = real
    tensors["model.norm.weight"] = norm(HIDDEN)
    for k, v in tensors.items():
        if k.removesuffix(".weight") not in ref and not k.endswith(".weight_scale") and v.dtype == torch.bfloat16:
            ref[k.removesuffix(".weight")] = v.float()
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    quant = ({"quant_method": "bitnet", "linear_class": linear_class, "quantization_mode": "offline"}
             if layout == "packed" else
             {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online"})
    (directory / "config.json").write_text(json.dumps(_config(vocab, quant), indent=2))
    return ref


# --------------------------------------------------------------------- independent reference model


def _rms(x, w):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS))


def _act_quant(x):  # transformers ActQuant: per-token absmax int8, dequantized
    s = 127 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
    return (x * s).round().clamp(-128, 127) / s


def _lin(x, w):
    return F.linear(_act_quant(x), w)


def _rope(x, pos):
    half = HEAD_DIM // 2
    inv = 1.0 / THETA ** (torch.arange(0, HEAD_DIM, 2).float() / HEAD_DIM)
    ang = pos.float()[:, None] * inv[None]  # [T, half]
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def _reference(ref, ids):
    """Single-sequence forward of the 2B4T architecture from the effective weights -> final hidden [T, H]."""
    x = ref["model.embed_tokens"][torch.tensor(ids)]
    t = x.shape[0]
    pos = torch.arange(t)
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        h = _rms(x, ref[f"{p}.input_layernorm"])
        q = _lin(h, ref[f"{p}.self_attn.q_proj"]).view(t, HEADS, HEAD_DIM).transpose(0, 1)
        k = _lin(h, ref[f"{p}.self_attn.k_proj"]).view(t, KV_HEADS, HEAD_DIM).transpose(0, 1)
        v = _lin(h, ref[f"{p}.self_attn.v_proj"]).view(t, KV_HEADS, HEAD_DIM).transpose(0, 1)
        q, k = _rope(q, pos), _rope(k, pos)
        outs = []
        for head in range(HEADS):
            kv = head // (HEADS // KV_HEADS)
            sc = (q[head] @ k[kv].T) / math.sqrt(HEAD_DIM)
            sc = sc.masked_fill(~causal, float("-inf"))
            outs.append(torch.softmax(sc, -1) @ v[kv])
        a = torch.cat(outs, dim=-1)
        x = x + _lin(_rms(a, ref[f"{p}.self_attn.attn_sub_norm"]), ref[f"{p}.self_attn.o_proj"])
        h = _rms(x, ref[f"{p}.post_attention_layernorm"])
        m = F.relu(_lin(h, ref[f"{p}.mlp.gate_proj"])).square() * _lin(h, ref[f"{p}.mlp.up_proj"])
        x = x + _lin(_rms(m, ref[f"{p}.mlp.ffn_sub_norm"]), ref[f"{p}.mlp.down_proj"])
    return _rms(x, ref["model.norm"])


def _check_against_reference(model, tokenizer, ref):
    for ids in tokenizer.encode_batch(TEXTS):
        with torch.inference_mode():
            ours = model(torch.tensor([ids]))[0]
        want = _reference(ref, ids)
        scale = want.abs().max().item()
        assert (ours - want).abs().max().item() <= 1e-4 * max(scale, 1.0), ids
        # logits through the tied embeddings (2B4T: tie_word_embeddings=true)
        emb = ref["model.embed_tokens"]
        lo, lw = ours @ emb.T, want @ emb.T
        assert (lo - lw).abs().max().item() <= 1e-4 * lw.abs().max().item()
        assert torch.equal(lo.argmax(-1), lw.argmax(-1))


@pytest.fixture(scope="module")
def packed_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("hf-packed")
    return d, _build(d, "packed")


# ------------------------------------------------------------------------------------------- tests


def test_packed_import_matches_reference(packed_ckpt):
    d, ref = packed_ckpt
    model, tok = import_hf_bitnet(d)
    assert model.hf_import["format"] == "packed" and model.hf_import["linear_class"] == "autobitlinear"
    lins = [m for m in model.modules() if isinstance(m, BitLinear)]
    assert len(lins) == 7 * LAYERS and all(m.frozen for m in lins)
    assert not any(p.requires_grad for p in model.parameters())
    # exact ternary values and scales
    q, s = model.layers[1].mlp.down_proj.ternary()
    assert torch.equal(q.float() * s, ref["model.layers.1.mlp.down_proj"])
    assert tok.pad_id == tok._hf.token_to_id("<|finetune_right_pad_id|>")
    _check_against_reference(model, tok, ref)


def test_packed_bitlinear_class_divides_by_the_scale(tmp_path):
    ref = _build(tmp_path, "packed", seed=3, linear_class="bitlinear")
    model, tok = import_hf_bitnet(tmp_path)
    assert model.hf_import["linear_class"] == "bitlinear"
    _check_against_reference(model, tok, ref)


def test_bf16_master_import_matches_reference(tmp_path):
    ref = _build(tmp_path, "bf16", seed=1)
    model, tok = import_hf_bitnet(tmp_path)
    assert model.hf_import["format"] == "bf16" and model.hf_import["quantization_mode"] == "online"
    _check_against_reference(model, tok, ref)


def test_sharded_checkpoint(tmp_path, packed_ckpt):
    d, ref = packed_ckpt
    tensors = load_file(str(d / "model.safetensors"))
    keys = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for fname, ks in halves.items():
        save_file({k: tensors[k] for k in ks}, str(tmp_path / fname))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: f for f, ks in halves.items() for k in ks}}))
    for f in ("config.json", "tokenizer.json"):
        (tmp_path / f).write_bytes((d / f).read_bytes())
    model, tok = import_hf_bitnet(tmp_path)
    _check_against_reference(model, tok, ref)


def test_save_load_roundtrip_and_cli(tmp_path, packed_ckpt, capsys):
    d, _ = packed_ckpt
    model, tok = import_hf_bitnet(d)
    ids = torch.tensor(tok.encode_batch(TEXTS[:1]))
    with torch.inference_mode():
        want = model(ids)
    save_model(model, tok.path, tmp_path / "saved")
    loaded, _ = load_model(tmp_path / "saved")
    with torch.inference_mode():
        assert torch.equal(loaded(ids), want)
    assert cli.main(["import-model", str(d), str(tmp_path / "cli")]) == 0
    assert "packed" in capsys.readouterr().out
    loaded, _ = load_model(tmp_path / "cli")
    with torch.inference_mode():
        assert torch.equal(loaded(ids), want)


@pytest.mark.skipif(not native_available()[0], reason="native engine not built")
def test_native_engine_agrees_on_imported_model(packed_ckpt):
    d, _ = packed_ckpt
    model, tok = import_hf_bitnet(d)
    seqs = tok.encode_batch(TEXTS)
    nat = NativeEncoder(model, threads=1).hidden(seqs)
    for i, s in enumerate(seqs):
        with torch.inference_mode():
            want = model(torch.tensor([s]))[0].numpy()
        got = nat[i, : len(s)]
        cos = (got * want).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1))
        assert cos.min() >= 0.999, cos


def _rewrite(src, dst, edit):
    tensors = load_file(str(src / "model.safetensors"))
    edit(tensors)
    dst.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst / "model.safetensors"))
    for f in ("config.json", "tokenizer.json"):
        (dst / f).write_bytes((src / f).read_bytes())
    return dst


def test_missing_key_is_named(tmp_path, packed_ckpt):
    d, _ = packed_ckpt
    key = "model.layers.1.self_attn.k_proj.weight_scale"
    bad = _rewrite(d, tmp_path / "a", lambda t: t.pop(key))
    with pytest.raises(ModelFileError, match=key.replace(".", r"\.")) as e:
        import_hf_bitnet(bad)
    assert "model.safetensors" in str(e.value)
    key2 = "model.layers.0.mlp.ffn_sub_norm.weight"
    bad = _rewrite(d, tmp_path / "b", lambda t: t.pop(key2))
    with pytest.raises(ModelFileError, match=key2.replace(".", r"\.")):
        import_hf_bitnet(bad)


def test_wrong_shape_bad_code_and_extra_key(tmp_path, packed_ckpt):
    d, _ = packed_ckpt
    key = "model.layers.0.mlp.up_proj.weight"
    bad = _rewrite(d, tmp_path / "a", lambda t: t.__setitem__(key, t[key][:-1].clone()))
    with pytest.raises(ModelFileError, match=r"up_proj\.weight.*shape"):
        import_hf_bitnet(bad)

    def code3(t):
        t[key] = t[key].clone()
        t[key][0, 0] = 0xFF
    bad = _rewrite(d, tmp_path / "b", code3)
    with pytest.raises(ModelFileError, match="invalid code 3"):
        import_hf_bitnet(bad)
    bad = _rewrite(d, tmp_path / "c", lambda t: t.__setitem__("model.layers.0.mlp.extra.weight", torch.zeros(2)))
    with pytest.raises(ModelFileError, match="unexpected tensors"):
        import_hf_bitnet(bad)
    # lm_head (untied checkpoints) is ignored: the decoder returns hidden states
    ok = _rewrite(d, tmp_path / "d", lambda t: t.__setitem__("lm_head.weight", torch.zeros(3, HIDDEN)))
    import_hf_bitnet(ok)


def test_bad_config(tmp_path, packed_ckpt):
    d, _ = packed_ckpt
    bad = _rewrite(d, tmp_path / "a", lambda t: None)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["quantization_config"]["quant_method"] = "gptq"
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="config.json.*unknown quantization_config.quant_method 'gptq'"):
        import_hf_bitnet(bad)
    cfg["quantization_config"] = {"quant_method": "bitnet", "linear_class": "weird"}
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="linear_class 'weird'"):
        import_hf_bitnet(bad)
    del cfg["hidden_size"]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="hidden_size"):
        import_hf_bitnet(bad)
    (bad / "model.safetensors").write_bytes(b"garbage")
    (bad / "config.json").write_text((d / "config.json").read_text())
    with pytest.raises(ModelFileError, match="corrupt"):
        import_hf_bitnet(bad)
    with pytest.raises(ModelFileError, match="not found"):
        import_hf_bitnet(tmp_path / "nope")


def test_fetch_model_fails_fast_without_network(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    def no_download(*a, **k):  # the test must never reach a network
        raise AssertionError("snapshot_download called")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("_BITRL_HF_OFFLINE_DEFAULTED", "")
    t0 = time.monotonic()
    rc = cli.main(["fetch-model", "microsoft/bitnet-b1.58-2B-4T", "--dest", str(tmp_path / "m"), "--timeout", "1"])
    assert time.monotonic() - t0 < 5
    assert rc == 2
    err = capsys.readouterr().err
    assert "no network access to the Hugging Face hub" in err and "127.0.0.1:9" in err
    assert len(err.strip().splitlines()) == 1
    # a user-set HF_HUB_OFFLINE also fails fast, without touching the network
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("_BITRL_HF_OFFLINE_DEFAULTED", "")
    assert cli.main(["fetch-model", "microsoft/bitnet-b1.58-2B-4T", "--dest", str(tmp_path / "m")]) == 2
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err
