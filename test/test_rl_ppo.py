import gymnasium as gym
import numpy as np
import pytest
import torch

from bitrl_ros.errors import ConfigError
from bitrl_ros.rl.actions import clip_action
from bitrl_ros.rl.heads import PolicyHead, ValueHead
from bitrl_ros.rl.ppo import policy_loss, PPO, PPOConfig, total_loss

CLIP = 0.1


def surrogate_grad(ratio: float, advantage: float) -> float:
    new_log_prob = torch.tensor([np.log(ratio)], requires_grad=True)
    policy_loss(new_log_prob, torch.zeros(1), torch.tensor([advantage]), CLIP).backward()
    return new_log_prob.grad.item()


def test_clipping_stops_gradient_only_beyond_the_trust_region():
    # Positive advantage: the loss pushes the ratio up (negative grad) until 1 + c, then stops.
    assert surrogate_grad(1.05, 1.0) < 0
    assert surrogate_grad(1.2, 1.0) == 0.0
    # ...but a ratio already below 1 - c with positive advantage is still pushed back up.
    assert surrogate_grad(0.8, 1.0) < 0
    # Negative advantage: pushed down (positive grad) until 1 - c, then stops; above 1 + c still pushed down.
    assert surrogate_grad(0.95, -1.0) > 0
    assert surrogate_grad(0.8, -1.0) == 0.0
    assert surrogate_grad(1.2, -1.0) > 0


def test_policy_loss_value_uses_the_pessimistic_bound():
    loss = policy_loss(torch.log(torch.tensor([1.5, 0.5])), torch.zeros(2), torch.tensor([2.0, 2.0]), CLIP)
    assert loss.item() == pytest.approx(-(2.0 * 1.1 + 2.0 * 0.5) / 2)


def test_entropy_bonus_sign_and_coefficient():
    cfg = PPOConfig(ent_coef=0.05, vf_coef=0.5)
    entropy = torch.tensor(1.3, requires_grad=True)
    v_loss = torch.tensor(2.0, requires_grad=True)
    loss = total_loss(torch.tensor(0.7), v_loss, entropy, cfg)
    loss.backward()
    assert loss.item() == pytest.approx(0.7 - 0.05 * 1.3 + 0.5 * 2.0)
    assert entropy.grad.item() == pytest.approx(-0.05)  # more entropy, lower loss
    assert v_loss.grad.item() == pytest.approx(0.5)


def rollout(ppo, rng, reward_fn=None, bandit=False):
    """Fill a buffer with one-step episodes; features are one-hot contexts (plus noise) when bandit=True."""
    cfg = ppo.config
    buf = ppo.make_buffer()
    for _ in range(cfg.num_steps):
        if bandit:
            ctx = rng.integers(0, ppo.feature_dim, cfg.num_envs)
            feats = np.eye(ppo.feature_dim, dtype=np.float32)[ctx]
        else:
            ctx = None
            feats = rng.standard_normal((cfg.num_envs, ppo.feature_dim)).astype(np.float32)
        actions, log_probs, values = ppo.act(feats)
        rewards = reward_fn(actions, ctx) if reward_fn else np.zeros(cfg.num_envs)
        done = np.ones(cfg.num_envs, dtype=bool)
        buf.add(feats, actions, log_probs, values, rewards, done, ~done)
    return buf


def test_ppo_learns_contextual_bandit():
    torch.manual_seed(0)
    cfg = PPOConfig(num_envs=8, num_steps=32, minibatch_size=64, policy_lr=1e-3, ent_coef=0.01)
    ppo = PPO(4, gym.spaces.Discrete(4), cfg, seed=0)
    rng = np.random.default_rng(0)
    contexts = torch.eye(4)

    def p_correct():
        with torch.no_grad():
            return ppo.policy.distribution(contexts).probs.diagonal().mean().item()

    before = p_correct()
    for _ in range(15):
        buf = rollout(ppo, rng, lambda a, ctx: (a == ctx).astype(np.float32), bandit=True)
        ppo.update(buf, np.zeros(cfg.num_envs))
    after = p_correct()
    assert before == pytest.approx(0.25, abs=0.02)
    assert after > 0.9


