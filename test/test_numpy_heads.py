"""NumpyActor (the torch-free acting heads) against the torch heads it mirrors, for every head kind."""
import gymnasium as gym
import numpy as np
import pytest
import torch

from bitrl_ros.rl.checkpoint import heads_arrays
from bitrl_ros.rl.numpy_heads import NumpyActor
from bitrl_ros.rl.ppo import PPO, PPOConfig

KINDS = {
    "discrete": {"feature_dim": 12, "action_space": gym.spaces.Discrete(3, start=-1)},
    "box": {"feature_dim": 9, "action_space": gym.spaces.Box(-1, 1, (2,), np.float32)},
    "box-2d": {"feature_dim": 7, "action_space": gym.spaces.Box(-1, 1, (2, 3), np.float32)},
    "field-readout": {"feature_dim": 4 * 6, "action_space": gym.spaces.Discrete(2),
                      "readout": {"num_fields": 4, "width": 6, "proj_dim": 3, "raw_dim": 0}},
    "field-readout-raw": {"feature_dim": 3 * 5 + 3, "action_space": gym.spaces.Box(-1, 1, (1,), np.float32),
                          "readout": {"num_fields": 3, "width": 5, "proj_dim": 2, "raw_dim": 3}},
    "hybrid-critic": {"feature_dim": 10 + 8, "action_space": gym.spaces.Discrete(4),
                      "critic": {"policy_dim": 10, "readout": {"num_fields": 2, "width": 4, "proj_dim": 3,
                                                               "raw_dim": 0}}},
    "commands": {"feature_dim": 5 + 4 * 6, "action_space": gym.spaces.Discrete(4),
                 "commands": {"start": 5, "width": 6, "count": 4}},
}


def _pair(kind: str, seed: int = 0):
    config = PPOConfig(hidden_sizes=(16, 8))
    ppo = PPO(config=config, seed=seed, **KINDS[kind])
    # Trained-looking weights: the output layers start near zero, which would hide a wrong log-prob.
    with torch.no_grad():
        for p in (*ppo.policy.parameters(), *ppo.value_head.parameters()):
            p.add_(0.3 * torch.randn_like(p))
    actor = NumpyActor(seed=seed, hidden=(16, 8), **KINDS[kind])
    actor.load(heads_arrays(ppo))
    return ppo, actor


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_values_and_log_probs_match_torch(kind):
    ppo, actor = _pair(kind)
    x = np.random.default_rng(1).normal(size=(64, KINDS[kind]["feature_dim"])).astype(np.float32)
    np.testing.assert_allclose(actor.value(x), ppo.value(x), rtol=1e-4, atol=1e-5)
    actions, log_probs, values = actor.act(x)
    assert actions.dtype == (np.int64 if actor.discrete else np.float32)
    torch_log_probs, _ = ppo.policy.evaluate(torch.as_tensor(x), torch.as_tensor(actions))
    np.testing.assert_allclose(log_probs, torch_log_probs.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(values, ppo.value(x), rtol=1e-4, atol=1e-5)
    greedy, _, _ = actor.act(x, deterministic=True)
    torch_greedy, _, _ = ppo.act(x, deterministic=True)
    np.testing.assert_allclose(greedy, torch_greedy, rtol=1e-4, atol=1e-5)


def test_discrete_samples_follow_the_policy():
    ppo, actor = _pair("discrete")
    x = np.repeat(np.random.default_rng(2).normal(size=(1, 12)).astype(np.float32), 20000, axis=0)
    actions, _, _ = actor.act(x)
    probs = ppo.policy.distribution(torch.as_tensor(x[:1])).probs.detach().numpy()[0]
    counts = np.bincount(actions - (-1), minlength=3) / len(actions)
    np.testing.assert_allclose(counts, probs, atol=0.015)


def test_gaussian_samples_have_the_policy_std():
    ppo, actor = _pair("box")
    x = np.zeros((20000, 9), dtype=np.float32)
    actions, _, _ = actor.act(x)
    mean, _, _ = ppo.act(x[:1], deterministic=True)
    np.testing.assert_allclose(actions.mean(axis=0), mean[0], atol=0.05)
    np.testing.assert_allclose(actions.std(axis=0), ppo.policy.log_std.exp().detach().numpy(), rtol=0.05)


def test_seeded_sampling_repeats_and_non_finite_weights_show():
    ppo, a = _pair("discrete")
    b = NumpyActor(seed=0, **KINDS["discrete"])
    b.load(heads_arrays(ppo))
    x = np.random.default_rng(3).normal(size=(50, 12)).astype(np.float32)
    assert np.array_equal(a.act(x)[0], b.act(x)[0])
    assert a.finite()
    a.weights["value.net.0.bias"][0] = np.nan
    assert not a.finite()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_initial_heads_are_shaped_and_drawn_as_torch_initialises_them(kind):
    ppo = PPO(config=PPOConfig(hidden_sizes=(16, 8)), seed=0, **KINDS[kind])
    actor = NumpyActor(seed=0, hidden=(16, 8), init_log_std=ppo.config.init_log_std, **KINDS[kind])
    heads, torch_heads = actor.initial_heads(5), heads_arrays(ppo)
    assert {k: v.shape for k, v in heads.items()} == {k: v.shape for k, v in torch_heads.items()}
    assert all(v.dtype == np.float32 for v in heads.values())
    for name, w in heads.items():
        if name.endswith("log_std"):
            np.testing.assert_array_equal(w, torch_heads[name])  # the configured starting noise, not drawn
            continue
        if name.endswith(".bias") or not np.any(torch_heads[name]):
            assert not np.any(w), name  # zero where torch starts at zero (biases, a hybrid's readout)
            continue
        # Orthogonal rows or columns with torch's gain: w w^T (or w^T w) is gain^2 times the identity.
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        gain2 = (torch_heads[name] @ torch_heads[name].T if w.shape[0] <= w.shape[1]
                 else torch_heads[name].T @ torch_heads[name])[0, 0]
        np.testing.assert_allclose(gram, gain2 * np.eye(len(gram)), atol=1e-5, err_msg=name)
    again = actor.initial_heads(5)
    assert all(np.array_equal(again[k], v) for k, v in heads.items())
    assert not np.array_equal(actor.initial_heads(6)["value.net.0.weight"], heads["value.net.0.weight"])


def test_the_starting_action_noise_is_the_configured_one_in_both_heads():
    space = KINDS["box"]
    ppo = PPO(config=PPOConfig(hidden_sizes=(16, 8), init_log_std=-0.5), seed=0, **space)
    actor = NumpyActor(seed=0, hidden=(16, 8), init_log_std=-0.5, **space)
    np.testing.assert_array_equal(ppo.policy.log_std.detach().numpy(), [-0.5, -0.5])
    np.testing.assert_array_equal(actor.initial_heads(0)["policy.log_std"], [-0.5, -0.5])
    actor.load(actor.initial_heads(0))
    actions, _, _ = actor.act(np.zeros((20000, 9), dtype=np.float32))
    np.testing.assert_allclose(actions.std(axis=0), np.exp(-0.5), rtol=0.05)
