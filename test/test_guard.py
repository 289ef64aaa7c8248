"""The glitch guard: a well-formed but absurd observation or reward costs no more than the step it is in."""
import functools

import gymnasium as gym
import numpy as np
import pytest

from bitrl_ros.config import load_train_config
from bitrl_ros.envs.faults import SensorGlitch
from bitrl_ros.rl.guard import InputGuard, observation_bounds
from bitrl_ros.serialize.field_scales import load_field_scales
from bitrl_ros.train import Trainer

CARTPOLE = gym.make("CartPole-v1").observation_space


def test_bounds_come_from_the_space_where_finite_else_from_the_fitted_scales():
    bound = observation_bounds("CartPole-v1", CARTPOLE, 100.0)
    scales = load_field_scales("CartPole-v1")
    assert bound[0] == pytest.approx(4.8) and bound[2] == pytest.approx(0.4189, abs=1e-3)  # the space's bounds
    assert bound[1] == pytest.approx(100 * scales[1]) and bound[3] == pytest.approx(100 * scales[3])


@pytest.mark.parametrize("policy", ["reject", "clip", "off"])
def test_policies(policy):
    guard = InputGuard(np.array([1.0, 2.0]), reward_bound=10.0, policy=policy)
    last = np.array([[0.5, 0.5], [0.1, 0.2]], dtype=np.float32)
    obs, bad = guard.observations(np.array([[0.2, 0.3], [1e30, 0.0]], dtype=np.float32), last)
    rewards, bad_r = guard.rewards(np.array([1.0, 1e38]))
    assert list(bad) == [False, True] and list(bad_r) == [False, True]
    assert guard.counts() == {"glitched_observations": 1, "glitched_rewards": 1}  # counted under every policy
    np.testing.assert_allclose(obs[0], [0.2, 0.3], rtol=1e-6)
    expected_obs, expected_reward = {"reject": ([0.1, 0.2], 0.0), "clip": ([1.0, 0.0], 10.0),
                                     "off": ([1e30, 0.0], 1e38)}[policy]
    np.testing.assert_allclose(obs[1], expected_obs, rtol=1e-6)
    assert rewards[0] == 1.0 and rewards[1] == pytest.approx(expected_reward)


def _glitchy_run(tmp_path, policy):
    cfg = load_train_config(overrides={"backbone": "mlp", "total_steps": 4096, "eval_episodes": 0,
                                       "guard.policy": policy})
    trainer = Trainer(cfg, run_dir=tmp_path / policy, progress=False, log=lambda *a: None,
                      env_wrapper=functools.partial(SensorGlitch, every=50))
    return trainer, trainer.run()


def test_a_glitching_sensor_does_not_poison_normalizers_or_returns(tmp_path):
    trainer, result = _glitchy_run(tmp_path, "reject")
    assert result.glitched_rewards >= 4096 // 50 - 8 and result.glitched_observations > 0
    assert all(0 < r <= 500 for r in result.episode_returns)  # returns from the accepted rewards only
    norm = trainer.learner.feature_norm.rms
    assert np.all(np.abs(norm.mean) < 10) and np.all(norm.var < 100)  # CartPole's own scale, not 1e30's
    assert np.isfinite(trainer.learner.reward_norm.rms.var) and trainer.learner.reward_norm.rms.var < 1e6


def test_without_the_guard_the_same_glitches_swamp_everything(tmp_path):
    trainer, result = _glitchy_run(tmp_path, "off")  # what the guard prevents (how it was before)
    assert max(result.episode_returns) > 1e30 and np.max(trainer.learner.feature_norm.rms.var) > 1e40
