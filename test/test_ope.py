"""Offline policy evaluation (bitrl_ros.bag.ope, `bitrl eval-bag`): the estimators on hand-made data, and the
issue's check on a bag written with rosbags from a real CartPole rollout of a real PPO checkpoint: evaluating
the behaviour policy itself gives importance ratios of 1, so PDIS and WPDIS recover the recorded return.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bitrl_ros.bag.estimators import bootstrap_ci, discounted_returns, pdis, pdis_per_episode, wpdis
from bitrl_ros.bag.ope import evaluate_bag
from bitrl_ros.errors import BagError, CheckpointError

ENV = "CartPole-v1"
GAMMA = 0.99


# -- (1) the estimators by hand ------------------------------------------------------------------------------------
def test_discounted_returns():
    np.testing.assert_allclose(discounted_returns([1, 2, 3], 0.5), [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3])


def test_pdis_and_wpdis_two_episodes():
    g = 0.9
    ep_a = (np.array([1.0, 1.0, 1.0]), np.array([2.0, 0.5, 1.0]))   # cumulative weights 2, 1, 1
    ep_b = (np.array([0.0, 2.0]), np.array([0.5, 4.0]))             # cumulative weights 0.5, 2
    a = 2 * 1 + g * 1 * 1 + g**2 * 1 * 1
    b = 0.5 * 0 + g * 2 * 2
    assert pdis_per_episode(*ep_a, g) == pytest.approx(a)
    assert pdis_per_episode(*ep_b, g) == pytest.approx(b)
    assert pdis([ep_a, ep_b], g) == pytest.approx((a + b) / 2)
    # WPDIS: per step, rewards weighted by the cumulative weights; episode b has ended at t=2 (weight 2 held,
    # reward 0).
    t0 = (2 * 1 + 0.5 * 0) / (2 + 0.5)
    t1 = (1 * 1 + 2 * 2) / (1 + 2)
    t2 = (1 * 1 + 2 * 0) / (1 + 2)
    assert wpdis([ep_a, ep_b], g) == pytest.approx(t0 + g * t1 + g**2 * t2)
    # With ratios of 1 both are the mean discounted return.
    ones = [(r, np.ones_like(r)) for r, _ in (ep_a, ep_b)]
    mean_g = np.mean([discounted_returns(r, g)[0] for r, _ in ones])
    assert pdis(ones, g) == pytest.approx(mean_g)
    assert wpdis(ones, g) == pytest.approx(mean_g)


def test_bootstrap_ci_is_seeded_and_contains_the_estimate():
    rng = np.random.default_rng(3)
    episodes = [(rng.normal(1.0, 1.0, size=rng.integers(3, 9)), np.exp(rng.normal(0, 0.1, size=9)))
                for _ in range(30)]
    episodes = [(r, rho[:len(r)]) for r, rho in episodes]
    est = lambda eps: pdis(eps, GAMMA)  # noqa: E731
    lo, hi = bootstrap_ci(episodes, est, resamples=300, seed=7)
    assert (lo, hi) == bootstrap_ci(episodes, est, resamples=300, seed=7)
    assert (lo, hi) != bootstrap_ci(episodes, est, resamples=300, seed=8)
    assert lo < est(episodes) < hi
    wlo, whi = bootstrap_ci(episodes, lambda eps: wpdis(eps, GAMMA), resamples=300, seed=7)
    assert wlo < wpdis(episodes, GAMMA) < whi


# -- a real checkpoint and a real bag ------------------------------------------------------------------------------
def train_checkpoint(path, steps: int = 3072, seed: int = 0):
    """A CartPole PPO checkpoint from OnlineLearner (as the policy_value node trains), mlp features."""
    from bitrl_ros.envs import make_env
    from bitrl_ros.rl.learner import OnlineLearner
    from bitrl_ros.rl.ppo import PPOConfig

    env = make_env(ENV, seed=seed)
    cfg = PPOConfig(num_envs=1, num_steps=256, minibatch_size=64, update_epochs=4, gamma=GAMMA)
    learner = OnlineLearner(env.observation_space.shape[0], env.action_space, cfg, seed=seed, checkpoint_dir=path)
    obs, _ = env.reset(seed=seed)
    x = learner.normalize(obs[None])
    for _ in range(steps):
        learner.update_if_ready(x)
        actions, _, _ = learner.act(x)
        obs, reward, terminated, truncated, _ = env.step(int(actions[0]))
        final = learner.normalize(obs[None], update=False) if truncated else None
        learner.record([reward], [terminated], [truncated], final_features=final)
        if terminated or truncated:
            obs, _ = env.reset()
        x = learner.normalize(obs[None])
    learner.save(path)
    env.close()
    return path


def write_rollout_bag(bag_path, checkpoint, steps: int = 1500, seed: int = 123, storage: str = "mcap"):
    """Act stochastically with the checkpoint's policy (frozen normalization, no learning, like policy_value with
    a behaviour policy) and record observation / encoded_state / action per step as the graph publishes them.
    Returns the per-episode undiscounted and discounted returns of the finished episodes.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    from bitrl_ros.bag.typestore import make_typestore
    from bitrl_ros.envs import make_env
    from bitrl_ros.rl.checkpoint import read_checkpoint_state
    from bitrl_ros.rl.learner import OnlineLearner
    from bitrl_ros.rl.ppo import PPOConfig

    store = make_typestore()
    T = store.types
    Header, Time = T["std_msgs/msg/Header"], T["builtin_interfaces/msg/Time"]
    Obs, Enc, Act = T["bitrl_msgs/msg/Observation"], T["bitrl_msgs/msg/EncodedState"], T["bitrl_msgs/msg/Action"]

    env = make_env(ENV, seed=seed)
    state = read_checkpoint_state(checkpoint)
    learner = OnlineLearner(state["feature_dim"], env.action_space, PPOConfig.from_dict(state["config"]),
                            seed=seed)
    learner.load(checkpoint)
    learner.feature_norm.frozen = True
    learner.ppo.action_generator.manual_seed(seed)

    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    returns = []
    with Writer(bag_path, version=9, storage_plugin=plugin) as w:
        c_obs = w.add_connection("/observation", "bitrl_msgs/msg/Observation", typestore=store)
        c_enc = w.add_connection("/encoded_state", "bitrl_msgs/msg/EncodedState", typestore=store)
        c_act = w.add_connection("/action", "bitrl_msgs/msg/Action", typestore=store)
        t = 1_000_000_000

        def header(frame=""):
            return Header(stamp=Time(sec=t // 1_000_000_000, nanosec=t % 1_000_000_000), frame_id=frame)

        episode, step, reward, term, trunc = 0, 0, 0.0, False, False
        obs, _ = env.reset(seed=seed)
        ep_rewards = []
        for _ in range(steps):
            values = np.asarray(obs, dtype=np.float32)
            w.write(c_obs, t, store.serialize_cdr(Obs(header=header(ENV), episode=episode, step=step, values=values,
                                                      mission="", reward=float(reward), terminated=bool(term),
                                                      truncated=bool(trunc)), "bitrl_msgs/msg/Observation"))
            # backbone "mlp": the encoder publishes an empty embedding and carries the observation along
            w.write(c_enc, t + 1000, store.serialize_cdr(
                Enc(header=header(ENV), episode=episode, step=step, embedding=np.zeros(0, dtype=np.float32),
                    observation=values, encode_ms=0.0, backbone_id="mlp", readout="none", cache_hit=False),
                "bitrl_msgs/msg/EncodedState"))
            if term or trunc:
                returns.append(ep_rewards)
                episode, step, reward, term, trunc, ep_rewards = episode + 1, 0, 0.0, False, False, []
                obs, _ = env.reset()
                t += 20_000_000
                continue
            x = learner.normalize(values[None].astype(np.float64), update=False)
            actions, log_probs, vals = learner.act(x, deterministic=False, learn=False)
            w.write(c_act, t + 2000, store.serialize_cdr(
                Act(header=header(), episode=episode, step=step, discrete=int(actions[0]),
                    continuous=np.zeros(0, dtype=np.float32), log_prob=float(log_probs[0]), value=float(vals[0]),
                    safe_action=False, policy_version=int(learner.policy_version)), "bitrl_msgs/msg/Action"))
            obs, reward, term, trunc, _ = env.step(int(actions[0]))
            ep_rewards.append(float(np.float32(reward)))
            step += 1
            t += 20_000_000
    env.close()
    return [(float(sum(r)), float(discounted_returns(r, GAMMA)[0])) for r in returns]


@pytest.fixture(scope="module")
def rollout(tmp_path_factory):
    d = tmp_path_factory.mktemp("ope")
    ckpt = train_checkpoint(d / "ckpt")
    finished = write_rollout_bag(d / "bag", ckpt)
    return d, ckpt, finished


# -- (2) the check: evaluating the behaviour policy recovers the recorded return ---------------------------
def test_eval_bag_with_behaviour_policy_recovers_recorded_return(rollout):
    d, ckpt, finished = rollout
    report = evaluate_bag(d / "bag", ckpt, gamma=GAMMA, bootstrap=200, seed=0)
    o, c = report["ope"], report["counts"]
    assert report["features"].startswith("raw observation")
    assert c["terminated"] + c["truncated"] == len(finished) and c["cut_at_bag_end"] == 1
    assert c["safe_action_steps_skipped"] == 0
    assert o["max_abs_log_ratio"] < 1e-5
    assert o["ratio_min"] == pytest.approx(1, abs=1e-5) and o["ratio_max"] == pytest.approx(1, abs=1e-5)
    # the bag's last episode is cut at the bag's end and counts as truncated: the recorded mean covers it too
    recorded = o["behaviour_discounted_return"]
    disc_finished = [g for _, g in finished]
    assert recorded == pytest.approx(np.mean(disc_finished + [report["episodes"][-1]["discounted_return"]]),
                                     rel=1e-6)
    assert o["pdis"] == pytest.approx(recorded, rel=1e-5)
    assert o["wpdis"] == pytest.approx(recorded, rel=1e-5)
    for lo, hi in (o["pdis_ci"], o["wpdis_ci"]):
        assert lo <= o["pdis"] <= hi and hi - lo > 0
    assert 0.5 < report["agreement"]["greedy_agreement"] <= 1.0
    assert math.isfinite(report["value"]["evaluated"]["rmse"])
    # the recorded value estimates are the evaluated policy's own value head
    assert report["value"]["recorded"]["rmse"] == pytest.approx(report["value"]["evaluated"]["rmse"], rel=1e-4)


def test_cli_writes_table_json_and_plot(rollout, tmp_path, capsys):
    from bitrl_ros.cli import main

    d, ckpt, _ = rollout
    rc = main(["eval-bag", str(d / "bag"), "--checkpoint", str(ckpt), "--bootstrap", "50", "--out",
               str(tmp_path / "out")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "PDIS" in out and "WPDIS" in out and "greedy action agreement" in out
    data = json.loads((tmp_path / "out" / "ope.json").read_text())
    assert data["ope"]["pdis"] == pytest.approx(data["ope"]["behaviour_discounted_return"], rel=1e-5)
    assert (tmp_path / "out" / "ope.png").stat().st_size > 10_000


def test_eval_bag_opens_the_bag_once(rollout, monkeypatch):
    from bitrl_ros.bag import reader

    d, ckpt, _ = rollout
    opened, init = [], reader.Bag.__init__

    def counting_init(self, path, typestore=None):
        opened.append(str(path))
        init(self, path, typestore)

    monkeypatch.setattr(reader.Bag, "__init__", counting_init)
    report = evaluate_bag(d / "bag", ckpt, gamma=GAMMA, bootstrap=10)
    assert opened == [str(d / "bag")]
    assert report["counts"]["decisions"] > 0


def test_evaluated_policy_leaves_the_global_rngs_alone(rollout):
    import random

    import torch

    from bitrl_ros.bag.policy import EvaluatedPolicy
    from bitrl_ros.rl.checkpoint import load_checkpoint

    _, ckpt, _ = rollout
    np.random.seed(11)
    random.seed(11)
    torch.manual_seed(11)

    def global_states():
        return np.random.get_state(), random.getstate(), torch.random.get_rng_state()

    def same(a, b) -> bool:
        (np_a, py_a, torch_a), (np_b, py_b, torch_b) = a, b
        return (np_a[0] == np_b[0] and np.array_equal(np_a[1], np_b[1]) and tuple(np_a[2:]) == tuple(np_b[2:])
                and py_a == py_b and torch.equal(torch_a, torch_b))

    before = global_states()
    policy = EvaluatedPolicy(ckpt)  # nothing is drawn from the global generators between the two reads
    assert same(before, global_states())
    # the check can fail: restoring the training run's generators (as `bitrl train --resume` does) changes them
    load_checkpoint(ckpt, policy.ppo, restore_global_rngs=True)
    after_restore = global_states()
    assert not same(before, after_restore)
    assert not np.array_equal(before[0][1], after_restore[0][1]) and before[1] != after_restore[1]
    assert not torch.equal(before[2], after_restore[2])


# -- (3) another policy: ratios differ from 1, estimates stay finite -------------------------------------------------
def test_other_checkpoint_gives_ratios_not_one(rollout, tmp_path):
    d, _, _ = rollout
    other = train_checkpoint(tmp_path / "untrained", steps=0, seed=5)
    report = evaluate_bag(d / "bag", other, gamma=GAMMA, bootstrap=100)
    o = report["ope"]
    assert o["max_abs_log_ratio"] > 1e-2
    for key in ("pdis", "wpdis"):
        assert math.isfinite(o[key])
        assert all(math.isfinite(x) for x in o[f"{key}_ci"])
    # an untrained policy is near uniform: its estimate differs from the trained behaviour's return
    assert o["pdis"] != pytest.approx(o["behaviour_discounted_return"], rel=1e-3)


# -- (4) clear errors ----------------------------------------------------------------------------------------------
def test_corrupt_bag_names_the_file(rollout, tmp_path):
    import shutil

    d, ckpt, _ = rollout
    bad = tmp_path / "bad"
    shutil.copytree(d / "bag", bad)
    mcap = next(bad.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[:64] + b"\x00garbage" * 50)
    with pytest.raises(BagError) as exc:
        evaluate_bag(bad, ckpt, bootstrap=10)
    assert str(bad) in str(exc.value)


def test_mismatched_checkpoint_names_the_file(rollout, tmp_path):
    import gymnasium as gym

    from bitrl_ros.rl.checkpoint import save_checkpoint
    from bitrl_ros.rl.ppo import PPO

    d, _, _ = rollout
    acrobot = save_checkpoint(tmp_path / "acrobot", PPO(6, gym.spaces.Discrete(3)))
    with pytest.raises(CheckpointError) as exc:
        evaluate_bag(d / "bag", acrobot, bootstrap=10)
    assert str(acrobot / "state.json") in str(exc.value) and "feature_dim" in str(exc.value)
    with pytest.raises(CheckpointError) as exc:
        evaluate_bag(d / "bag", tmp_path / "missing", bootstrap=10)
    assert "missing" in str(exc.value)
