import numpy as np
import pytest

from bitrl_ros.rl.buffer import RolloutBuffer
from bitrl_ros.rl.gae import compute_gae

# One env, 4 steps, gamma = lam = 0.5: terminated after step 1, truncated after step 2 with V(final_obs) = 10.
REWARDS = [1.0, 2.0, 3.0, 4.0]
VALUES = [0.5, 1.0, 1.5, 2.0]
TERMINATED = [False, True, False, False]
TRUNCATED = [False, False, True, False]
# By hand (delta_t = r_t + g * V_next * (1 - done_t) - V_t, A_t = delta_t + g * lam * (1 - done_t) * A_{t+1}):
#   t=3: 4 + 0.5*3 - 2 = 3.5                       (bootstraps from last_values = 3)
#   t=2: (3 + 0.5*10) - 1.5 = 6.5                  (truncated: reward carries gamma * V(final_obs))
#   t=1: 2 - 1 = 1.0                               (terminated: no bootstrap)
#   t=0: 1 + 0.5*1.0 - 0.5 = 1.0; A = 1.0 + 0.25*1.0 = 1.25
EXPECTED_ADV = [1.25, 1.0, 6.5, 3.5]
EXPECTED_RET = [1.75, 2.0, 8.0, 5.5]


def filled_buffer():
    buf = RolloutBuffer(4, 1, feature_dim=2)
    for t in range(4):
        buf.add(np.zeros((1, 2)), [0], [0.0], [VALUES[t]], [REWARDS[t]], [TERMINATED[t]], [TRUNCATED[t]],
                bootstrap_values=[10.0])
    return buf


def test_hand_computed_gae_with_termination_and_truncation():
    buf = filled_buffer()
    adv, ret = compute_gae(buf.gae_rewards(0.5), buf.values, buf.dones, np.array([3.0]), np.array([False]), 0.5, 0.5)
    np.testing.assert_allclose(adv[:, 0], EXPECTED_ADV, rtol=1e-6)
    np.testing.assert_allclose(ret[:, 0], EXPECTED_RET, rtol=1e-6)


def test_bootstrap_only_on_truncated_not_terminated_steps():
    buf = filled_buffer()
    # Steps 0, 1 and 3 were passed bootstrap 10 as well, but only the truncated step keeps it.
    np.testing.assert_array_equal(buf.bootstrap_values[:, 0], [0.0, 0.0, 10.0, 0.0])
    buf.reset()
    buf.add(np.zeros((1, 2)), [0], [0.0], [0.0], [1.0], [True], [True], bootstrap_values=[10.0])
    assert buf.gae_rewards(0.5)[0, 0] == 1.0  # terminated wins over truncated


def test_truncation_requires_bootstrap_value():
    buf = RolloutBuffer(2, 1, feature_dim=2)
    with pytest.raises(ValueError, match="bootstrap"):
        buf.add(np.zeros((1, 2)), [0], [0.0], [0.0], [1.0], [False], [True])


def test_episode_end_at_last_step_ignores_last_values():
    rewards = np.array([[1.0], [2.0]])
    values = np.array([[0.0], [0.0]])
    dones = np.array([[False], [True]])
    adv, _ = compute_gae(rewards, values, dones, np.array([100.0]), np.array([True]), 0.9, 1.0)
    np.testing.assert_allclose(adv[:, 0], [1.0 + 0.9 * 2.0, 2.0], rtol=1e-6)
    adv_open, _ = compute_gae(rewards, values, np.zeros_like(dones), np.array([100.0]), np.array([False]), 0.9, 1.0)
    assert adv_open[1, 0] == pytest.approx(2.0 + 90.0)


def test_minibatches_cover_every_index_once():
    import torch
    buf = RolloutBuffer(8, 4, feature_dim=1)
    batches = list(buf.minibatches(5, torch.Generator().manual_seed(0)))
    assert [len(b) for b in batches] == [5] * 6 + [2]
    assert sorted(torch.cat(batches).tolist()) == list(range(32))
