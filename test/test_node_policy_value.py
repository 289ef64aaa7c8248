"""policy_value over real rclpy + DDS (localhost): a driver node plays bridge + encoder, publishing Observation and
EncodedState pairs, and listens to action, training_stats and /diagnostics.
"""
import json
import time

import numpy as np
import pytest

try:
    from bitrl_msgs.msg import Action, EncodedState, Observation, TrainingStats
    from bitrl_msgs.srv import SaveCheckpoint
except ImportError as exc:
    raise ImportError(f"bitrl_msgs is not built into this environment ({exc}): run scripts/build_msgs.sh") from exc

from diagnostic_msgs.msg import DiagnosticArray  # noqa: I100 - after the bitrl_msgs check above
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter

from bitrl_ros.envs import make_env
from bitrl_ros.errors import ConfigError
from bitrl_ros.nodes.base import DIAGNOSTICS_QOS, InProcessGraph, PIPELINE_QOS, STATS_QOS
from bitrl_ros.nodes.convert import ERROR, OK, status_level, WARN
from bitrl_ros.nodes.policy_value import PolicyValueNode

SMALL_PPO = {"ppo.num_steps": 64, "ppo.minibatch_size": 32, "ppo.update_epochs": 2}
WAIT_S = 15.0
_EMBED = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)


def wait_for(pred, timeout=WAIT_S, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.002)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Harness:
    """policy_value and a driver node, each with its own rclpy Context and executor thread."""

    def __init__(self, namespace, params):
        self.ns = namespace
        # The driver publishes 8-d pooled "embeddings" (see send): the mean readout, unless a test says otherwise.
        overrides = [Parameter(k, value=v) for k, v in {"readout": "mean", **params}.items()]
        self.actions, self.stats, self.statuses = [], [], []
        self.arrivals = []  # wall-clock arrival of each action
        self._node_graph = InProcessGraph(
            lambda ctx: PolicyValueNode(context=ctx, namespace=namespace, parameter_overrides=overrides))
        self.node = self._node_graph.node
        self._driver_graph = InProcessGraph(self._build_driver)
        wait_for(lambda: self.obs_pub.get_subscription_count() >= 1 and self.enc_pub.get_subscription_count() >= 1
                 and self.node.action_pub.get_subscription_count() >= 1, what="discovery")

    def _build_driver(self, ctx):
        self.drv = Node("driver", namespace=self.ns, context=ctx)
        self.obs_pub = self.drv.create_publisher(Observation, "observation", PIPELINE_QOS)
        self.enc_pub = self.drv.create_publisher(EncodedState, "encoded_state", PIPELINE_QOS)
        self.drv.create_subscription(Action, "action", self._on_action, PIPELINE_QOS)
        self.drv.create_subscription(TrainingStats, "training_stats", self.stats.append, STATS_QOS)
        self.drv.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, DIAGNOSTICS_QOS)
        self.save_client = self.drv.create_client(SaveCheckpoint, "save_checkpoint")
        return self.drv

    def _on_action(self, msg):
        self.arrivals.append(time.time())
        self.actions.append(msg)

    def _on_diag(self, msg):
        self.statuses += [s for s in msg.status if s.name.startswith("policy_value:")]

    def send(self, episode, step, values, reward=0.0, terminated=False, truncated=False, embedding=None,
             readout="", stamp=None):
        values = np.asarray(values, dtype=np.float32)
        if embedding is None:
            embedding = np.tanh(_EMBED @ np.nan_to_num(values[:4]))
        obs = Observation(episode=episode, step=step, values=values.tolist(), reward=float(reward),
                          terminated=terminated, truncated=truncated)
        obs.header.frame_id = "test"
        if stamp is None:
            obs.header.stamp.sec = step
        else:  # wall-clock seconds
            obs.header.stamp.sec, obs.header.stamp.nanosec = int(stamp), int(round((stamp % 1) * 1e9)) % 10**9
        enc = EncodedState(episode=episode, step=step, embedding=np.asarray(embedding, np.float32).tolist(),
                           readout=readout)
        enc.header = obs.header
        self.obs_pub.publish(obs)
        self.enc_pub.publish(enc)

    def action_for(self, episode, step):
        def find():
            return next((a for a in self.actions if (a.episode, a.step) == (episode, step)), None)
        wait_for(lambda: find() is not None, what=f"action for episode {episode} step {step}")
        return find()

    def close(self):
        self._node_graph.close()  # policy_value.shutdown() first: a running update finishes its checkpoint
        self._driver_graph.close()


