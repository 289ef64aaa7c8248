import math

import pytest
import torch

from bitrl_ros.backbone.bitlinear import (absmean_scale, BitLinear, fake_quant_activations, pack_ternary,
                                          quantize_activations, ternarize, unpack_ternary)


def test_absmean_ternary_hand_case():
    w = torch.tensor([[0.4, -0.2, 0.05, -1.0], [0.0, 0.3, -0.45, 0.9]])
    # mean |w| = (0.4+0.2+0.05+1.0+0+0.3+0.45+0.9)/8 = 0.4125
    q, scale = ternarize(w)
    assert scale.item() == pytest.approx(0.4125)
    assert q.dtype == torch.int8
    # w/scale = [0.97, -0.48, 0.12, -2.4], [0, 0.73, -1.09, 2.2]
    assert q.tolist() == [[1, 0, 0, -1], [0, 1, -1, 1]]


def test_absmean_scale_clamped_for_zero_weight():
    q, scale = ternarize(torch.zeros(3, 5))
    assert scale.item() == pytest.approx(1e-5)
    assert torch.all(q == 0)
    assert absmean_scale(torch.zeros(2)).item() > 0


def test_int8_activation_quant_per_token():
    x = torch.tensor([[1.0, -0.5, 0.25], [0.0, 0.0, 0.0], [-4.0, 2.0, 1.0]])
    xq, s = quantize_activations(x)
    assert xq.dtype == torch.int8
    assert xq[0].tolist() == [127, -64, 32]  # 127/1 scale; -63.5 rounds half-to-even to -64
    assert xq[1].tolist() == [0, 0, 0]
    assert xq[2].tolist() == [-127, 64, 32]  # 2*31.75=63.5 -> 64, 31.75 -> 32
    assert s[2].item() == pytest.approx(127 / 4)
    deq = fake_quant_activations(x)
    assert torch.allclose(deq, x, atol=4 / 127 / 2 + 1e-6)


def test_bitlinear_ste_gradient_reaches_weight_and_input():
    torch.manual_seed(0)
    layer = BitLinear(8, 4)
    x = torch.randn(3, 8, requires_grad=True)
    layer(x).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    # STE: the gradient w.r.t. x is that of a plain linear with the quantized weight.
    q, s = ternarize(layer.weight)
    assert torch.allclose(x.grad, (q.float() * s).sum(0).expand(3, 8), atol=1e-6)


def test_bitlinear_freeze_matches_fake_quant_and_caches():
    torch.manual_seed(1)
    layer = BitLinear(16, 8).eval()
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        before = layer(x)
    layer.freeze()
    assert layer.frozen and not layer.weight.requires_grad
    with torch.no_grad():
        after = layer(x)
    assert torch.equal(before, after)
    # The cached weight is used, not the float weight: change the latter and the output stays.
    cached = layer._w_eff.clone()
    with torch.no_grad():
        layer.weight.add_(1.0)
        assert torch.equal(layer(x), after)
    assert torch.equal(layer._w_eff, cached)


@pytest.mark.parametrize("in_features", [1, 3, 4, 5, 7, 8, 33])
def test_pack_unpack_round_trip(in_features):
    torch.manual_seed(in_features)
    t = torch.randint(-1, 2, (6, in_features), dtype=torch.int8)
    packed = pack_ternary(t)
    assert packed.dtype == torch.uint8
    assert packed.shape == (6, math.ceil(in_features / 4))
    assert packed.numel() * 8 <= 2 * t.numel() + 6 * 8  # <= 2 bits per weight plus row padding
    assert torch.equal(unpack_ternary(packed, in_features), t)


def test_pack_layout_and_size():
    t = torch.tensor([[-1, 0, 1, 1, 0, -1, -1, 1]], dtype=torch.int8)
    packed = pack_ternary(t)
    # codes 0,1,2,2 -> 0 | 1<<2 | 2<<4 | 2<<6 = 0b10100100
    assert packed.tolist() == [[0b10100100, 0b10000001]]
    big = torch.randint(-1, 2, (64, 256), dtype=torch.int8)
    assert pack_ternary(big).numel() * 8 == 2 * big.numel()


def test_pack_rejects_bad_values():
    with pytest.raises(ValueError):
        pack_ternary(torch.tensor([[2, 0]], dtype=torch.int8))
    with pytest.raises(ValueError):
        unpack_ternary(torch.tensor([[255]], dtype=torch.uint8), 4)  # code 3 is invalid
