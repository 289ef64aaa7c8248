import json

import numpy as np
import pytest

from bitrl_ros.rl.normalize import ObservationNormalizer, RewardNormalizer, RunningMeanStd


def test_running_mean_std_matches_numpy_on_concatenated_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 3)) for n in (1, 7, 50, 2, 113)]
    rms = RunningMeanStd((3,))
    for b in batches:
        rms.update(b)
    everything = np.concatenate(batches)
    np.testing.assert_allclose(rms.mean, everything.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(rms.var, everything.var(axis=0), rtol=1e-12)
    assert rms.count == len(everything)


def test_observation_normalizer_freeze_and_state_round_trip():
    rng = np.random.default_rng(1)
    norm = ObservationNormalizer((2,), clip=5.0)
    data = rng.normal([10.0, -4.0], [3.0, 0.5], size=(500, 2))
    out = norm(data)
    assert np.abs(out.mean(axis=0)).max() < 1e-6 and np.allclose(out.std(axis=0), 1.0, atol=1e-6)
    norm.frozen = True
    before = norm.rms.mean.copy()
    norm(np.full((10, 2), 1e6))
    np.testing.assert_array_equal(norm.rms.mean, before)
    assert norm.normalize(np.full((1, 2), 1e6)).max() == 5.0  # clipped

    clone = ObservationNormalizer((2,))
    clone.load_state_dict(json.loads(json.dumps(norm.state_dict())))
    np.testing.assert_array_equal(clone.normalize(data), norm.normalize(data))
    assert clone.frozen and clone.clip == 5.0


def test_reward_normalizer_scales_by_discounted_return_std_and_resets():
    norm = RewardNormalizer(num_envs=1, gamma=0.5)
    returns = []
    g = 0.0
    for r, done in [(1.0, False), (1.0, False), (1.0, True), (2.0, False)]:
        g = g * 0.5 + r
        returns.append(g)
        out = norm([r], [done])
        if done:
            g = 0.0
    np.testing.assert_allclose(returns, [1.0, 1.5, 1.75, 2.0])  # the return restarted after the done
    assert out[0] == pytest.approx(2.0 / np.sqrt(np.var(returns) + 1e-8), rel=1e-6)
    state = json.loads(json.dumps(norm.state_dict()))
    clone = RewardNormalizer(num_envs=1, gamma=0.9)
    clone.load_state_dict(state)
    assert clone.gamma == 0.5 and clone([3.0], [False])[0] == norm([3.0], [False])[0]