def test_grad_norm_clip_caps_each_head_at_max_grad_norm():
    cfg = PPOConfig(num_envs=2, num_steps=32, minibatch_size=64, update_epochs=1)
    ppo = PPO(6, gym.spaces.Discrete(3), cfg, seed=0)
    buf = rollout(ppo, np.random.default_rng(0), lambda a, ctx: 1000.0 * (a == 0))
    stats = ppo.update(buf, np.zeros(2))
    assert stats["value_grad_norm"] > 10 * cfg.max_grad_norm  # huge returns: clipping had work to do
    for head in (ppo.policy, ppo.value_head):
        # .grad still holds the last minibatch's gradient, as clipped and then applied by Adam.
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in head.parameters()]))
        assert norm.item() <= cfg.max_grad_norm * (1 + 1e-5)


def test_entropy_bonus_alone_raises_entropy():
    cfg = PPOConfig(num_envs=2, num_steps=32, minibatch_size=32, norm_adv=False)
    ppo = PPO(5, gym.spaces.Box(-1, 1, (2,)), cfg, seed=0)
    buf = rollout(ppo, np.random.default_rng(0))
    buf.values[:] = 0.0  # zero rewards and values: zero advantages, only the entropy term moves the policy
    first = ppo.update(buf, np.zeros(2))
    second = ppo.update(buf, np.zeros(2))
    assert (ppo.policy.log_std > cfg.init_log_std).all()
    assert second["entropy"] > first["entropy"]


def test_update_is_reproducible_from_seed():
    def run():
        cfg = PPOConfig(num_envs=2, num_steps=16, minibatch_size=8)
        ppo = PPO(4, gym.spaces.Discrete(2), cfg, seed=3)
        buf = rollout(ppo, np.random.default_rng(1), lambda a, ctx: a.astype(np.float32))
        return ppo.update(buf, np.zeros(2)), ppo.policy.net[0].weight.detach().clone()

    (s1, w1), (s2, w2) = run(), run()
    assert s1 == s2 and torch.equal(w1, w2)


def test_adapt_kl_moves_the_policy_rate_by_the_update_size_within_its_range():
    cfg = PPOConfig(num_envs=2, num_steps=16, minibatch_size=8, policy_lr=1e-3, value_lr=2e-3, adapt_kl=0.01)
    ppo = PPO(4, gym.spaces.Discrete(2), cfg, seed=0)
    ppo.adapt_policy_lr(0.03)  # above twice the target: slower
    assert ppo.current_lrs() == pytest.approx((1e-3 / 1.5, 2e-3))
    ppo.adapt_policy_lr(0.01)  # within [target / 2, 2 target]: kept
    assert ppo.current_lrs()[0] == pytest.approx(1e-3 / 1.5)
    for _ in range(20):
        ppo.adapt_policy_lr(0.0)  # far below: faster, up to 10x
    assert ppo.current_lrs() == pytest.approx((1e-2, 2e-3))
    for _ in range(20):
        ppo.adapt_policy_lr(1.0)
    assert ppo.current_lrs()[0] == pytest.approx(1e-4)
    ppo.adapt_policy_lr(float("nan"))
    assert ppo.current_lrs()[0] == pytest.approx(1e-4)


def test_adapt_kl_follows_real_updates_and_is_off_by_default():
    def run(adapt_kl):
        cfg = PPOConfig(num_envs=2, num_steps=32, minibatch_size=16, policy_lr=1e-2, adapt_kl=adapt_kl)
        ppo = PPO(4, gym.spaces.Discrete(3), cfg, seed=0)
        rng = np.random.default_rng(0)
        used = [ppo.update(rollout(ppo, rng, lambda a, ctx: (a == 0) * 10.0), np.zeros(2))["lr"] for _ in range(4)]
        return used, ppo

    fixed, _ = run(None)
    assert fixed == [1e-2] * 4
    # A tiny target: each of these updates oversteps it, so every next one runs slower; undoing restores the scale.
    adapted, ppo = run(1e-6)
    assert adapted == pytest.approx([1e-2 / 1.5**k for k in range(4)])
    before = ppo.snapshot()
    ppo.update(rollout(ppo, np.random.default_rng(1), lambda a, ctx: (a == 0) * 10.0), np.zeros(2))
    ppo.restore(before)
    assert ppo.current_lrs()[0] == pytest.approx(1e-2 / 1.5**4)


