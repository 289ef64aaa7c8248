"""Adaptive quantization noise (QeRL's AQN) on the encoder's normalization gains: the schedule, the noise on both
engines and both architectures, the cache that never mixes noisy and clean features, and a training run whose
evaluation runs clean.
"""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from bitrl_ros.backbone import load_backbone
from bitrl_ros.backbone.bitlinear import BitLinear
from bitrl_ros.backbone.bitnet import bitnet_tiny_config, BitNetDecoder
from bitrl_ros.backbone.engines import TorchEngine
from bitrl_ros.backbone.engines.native import native_available, NativeEncoder
from bitrl_ros.backbone.noise import aqn_sigma, NormNoise
from bitrl_ros.config import load_train_config
from bitrl_ros.errors import ConfigError

NATIVE = native_available()[0]


def test_schedule_is_noise_free_first_then_geometric():
    sig = [aqn_sigma(step, 400, 4, 1e-2, 1e-4) for step in (0, 99, 100, 199, 200, 299, 300, 399, 500)]
    assert sig[:2] == [0.0, 0.0]
    assert sig[2:] == pytest.approx([1e-2, 1e-2, 1e-3, 1e-3, 1e-4, 1e-4, 1e-4])
    assert aqn_sigma(150, 200, 2, 5e-3, 1e-4) == 5e-3 and aqn_sigma(50, 200, 2, 5e-3, 1e-4) == 0.0
    with pytest.raises(ValueError, match="at least 2 stages"):
        aqn_sigma(0, 10, 1, 1e-2, 1e-4)
    with pytest.raises(ValueError, match="sigma_end <= sigma_start"):
        aqn_sigma(0, 10, 3, 1e-4, 1e-2)


def test_config_refuses_an_increasing_schedule_and_noise_without_an_encoder():
    with pytest.raises(ConfigError, match="train.aqn.sigma_end"):
        load_train_config(None, {"aqn.sigma_start": 1e-4, "aqn.sigma_end": 1e-2})
    with pytest.raises(ConfigError, match="train.aqn.enabled"):
        load_train_config(None, {"aqn.enabled": True, "backbone": "mlp"})


@pytest.mark.skipif(not NATIVE, reason="the native extension is not built")
def test_the_shipped_encoder_gets_the_same_noise_on_both_engines_and_restores_exactly():
    native = load_backbone("minilm-bitnet-distilled", cache_mb=0)
    ref = load_backbone("minilm-bitnet-distilled", cache_mb=0, engine="torch")
    assert native.engine_name == "native" and ref.engine_name == "torch"
    # The embedding norm and both norms of each of the 6 layers, in the same order on both engines.
    assert len(native.engine.norm_gain_keys()) == len(ref.engine.norm_gain_keys()) == 13
    ids = native.tokenize(["cart 0.01 pole -0.20 angle 0.03 vel 0.4", "go to the red ball", "x 1.5 y -2.25"])
    clean = native.encode_tokens(ids)
    for bb in (native, ref):
        bb.set_norm_noise(1e-2, seed=0)
    for a, b in zip(native.engine.norm_gain_keys(), ref.engine.norm_gain_keys()):
        assert np.array_equal(native.engine.get_norm_gain(a), ref.engine.get_norm_gain(b)), (a, b)
    noisy = native.encode_tokens(ids)
    effect = np.abs(noisy - clean).mean()
    assert effect > 1e-3
    # The engines agree to float rounding, which can flip an int8 activation code next to a rounding boundary
    # (the noisy gains move activations across them): far less than the noise itself moves the features.
    assert np.abs(noisy - ref.encode_tokens(ids)).mean() < 0.25 * effect
    native.set_norm_noise(1e-2, seed=4)
    assert np.abs(native.encode_tokens(ids) - noisy).max() > 1e-4   # another seed, another draw
    native.set_norm_noise(0.0)
    assert native.noise_tag is None and np.array_equal(native.encode_tokens(ids), clean)


def test_the_cache_never_mixes_noisy_and_clean_features():
    bb = load_backbone("minilm-fp16", cache_mb=4)
    ids = bb.tokenize(["go to the red ball"])
    clean = bb.encode_tokens(ids)
    bb.set_norm_noise(5e-2, seed=1)
    assert bb.noise_tag == (5e-2, 1)
    noisy = bb.encode_tokens(ids)
    assert bb.cache_stats()["hits"] == 0 and not np.allclose(noisy, clean)
    bb.set_norm_noise(0.0)
    assert np.array_equal(bb.encode_tokens(ids), clean) and bb.cache_stats()["hits"] == 1
    bb.set_norm_noise(5e-2, seed=1)
    assert np.array_equal(bb.encode_tokens(ids), noisy) and bb.cache_stats()["hits"] == 2


def _tiny_decoder():
    torch.manual_seed(0)
    model = BitNetDecoder(bitnet_tiny_config())
    for m in model.modules():
        if isinstance(m, BitLinear):
            m.freeze()
    return model.eval()


@pytest.mark.parametrize("engine", ["torch", "native"])
def test_the_bitnet_decoder_s_rmsnorm_gains_are_perturbed_and_restored(engine):
    if engine == "native" and not NATIVE:
        pytest.skip("the native extension is not built")
    model = _tiny_decoder()
    eng = TorchEngine(model, 0) if engine == "torch" else NativeEncoder(model)
    layers = bitnet_tiny_config().num_hidden_layers
    assert len(eng.norm_gain_keys()) == 1 + 4 * layers   # final norm + 4 per layer (incl. the sub-norms)
    seqs = [[5, 9, 2, 7]]
    clean = eng.run(seqs, "mean")
    noise = NormNoise(eng)
    noise.apply(1e-1, seed=0)
    assert not np.allclose(eng.run(seqs, "mean"), clean)
    noise.apply(0.0, seed=0)
    assert np.array_equal(eng.run(seqs, "mean"), clean)


@pytest.mark.slow
def test_training_with_aqn_follows_the_schedule_and_evaluates_clean(tmp_path):
    from bitrl_ros.train import Trainer

    cfg = load_train_config(None, {"env": "MountainCar-v0", "total_steps": 4096, "eval_episodes": 1,
                                   "aqn.enabled": True, "aqn.stages": 4, "ppo.num_envs": 2, "ppo.num_steps": 512,
                                   "ppo.minibatch_size": 256})
    trainer = Trainer(cfg, run_dir=tmp_path / "run", progress=False, log=lambda *a: None)
    seen = []
    backbone = trainer.encoder.backbone
    original = backbone.set_norm_noise
    backbone.set_norm_noise = lambda sigma, seed=0: (seen.append((sigma, seed)), original(sigma, seed))[1]
    trainer.run()
    with open(tmp_path / "run" / "metrics.csv") as f:
        sigmas = [float(r["aqn_sigma"]) for r in csv.DictReader(f)]
    # 4 rollouts of 1024 steps over 4 stages of 1024: none, then 1e-2, 1e-3, 1e-4; one seed per rollout.
    assert sigmas == pytest.approx([0.0, 1e-2, 1e-3, 1e-4])
    assert [s for s, _ in seen[:4]] == pytest.approx(sigmas) and len({seed for _, seed in seen[:4]}) == 4
    assert seen[-1] == (0.0, 0) and backbone.noise_tag is None   # evaluation ran on the clean gains
