import math

import pytest
import torch

from bitrl_ros.backbone.bitlinear import BitLinear
from bitrl_ros.backbone.bitnet import (apply_rope, bitnet_2b4t_config, bitnet_tiny_config, BitNetDecoder, DecoderConfig,
                                       rope_cos_sin)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = BitNetDecoder(bitnet_tiny_config()).eval()
    # Non-trivial norm gains so the sub-norms matter.
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "norm" in n:
                p.uniform_(0.5, 1.5)
    return m


def test_presets():
    c = bitnet_2b4t_config()
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads) == (2560, 30, 20, 5)
    assert (c.intermediate_size, c.rope_theta, c.vocab_size, c.hidden_act) == (6912, 500000.0, 128256, "relu2")
    with pytest.raises(ValueError):
        DecoderConfig(num_attention_heads=20, num_key_value_heads=6)


def test_parameter_names_mirror_hf(model):
    names = set(dict(model.named_parameters()))
    for n in ["embed_tokens.weight", "norm.weight", "layers.0.input_layernorm.weight",
              "layers.0.post_attention_layernorm.weight", "layers.1.self_attn.attn_sub_norm.weight",
              "layers.1.mlp.ffn_sub_norm.weight"]:
        assert n in names
    for proj in ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]:
        layer = model.get_submodule(f"layers.0.{proj}")
        assert isinstance(layer, BitLinear) and layer.bias is None
    assert model.get_submodule("layers.0.self_attn.k_proj").weight.shape == (32, 64)  # 2 kv heads * 16


def test_shapes_and_finite(model):
    ids = torch.randint(0, 256, (3, 11))
    with torch.no_grad():
        out, states = model(ids, output_hidden_states=True)
    assert out.shape == (3, 11, 64)
    assert len(states) == 3 and torch.isfinite(out).all()


def test_causality(model):
    torch.manual_seed(1)
    ids = torch.randint(0, 256, (1, 10))
    changed = ids.clone()
    changed[0, 6:] = (changed[0, 6:] + 17) % 256
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert torch.allclose(a[0, :6], b[0, :6], atol=1e-5)
    assert not torch.allclose(a[0, 6:], b[0, 6:], atol=1e-3)


def test_padding_mask_right_and_left(model):
    torch.manual_seed(2)
    ids = torch.randint(1, 256, (1, 7))
    with torch.no_grad():
        ref = model(ids)[0]
        right = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1)
        right_mask = torch.tensor([[1] * 7 + [0] * 4])
        out_r = model(right, attention_mask=right_mask)[0]
        left = torch.cat([torch.full((1, 4), 99), ids], 1)
        left_mask = torch.tensor([[0] * 4 + [1] * 7])
        out_l = model(left, attention_mask=left_mask)[0]
    assert torch.allclose(out_r[:7], ref, atol=1e-4)
    assert torch.allclose(out_l[4:], ref, atol=1e-4)
    assert torch.isfinite(out_l).all()
    # Without the mask the left padding tokens would change the states.
    with torch.no_grad():
        unmasked = model(left)[0]
    assert not torch.allclose(unmasked[4:], ref, atol=1e-3)


def test_gqa_matches_naive_per_head(model):
    torch.manual_seed(3)
    cfg = model.config
    attn = model.layers[0].self_attn
    x = torch.randn(2, 6, cfg.hidden_size)
    t = x.shape[1]
    positions = torch.arange(t)[None].expand(2, t)
    cos, sin = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta, x.dtype)
    causal = torch.full((t, t), torch.finfo(x.dtype).min).triu(1)[None, None]
    with torch.no_grad():
        got = attn(x, cos, sin, causal)
        q = attn.q_proj(x).view(2, t, cfg.num_attention_heads, cfg.head_dim)
        k = attn.k_proj(x).view(2, t, cfg.num_key_value_heads, cfg.head_dim)
        v = attn.v_proj(x).view(2, t, cfg.num_key_value_heads, cfg.head_dim)
        group = cfg.num_attention_heads // cfg.num_key_value_heads
        heads = []
        for h in range(cfg.num_attention_heads):
            kv = h // group
            qh = apply_rope(q[:, :, h], cos[:, 0], sin[:, 0])
            kh = apply_rope(k[:, :, kv], cos[:, 0], sin[:, 0])
            s = qh @ kh.transpose(-1, -2) / math.sqrt(cfg.head_dim)
            s = s.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
            heads.append(torch.softmax(s, -1) @ v[:, :, kv])
        want = attn.o_proj(attn.attn_sub_norm(torch.cat(heads, -1)))
    assert torch.allclose(got, want, atol=1e-5)


def test_rope_rotate_half_convention():
    cos, sin = rope_cos_sin(torch.tensor([[3]]), 4, 10000.0, torch.float32)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    y = apply_rope(x, cos[0, 0, 0], sin[0, 0, 0])
    f0, f1 = 3.0, 3.0 / 100.0  # theta^(-0/4), theta^(-2/4)
    want = torch.tensor([1 * math.cos(f0) - 3 * math.sin(f0), 2 * math.cos(f1) - 4 * math.sin(f1),
                         3 * math.cos(f0) + 1 * math.sin(f0), 4 * math.cos(f1) + 2 * math.sin(f1)])
    assert torch.allclose(y, want, atol=1e-6)


def test_squared_relu_gated_mlp(model):
    mlp = model.layers[0].mlp
    x = torch.randn(1, 3, 64)
    with torch.no_grad():
        want = mlp.down_proj(mlp.ffn_sub_norm(torch.relu(mlp.gate_proj(x)) ** 2 * mlp.up_proj(x)))
        assert torch.equal(mlp(x), want)