@pytest.mark.parametrize("key,value,shown", [
    ("clip_coef", 1.5, "(0, 1)"),
    ("clip_coef", 0, "(0, 1)"),
    ("gamma", 0.0, "(0, 1]"),
    ("gamma", 1.01, "(0, 1]"),
    ("policy_lr", -3e-4, "(0, 1]"),
    ("value_lr", 0, "(0, 1]"),
    ("minibatch_size", 4096, "2048"),
    ("num_envs", 0, "int in [1, 4096]"),
    ("update_epochs", 2.5, "int in [1, 100]"),
    ("hidden_sizes", [64, 0], "a non-empty list of integers >= 1"),
    ("target_kl", 0.0, "float in (0, inf) or null"),
])
def test_config_errors_name_key_value_and_range(key, value, shown):
    with pytest.raises(ConfigError) as err:
        PPOConfig.from_dict({key: value})
    message = str(err.value)
    assert key in message and repr(value) in message and shown in message


def test_config_rejects_unknown_keys_and_accepts_defaults():
    with pytest.raises(ConfigError, match="clip_coeff"):
        PPOConfig.from_dict({"clip_coeff": 0.2})
    cfg = PPOConfig.from_dict({})
    assert (cfg.clip_coef, cfg.ent_coef, cfg.max_grad_norm, cfg.batch_size) == (0.1, 0.01, 0.5, 2048)
    assert PPOConfig.from_dict(cfg.to_dict()) == cfg


def test_discrete_head_shapes_and_log_prob_consistency():
    head = PolicyHead(7, gym.spaces.Discrete(5, start=2))
    feats = torch.randn(11, 7)
    g = torch.Generator().manual_seed(0)
    actions, log_probs = head.act(feats, generator=g)
    assert actions.shape == (11,) and log_probs.shape == (11,)
    assert actions.min() >= 2 and actions.max() <= 6
    again, _ = head.act(feats, generator=torch.Generator().manual_seed(0))
    assert torch.equal(actions, again)
    eval_log_probs, entropy = head.evaluate(feats, actions)
    torch.testing.assert_close(eval_log_probs, log_probs)
    assert entropy.shape == (11,) and (entropy <= np.log(5) + 1e-6).all()
    greedy, _ = head.act(feats, deterministic=True)
    torch.testing.assert_close(greedy, head.distribution(feats).probs.argmax(-1) + 2)
    assert ValueHead(7)(feats).shape == (11,)


def test_box_head_shapes_log_prob_and_clipping():
    space = gym.spaces.Box(low=-0.5, high=0.5, shape=(3,))
    head = PolicyHead(4, space)
    feats = torch.randn(9, 4)
    actions, log_probs = head.act(feats, generator=torch.Generator().manual_seed(0))
    assert actions.shape == (9, 3) and log_probs.shape == (9,)
    mean = head.distribution(feats).mean
    by_hand = torch.distributions.Normal(mean, torch.ones(3)).log_prob(actions).sum(-1)  # log_std starts at 0
    torch.testing.assert_close(log_probs, by_hand)
    torch.testing.assert_close(head.evaluate(feats, actions)[0], log_probs)
    torch.testing.assert_close(head.act(feats, deterministic=True)[0], mean)
    clipped = clip_action(actions.detach().numpy() * 10, space)
    assert clipped.min() >= -0.5 and clipped.max() <= 0.5 and clipped.dtype == np.float32
