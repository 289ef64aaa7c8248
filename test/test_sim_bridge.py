"""sim_bridge alone, on real DDS (localhost) with a real env: the lockstep observation/action handshake, episode
ends (final observation, then the reset observation of the next episode), the timeout fallback, stale and
malformed actions, and the reset_episode service.
"""
from __future__ import annotations

import time
import uuid

import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from bitrl_msgs.msg import Action, Observation  # noqa: E402
from bitrl_msgs.srv import ResetEpisode  # noqa: E402
from bitrl_ros.nodes.base import PIPELINE_QOS  # noqa: E402
from bitrl_ros.nodes.sim_bridge import SimBridgeNode  # noqa: E402
from ros_harness import InProcessGraph  # noqa: E402

WAIT_S = 15.0


class FakeAgent(Node):
    """Records every observation; answers each non-terminal one with `choose(obs)` unless `answer` is off."""

    def __init__(self, ns, choose, **kw):
        super().__init__("fake_agent", namespace=ns, **kw)
        self.choose = choose
        self.answer = True
        self.observations: list[Observation] = []
        self.pub = self.create_publisher(Action, "action", PIPELINE_QOS)
        self.sub = self.create_subscription(Observation, "observation", self._on_obs, PIPELINE_QOS)
        self.reset_client = self.create_client(ResetEpisode, "reset_episode")

    def _on_obs(self, msg):
        self.observations.append(msg)
        if self.answer and not (msg.terminated or msg.truncated):
            action = self.choose(msg)
            if action is not None:
                self.pub.publish(action)


def _action(obs, discrete=0, continuous=()):
    a = Action(episode=obs.episode, step=obs.step, discrete=discrete)
    a.continuous = [float(x) for x in continuous]
    return a


def _wait(cond, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def graph():
    """Build (bridge node, fake agent) from (choose, **bridge_params); everything is torn down afterwards."""
    spinners = []

    def build(choose, **params):
        ns = "t_bridge_" + uuid.uuid4().hex[:8]
        overrides = [Parameter(k, value=v) for k, v in params.items()]
        bridge = InProcessGraph(lambda ctx: SimBridgeNode(context=ctx, namespace=ns, parameter_overrides=overrides))
        spinners.append(bridge)
        agent = InProcessGraph(lambda ctx: FakeAgent(ns, choose, context=ctx))
        spinners.append(agent)
        return bridge.node, agent.node

    yield build
    for s in reversed(spinners):
        s.close()


def _sec(msg):
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def test_lockstep_handshake_and_episode_reset(graph):
    # Always pushing right ends a CartPole episode within a dozen steps.
    bridge, agent = graph(lambda obs: _action(obs, discrete=1), env="CartPole-v1", mode="lockstep", seed=3,
                          action_timeout_s=10.0)
    assert _wait(lambda: any(o.episode == 1 for o in agent.observations)), "no second episode"
    obs = list(agent.observations)
    first = [o for o in obs if o.episode == 0]
    assert [o.step for o in first] == list(range(len(first)))
    assert first[-1].terminated and not any(o.terminated for o in first[:-1])
    assert all(o.header.frame_id == "CartPole-v1" and len(o.values) == 4 for o in obs)
    reset = obs[len(first)]
    assert (reset.episode, reset.step, reset.reward, reset.terminated) == (1, 0, 0.0, False)
    # Sim time: 1/40 s per env step; the reset observation shares the stamp of the terminal one.
    steps = len(first) - 1
    assert _sec(first[-1]) == pytest.approx(steps / 40.0)
    assert _sec(reset) == pytest.approx(_sec(first[-1]))
    assert sum(o.reward for o in first) == pytest.approx(steps)
    assert bridge.episodes >= 1 and bridge.episode_returns[0] == pytest.approx(steps)
    assert bridge.fallback_count == 0 and bridge.stale_actions == 0
    assert len(bridge.latencies_ms) >= steps


def test_timeout_fallback_and_stale_actions(graph):
    bridge, agent = graph(lambda obs: _action(obs, discrete=0), env="CartPole-v1", mode="lockstep",
                          action_timeout_s=0.3, fallback_action="hold")
    assert _wait(lambda: bridge.total_steps >= 3)
    agent.answer = False
    steps = bridge.total_steps
    assert _wait(lambda: bridge.fallback_count >= 2), "the timeout fallback never fired"
    assert _wait(lambda: bridge.total_steps >= steps + 2)  # it kept stepping on the fallback action
    # An action for an (episode, step) other than the pending one is ignored and counted.
    stale = bridge.stale_actions
    agent.pub.publish(Action(episode=999, step=0))
    assert _wait(lambda: bridge.stale_actions > stale)


@pytest.mark.slow
def test_continuous_wrong_length_and_clipping(graph):
    sizes = iter([2, 6, 6])  # HalfCheetah takes 6 values: first a malformed action, then one far out of bounds

    def choose(obs):
        n = next(sizes, None)
        return None if n is None else _action(obs, continuous=[5.0] * n)

    bridge, agent = graph(choose, env="HalfCheetah-v5", mode="lockstep", action_timeout_s=10.0)
    # The malformed action costs one 10 s timeout; a first observation published before discovery matched costs
    # another (the bridge publishes it again after the timeout).
    assert _wait(lambda: bridge.total_steps >= 3 and len(agent.observations) >= 4, timeout=WAIT_S + 20.0)
    assert bridge.invalid_actions == 1 and bridge.fallback_count == 1
    assert bridge.clipped_count == 2
    assert [o.step for o in agent.observations[:4]] == [0, 1, 2, 3]


def test_reset_episode_service(graph):
    bridge, agent = graph(lambda obs: _action(obs, discrete=obs.step % 2), env="CartPole-v1", mode="lockstep")
    assert _wait(lambda: bridge.total_steps >= 2)
    assert agent.reset_client.wait_for_service(timeout_sec=WAIT_S)
    future = agent.reset_client.call_async(ResetEpisode.Request(seed=7, use_seed=True))
    assert _wait(future.done)
    assert future.result().success and future.result().episode == 1
    # The new episode starts at step 0 and the handshake carries on with it.
    assert _wait(lambda: any(o.episode == 1 and o.step >= 1 for o in agent.observations))
    assert bridge.fallback_count == 0


def test_max_steps_stops_the_bridge(graph):
    bridge, agent = graph(lambda obs: _action(obs, discrete=obs.step % 2), env="CartPole-v1", mode="lockstep",
                          max_steps=5)
    assert _wait(bridge.finished.is_set)
    time.sleep(0.1)
    assert bridge.total_steps == 5
    assert agent.observations[-1].step == 5 or agent.observations[-1].terminated or \
        agent.observations[-1].truncated