@pytest.fixture
def harness():
    made = []

    def make(namespace, **params):
        h = Harness(namespace, params)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def run_cartpole(h, transitions, stop=lambda: False):
    """Drive CartPole in lockstep through the node: step k waits for the action of step k. Returns (terminal
    keys, last key sent).
    """
    env = make_env("CartPole-v1", seed=1)
    obs, _ = env.reset(seed=1)
    episode, step, reward, terminals = 0, 0, 0.0, []
    for _ in range(transitions):
        h.send(episode, step, obs, reward)
        action = h.action_for(episode, step)
        assert not action.safe_action and action.header.frame_id == "test" and action.header.stamp.sec == step
        obs, reward, terminated, truncated, _ = env.step(action.discrete)
        step += 1
        if terminated or truncated:
            h.send(episode, step, obs, reward, terminated, truncated)
            terminals.append((episode, step))
            episode, step, reward = episode + 1, 0, 0.0
            obs, _ = env.reset()
        if stop():
            break
    h.send(episode, step, obs, reward)
    h.action_for(episode, step)  # actions arrive in order: a terminal's action would have come before this
    return terminals


@pytest.mark.slow
def test_lockstep_learns_checkpoints_and_resumes(harness, tmp_path):
    ckpt = tmp_path / "checkpoint"
    h = harness("t_pv_lockstep", checkpoint_dir=str(ckpt), **SMALL_PPO)
    terminals = run_cartpole(h, 200, stop=lambda: bool(h.stats))
    assert terminals, "CartPole with an untrained policy ends episodes within 200 steps"
    assert not any((a.episode, a.step) in terminals for a in h.actions)
    wait_for(lambda: h.stats, what="TrainingStats")
    stats = h.stats[0]
    assert stats.update == 1 and stats.global_step >= 64 and np.isfinite(stats.policy_loss)
    assert stats.episodes >= 1 and np.isfinite(stats.mean_return) and stats.update_ms > 0
    assert (ckpt / "state.json").is_file()
    assert h.node.updates >= 1 and h.node.episodes == len(terminals) and h.node.safe_actions == 0
    wait_for(lambda: not h.node.learner.updating, what="the update thread to finish")

    saved = json.loads((ckpt / "state.json").read_text())
    h2 = harness("t_pv_resume", checkpoint_dir=str(ckpt), resume=True, **SMALL_PPO)
    h2.send(7, 0, [0.0, 0.0, 0.01, 0.0])
    h2.action_for(7, 0)
    assert h2.node.restored["updates"] == saved["num_updates"] >= 1
    assert h2.node.updates == saved["num_updates"]
    assert h2.node.global_step == saved["extra"]["global_step"] >= 64
    assert h2.node.episodes == saved["extra"]["episodes"]


@pytest.mark.slow
def test_an_undone_update_is_an_error_on_diagnostics_and_acting_goes_on(harness, tmp_path):
    ckpt = tmp_path / "checkpoint"
    # A thread worker: the poisoning hook below lives in this process (test_rl_learner covers the child process).
    h = harness("t_pv_heal", checkpoint_dir=str(ckpt), update_worker="thread", **SMALL_PPO)
    h.send(0, 0, [0.0, 0.0, 0.01, 0.0])
    h.action_for(0, 0)  # the first encoded state built the learner
    first = next(h.node.learner.ppo.policy.parameters())
    first.register_hook(lambda grad: grad * float("nan"))  # every update of this node is poisoned
    run_cartpole(h, 200, stop=lambda: h.node.learner.failed_updates >= 1)
    wait_for(lambda: any(s.name.endswith("learning") for s in h.statuses), what="the learning status")
    status = next(s for s in h.statuses if s.name.endswith("learning"))
    assert status_level(status) == ERROR and "undone" in status.message and "non-finite" in status.message
    assert h.node.updates == 0 and not ckpt.exists() and not h.stats  # no bad weights saved or announced
    assert h.node.stats().failed_updates >= 1 and h.node.learner.actor.finite()
    h.send(50, 0, [0.0, 0.0, 0.01, 0.0])
    assert not h.action_for(50, 0).safe_action  # the policy keeps acting on its last good weights


def _two_good_steps(h) -> list[float]:
    """Steps 0 and 1 of episode 0 with a normal CartPole state, each answered by a policy action."""
    good = [0.01, 0.0, 0.02, 0.0]
    for step in range(2):
        h.send(0, step, good, reward=1.0 * step)
        assert not h.action_for(0, step).safe_action
    return good


