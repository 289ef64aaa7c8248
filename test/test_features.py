import numpy as np
import pytest

from bitrl_ros.backbone import load_backbone
from bitrl_ros.envs import get_spec
from bitrl_ros.errors import InvalidObservation
from bitrl_ros.features import StateEncoder
from bitrl_ros.serialize import get_serializer


@pytest.fixture(scope="module")
def ptq():
    return load_backbone("minilm-ternary-ptq", cache_mb=4)


def test_backbone_features_with_raw_skip_and_cache(ptq):
    spec = get_spec("CartPole-v1")
    enc = StateEncoder(spec, get_serializer("CartPole-v1"), ptq, readout="mean", raw_skip=True)
    obs = np.array([[0.01, -0.2, 0.03, 0.1], [0.02, 0.5, -0.04, -0.3]], dtype=np.float32)
    feats = enc(obs)
    assert feats.shape == (2, ptq.hidden_size + 4) == (2, enc.feature_dim)
    np.testing.assert_allclose(feats[:, -4:], obs)
    hits_before = ptq.cache_stats()["hits"]
    again = enc(obs)
    np.testing.assert_array_equal(again, feats)
    assert ptq.cache_stats()["hits"] == hits_before + 2
    assert enc.stats()["mean_tokens"] > 4


def test_mlp_backbone_passes_raw_observation():
    spec = get_spec("Acrobot-v1")
    enc = StateEncoder(spec, None, None)
    obs = np.ones((3, 6))
    assert enc.feature_dim == 6
    np.testing.assert_array_equal(enc(obs), obs.astype(np.float32))


@pytest.mark.parametrize("bad,needle", [
    ([[0.0, np.nan, 0.0, 0.0]], "x_dot"),
    ([[0.0, 0.0, np.inf, 0.0]], "theta"),
    ([[0.0, 0.0, 0.0]], "length 3"),
])
def test_invalid_observations_never_reach_the_backbone(ptq, bad, needle):
    enc = StateEncoder(get_spec("CartPole-v1"), get_serializer("CartPole-v1"), ptq)
    misses = ptq.cache_stats()["misses"]
    with pytest.raises(InvalidObservation, match=needle):
        enc(np.array(bad))
    assert ptq.cache_stats()["misses"] == misses