def test_a_glitch_is_rejected_like_invalid_input_and_its_reward_never_counts(harness, tmp_path):
    h = harness("t_pv_glitch", checkpoint_dir=str(tmp_path / "ckpt"), **SMALL_PPO)
    good = _two_good_steps(h)
    h.send(0, 2, [0.01, 1e30, 0.02, 0.0], reward=1e38)  # well-formed (finite) but absurd
    assert h.action_for(0, 2).safe_action
    wait_for(lambda: any(s.name == "policy_value: input" and "glitch" in s.message for s in h.statuses),
             what="the glitch WARN")
    warn = next(s for s in h.statuses if s.name == "policy_value: input" and "glitch" in s.message)
    assert status_level(warn) == WARN and "x_dot" in warn.message
    h.send(0, 3, good, reward=1.0, terminated=True)
    wait_for(lambda: h.node.episodes == 1, what="the episode's end")
    assert h.node.glitch_count == 1 and h.node.stats().glitches == 1
    assert h.node.episode_returns[-1] == pytest.approx(2.0)  # rewards 1 + 1; the glitch's 1e38 is not counted
    assert h.node.learner.buffer.step == 1 and np.all(np.abs(h.node.learner.feature_norm.rms.mean) < 10)


def test_invalid_observation_gets_safe_action_and_never_reaches_learner(harness, tmp_path):
    h = harness("t_pv_invalid", checkpoint_dir=str(tmp_path / "ckpt"), **SMALL_PPO)
    good = _two_good_steps(h)
    assert h.node.learner.buffer.step == 1
    h.send(0, 2, [0.01, 0.0, float("nan"), 0.0], reward=1.0)
    bad = h.action_for(0, 2)
    assert bad.safe_action and bad.discrete == 0
    wait_for(lambda: any(status_level(s) == WARN and s.name == "policy_value: input" for s in h.statuses),
             what="WARN diagnostic")
    warn = next(s for s in h.statuses if s.name == "policy_value: input")
    assert "theta" in warn.message
    assert h.node.invalid_count == 1 and h.node.safe_actions == 1
    # The transition into the invalid state and the one out of it are both dropped.
    for step in (3, 4):
        h.send(0, step, good, reward=1.0)
        assert not h.action_for(0, step).safe_action
    assert h.node.learner.buffer.step == 2
    # Non-finite embeddings are invalid input too; the transition 4 -> 5 is dropped with it.
    h.send(0, 5, good, reward=1.0, embedding=[float("inf")] + [0.0] * 7)
    assert h.action_for(0, 5).safe_action
    assert h.node.invalid_count == 2 and h.node.learner.buffer.step == 2
    # An encoder running another readout than the heads take is refused, naming both (after the 0.5 s the
    # input diagnostic waits between two statuses).
    time.sleep(0.6)
    h.send(0, 6, good, reward=1.0, readout="fields")
    assert h.action_for(0, 6).safe_action and h.node.invalid_count == 3
    wait_for(lambda: any("'fields'" in s.message and "'mean'" in s.message for s in h.statuses),
             what="WARN naming both readouts")


@pytest.mark.slow
def test_realtime_watchdog_trips_and_recovers(harness, tmp_path):
    h = harness("t_pv_realtime", mode="realtime", control_rate_hz=40.0, watchdog_periods=3,
                checkpoint_dir=str(tmp_path / "ckpt"), **SMALL_PPO)
    rng = np.random.default_rng(0)
    step = 0

    def stream(seconds):
        nonlocal step
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            h.send(0, step, rng.uniform(-0.05, 0.05, 4), reward=1.0)
            step += 1
            time.sleep(0.025)

    stream(0.5)
    first_steps = step
    assert any(not a.safe_action for a in h.actions)
    n_before = len(h.actions)
    time.sleep(0.5)  # 20 control periods without data
    silent = h.actions[n_before:]
    assert len(silent) >= 10, "the timer keeps publishing while the data is gone"
    assert silent[-1].safe_action and silent[-1].discrete == 0
    wait_for(lambda: any(status_level(s) == ERROR and s.name == "policy_value: watchdog" for s in h.statuses),
             what="ERROR watchdog diagnostic")
    assert h.node.watchdog_trips >= 1
    n_silent = len(h.actions)
    stream(0.5)
    resumed = h.actions[n_silent:]
    assert any(not a.safe_action and a.step >= first_steps for a in resumed)
    wait_for(lambda: any(status_level(s) == OK and s.name == "policy_value: watchdog" for s in h.statuses),
             what="OK watchdog diagnostic")
    assert h.node.watchdog_trips >= 1 and h.node.held_count >= 1  # holds fill [1.5, 3) periods: one or two ticks


def test_realtime_actions_go_out_at_their_observation_stamp_plus_the_release_delay(harness, tmp_path):
    h = harness("t_pv_release", mode="realtime", control_rate_hz=40.0, action_release_ms=60.0,
                checkpoint_dir=str(tmp_path / "ckpt"), **SMALL_PPO)
    rng = np.random.default_rng(0)
    stamps = []
    for step in range(8):
        stamps.append(time.time())
        h.send(0, step, rng.uniform(-0.05, 0.05, 4), reward=1.0, stamp=stamps[-1])
        time.sleep(0.025)
    for step, stamp in enumerate(stamps):
        action = h.action_for(0, step)
        arrival = h.arrivals[h.actions.index(action)]
        assert not action.safe_action
        assert arrival >= stamp + 0.060, f"step {step} released {1e3 * (arrival - stamp):.1f} ms after its stamp"
    steps = [a.step for a in h.actions if not a.safe_action]
    assert steps == sorted(steps) and set(steps) == set(range(8))  # in order (a hold repeats the last one out)
    # An observation stamped long ago: its release time has passed, so its action goes at once (counted late).
    # (The first states may be late too, on a loaded machine: the heads are built on the first one.)
    late = h.node._release.late
    h.send(0, 8, rng.uniform(-0.05, 0.05, 4), reward=1.0, stamp=time.time() - 30.0)
    h.action_for(0, 8)
    assert h.node._release.late == late + 1


def test_lockstep_ignores_the_release_delay(harness, tmp_path):
    h = harness("t_pv_release_lockstep", action_release_ms=500.0, checkpoint_dir=str(tmp_path / "ckpt"),
                **SMALL_PPO)
    h.send(0, 0, [0.0, 0.0, 0.01, 0.0], stamp=time.time())
    h.action_for(0, 0)
    assert h.node._release is None


def test_every_declared_ppo_parameter_reaches_the_learner(harness, tmp_path):
    h = harness("t_pv_ppo_params", checkpoint_dir=str(tmp_path / "ckpt"), **SMALL_PPO,
                **{"ppo.acting_precision": "nvfp4", "ppo.gae_lambda": 0.9})
    config = h.node.ppo_config
    assert (config.acting_precision, config.gae_lambda, config.num_steps, config.num_envs) == ("nvfp4", 0.9, 64, 1)
    h.send(0, 0, [0.0, 0.0, 0.01, 0.0])
    assert h.action_for(0, 0).discrete in (0, 1)


def test_continuous_actions_clipped_and_save_checkpoint(harness, tmp_path):
    # Backbone-free mode: empty embedding, the raw 11-dim Hopper observation is the feature vector.
    h = harness("t_pv_hopper", env="Hopper-v4", checkpoint_dir=str(tmp_path / "ckpt"), **SMALL_PPO,
                **{"ppo.init_log_std": 0.0})
    rng = np.random.default_rng(0)
    for step in range(12):
        h.send(0, step, rng.standard_normal(11), reward=0.5, embedding=[])
        a = h.action_for(0, step)
        assert len(a.continuous) == 3 and not a.safe_action
        assert all(-1.0 <= v <= 1.0 for v in a.continuous)
    # Initial std 1 around a ~0 mean: 36 samples all inside [-1, 1] has probability ~1e-6.
    assert h.node.ppo_config.init_log_std == 0.0
    assert h.node.clipped_count > 0
    assert h.node.feature_dim == 11

    assert h.save_client.wait_for_service(timeout_sec=WAIT_S)
    future = h.save_client.call_async(SaveCheckpoint.Request(path=str(tmp_path / "manual")))
    wait_for(future.done, what="save_checkpoint response")
    resp = future.result()
    assert resp.success, resp.message
    assert resp.path == str(tmp_path / "manual") and (tmp_path / "manual" / "state.json").is_file()
    state = json.loads((tmp_path / "manual" / "state.json").read_text())
    assert state["feature_dim"] == 11 and state["extra"]["global_step"] == 11


def test_evaluation_mode_is_greedy_and_learns_nothing(harness, tmp_path):
    h = harness("t_pv_eval", learn=False, checkpoint_dir=str(tmp_path / "ckpt"), **SMALL_PPO)
    state = [0.01, -0.2, 0.03, 0.1]
    for step in range(6):
        h.send(0, step, state, reward=1.0)
        h.action_for(0, step)
    picked = {(a.discrete, round(a.value, 5)) for a in h.actions}
    assert len(picked) == 1, "the same state always gets the same (greedy) action and value"
    learner = h.node.learner
    assert learner.buffer.step == 0 and learner.feature_norm.rms.count == 0
    with pytest.raises(RuntimeError, match="without a preceding act"):  # greedy actions are never remembered
        learner.record([1.0], [False], [False])
    assert h.node.global_step == 5 and not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize("name, value, expect", [
    ("ppo.clip_coef", 5.0, ["'ppo.clip_coef'", "5.0", "float in (0, 1)"]),
    ("safe_action", "brake", ["'safe_action'", "'brake'", "zero | hold"]),
    ("ppo.minibatch_size", 4096, ["minibatch_size", "4096"]),
])
def test_invalid_parameters_are_refused(name, value, expect):
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        with pytest.raises(ConfigError) as err:
            PolicyValueNode(context=ctx, namespace="t_pv_params", parameter_overrides=[Parameter(name, value=value)])
        for text in expect:
            assert text in str(err.value)
    finally:
        ctx.shutdown()
