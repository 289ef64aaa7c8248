"""sim_bridge: a gymnasium environment on the ROS graph.

Publishes Observation on `observation` after every env step or reset and applies the Action it gets back on
`action`. Two timing modes (parameter `mode`):

* lockstep: the bridge publishes /clock (sim time advances 1/control_rate_hz per env step) and, after publishing
  observation (episode e, step k), waits for the Action with the same (e, k) before stepping. A terminal
  observation is published with its flag, then the env is reset (episode e+1, seed + e+1) and the reset
  observation is published; the bridge waits for the action of the reset observation, never of a terminal one.
  No matching action within action_timeout_s (wall time): the fallback action (hold the last / zero) is applied
  and counted. Actions for any other (e, k) are stale: ignored and counted.
* realtime: a wall-clock timer at control_rate_hz steps the env with the newest action (the fallback before the
  first one) and publishes the observation, stamped with wall time.

Run statistics are plain attributes (total_steps, episodes, episode_returns, fallback_count, stale_actions,
clipped_count, latencies_ms, action_periods_ms, step_periods_ms) read by `bitrl run` for its summary.
"""
from __future__ import annotations

import collections
import sys
import threading
import time

from builtin_interfaces.msg import Time as TimeMsg
import gymnasium as gym
import numpy as np
from rclpy.node import Node
from rosgraph_msgs.msg import Clock

from bitrl_msgs.msg import Action, Observation
from bitrl_msgs.srv import ResetEpisode
from bitrl_ros.envs import make_env
from bitrl_ros.nodes.base import CLOCK_QOS, declare_parameters, PIPELINE_QOS, spin_node
from bitrl_ros.nodes.convert import to_float32_list
from bitrl_ros.nodes.stats import BridgeStats
from bitrl_ros.rl.evaluation import RETURN_WINDOW

HISTORY = 4096  # samples kept for latency / period statistics


def _stamp(seconds: float) -> TimeMsg:
    sec = int(seconds)
    return TimeMsg(sec=sec, nanosec=int(round((seconds - sec) * 1e9)) % 1_000_000_000)


class SimBridgeNode(Node):
    def __init__(self, **node_kwargs):
        super().__init__("sim_bridge", **node_kwargs)
        p = declare_parameters(self, "sim_bridge")
        self.env_id: str = p["env"]
        self.mode: str = p["mode"]
        self.rate_hz: float = p["control_rate_hz"]
        self.period_s = 1.0 / self.rate_hz
        self.seed: int = p["seed"]
        self.action_timeout_s: float = p["action_timeout_s"]
        self.fallback_mode: str = p["fallback_action"]
        self.max_steps: int = p["max_steps"]
        self.lockstep = self.mode == "lockstep"

        self.env = make_env(self.env_id, self.seed)
        self.action_space = self.env.action_space
        self.discrete = isinstance(self.action_space, gym.spaces.Discrete)

        # Run statistics (read by the runner from another thread: only appended to / reassigned here).
        self.total_steps = 0
        self.episodes = 0                      # finished episodes (terminated or truncated)
        self.episode_returns: list[float] = []
        self.episode_successes: list[bool] = []  # envs that report success: info["success"] at each episode's end
        self.fallback_count = 0
        self.stale_actions = 0
        self.clipped_count = 0
        self.invalid_actions = 0
        self.actions_received = 0
        self.observations_published = 0       # every publish, repeats of an unanswered observation included
        self.latencies_ms: collections.deque = collections.deque(maxlen=HISTORY)
        self.action_periods_ms: collections.deque = collections.deque(maxlen=HISTORY)
        self.step_periods_ms: collections.deque = collections.deque(maxlen=HISTORY)
        self.finished = threading.Event()
        self.started_at: float | None = None   # wall time of the first observation

        # Episode state.
        self.episode = 0
        self.step_in_episode = 0
        self.episode_return = 0.0
        self.sim_time = 0.0
        obs, info = self.env.reset(seed=self.seed)
        self._obs = np.asarray(obs, dtype=np.float32)
        self._mission = str(info.get("mission", ""))  # language-conditioned envs: the episode's instruction
        self._last_action = None               # last action applied to the env (for the hold fallback)
        self._newest_action = None             # realtime: newest action received
        self._published: dict[tuple[int, int], float] = {}  # (episode, step) -> wall time it was published
        self._published_order: collections.deque = collections.deque()
        self._pending: tuple[int, int] | None = None  # lockstep: the (e, k) whose action we wait for
        self._pending_since = 0.0
        self._pending_msg: Observation | None = None
        self._last_action_wall: float | None = None
        self._last_tick: float | None = None

        self.obs_pub = self.create_publisher(Observation, "observation", PIPELINE_QOS)
        self.clock_pub = (self.create_publisher(Clock, "/clock", CLOCK_QOS)
                          if self.lockstep and p["publish_clock"] else None)
        self.action_sub = self.create_subscription(Action, "action", self._on_action, PIPELINE_QOS)
        self.reset_srv = self.create_service(ResetEpisode, "reset_episode", self._on_reset)
        if self.lockstep:
            # Polls for the graph being connected and for action timeouts; stepping itself is event-driven.
            self.timer = self.create_timer(min(0.01, self.action_timeout_s / 4), self._lockstep_tick)
        else:
            self.timer = self.create_timer(self.period_s, self._realtime_tick)
        self.get_logger().info(
            f"{self.env_id} ({'discrete' if self.discrete else 'continuous'} actions), mode={self.mode}, "
            f"rate={self.rate_hz:g} Hz, seed={self.seed}, max_steps={self.max_steps or 'unlimited'}")

    # -- statistics --------------------------------------------------------------------------------------------
    def mean_return(self, last: int = RETURN_WINDOW) -> float | None:
        recent = self.episode_returns[-last:]
        return float(np.mean(recent)) if recent else None

    def stats(self) -> BridgeStats:
        return BridgeStats(
            env_id=self.env_id, mode=self.mode, rate_hz=self.rate_hz, max_steps=self.max_steps,
            total_steps=self.total_steps, episodes=self.episodes, episode_returns=tuple(self.episode_returns),
            action_periods_ms=tuple(self.action_periods_ms), latencies_ms=tuple(self.latencies_ms),
            fallbacks=self.fallback_count, stale_actions=self.stale_actions, clipped_actions=self.clipped_count,
            observations_published=self.observations_published, started_at=self.started_at,
            achieved_rate_hz=self.achieved_rate_hz(), episode_successes=tuple(self.episode_successes))

    def achieved_rate_hz(self) -> float | None:
        """Env steps per wall second since the first observation."""
        if self.started_at is None or self.total_steps == 0:
            return None
        return self.total_steps / max(time.perf_counter() - self.started_at, 1e-9)

    # -- publishing --------------------------------------------------------------------------------------------
    def _graph_ready(self) -> bool:
        return self.obs_pub.get_subscription_count() >= 1 and (
            not self.lockstep or self.count_publishers(self.action_sub.topic_name) >= 1)

    def _publish_obs(self, reward: float = 0.0, terminated: bool = False, truncated: bool = False) -> Observation:
        msg = Observation()
        if self.lockstep:
            msg.header.stamp = _stamp(self.sim_time)
            if self.clock_pub is not None:
                self.clock_pub.publish(Clock(clock=msg.header.stamp))
        else:
            msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.env_id
        msg.episode = self.episode
        msg.step = self.step_in_episode
        msg.values = to_float32_list(self._obs)
        msg.mission = self._mission
        msg.reward = float(reward)
        msg.terminated = bool(terminated)
        msg.truncated = bool(truncated)
        now = time.perf_counter()
        if self.started_at is None:
            self.started_at = now
        key = (self.episode, self.step_in_episode)
        self._published[key] = now
        self._published_order.append(key)
        while len(self._published_order) > 256:
            self._published.pop(self._published_order.popleft(), None)
        self.obs_pub.publish(msg)
        self.observations_published += 1
        return msg

    def _publish_and_wait(self, reward: float = 0.0) -> None:
        msg = self._publish_obs(reward)
        if self.lockstep:
            self._pending = (msg.episode, msg.step)
            self._pending_since = time.perf_counter()
            self._pending_msg = msg

    # -- actions -----------------------------------------------------------------------------------------------
    def _fallback(self):
        if self.fallback_mode == "hold" and self._last_action is not None:
            return self._last_action
        if self.discrete:
            return int(self.action_space.start)
        return np.clip(np.zeros(self.action_space.shape, dtype=self.action_space.dtype),
                       self.action_space.low, self.action_space.high)

    def _to_env_action(self, msg: Action):
        """The env action of a message; None when it cannot be applied (a WARN, counted by the caller)."""
        if self.discrete:
            if self.action_space.contains(np.int64(msg.discrete)):
                return int(msg.discrete)
            self.get_logger().warning(f"action.discrete = {msg.discrete} is outside {self.action_space}; "
                                      f"applying the fallback", throttle_duration_sec=5.0)
            return None
        values = np.asarray(msg.continuous, dtype=np.float64)
        expected = int(np.prod(self.action_space.shape))
        if values.size != expected or not np.all(np.isfinite(values)):
            what = f"length {values.size}, expected {expected}" if values.size != expected else "NaN/Inf values"
            self.get_logger().warning(f"action.continuous has {what}; applying the fallback",
                                      throttle_duration_sec=5.0)
            return None
        values = values.reshape(self.action_space.shape)
        clipped = np.clip(values, self.action_space.low, self.action_space.high)
        if not np.array_equal(clipped, values):
            self.clipped_count += 1
        return clipped.astype(self.action_space.dtype)

    def _on_action(self, msg: Action) -> None:
        now = time.perf_counter()
        key = (int(msg.episode), int(msg.step))
        if self.finished.is_set():
            return
        if self.lockstep and key != self._pending:
            self.stale_actions += 1
            return
        self.actions_received += 1
        sent = self._published.get(key)
        if sent is not None:
            self.latencies_ms.append(1000.0 * (now - sent))
        if self._last_action_wall is not None:
            self.action_periods_ms.append(1000.0 * (now - self._last_action_wall))
        self._last_action_wall = now
        action = self._to_env_action(msg)
        if action is None:
            self.invalid_actions += 1
            self.fallback_count += 1
            action = self._fallback()
        if self.lockstep:
            self._pending = None
            self._step(action)
        else:
            self._newest_action = action

    # -- stepping ----------------------------------------------------------------------------------------------
    def _step(self, action) -> None:
        """Apply one action, publish the resulting observation; on episode end also reset and publish."""
        now = time.perf_counter()
        if self._last_tick is not None:
            self.step_periods_ms.append(1000.0 * (now - self._last_tick))
        self._last_tick = now
        self._last_action = action
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._mission = str(info.get("mission", self._mission))
        self.total_steps += 1
        self.step_in_episode += 1
        self.sim_time = self.total_steps * self.period_s
        self.episode_return += float(reward)
        self._obs = np.asarray(obs, dtype=np.float32)
        done = terminated or truncated
        if done:
            self.episodes += 1
            self.episode_returns.append(self.episode_return)
            if "success" in info:
                self.episode_successes.append(bool(info["success"]))
        reached_max = self.max_steps > 0 and self.total_steps >= self.max_steps
        if not done:
            if reached_max:
                self._publish_obs(reward)
            else:
                self._publish_and_wait(reward)
        else:
            self._publish_obs(reward, terminated, truncated)
            self._reset_episode(self.seed + self.episode + 1, publish=not reached_max)
        if reached_max:
            self._pending = None
            self.finished.set()
            self.get_logger().info(
                f"max_steps={self.max_steps} reached, finished: {self.total_steps} steps, {self.episodes} episodes, "
                f"{self.fallback_count} fallbacks, {self.stale_actions} stale actions, {self.clipped_count} clipped")

    def _reset_episode(self, seed: int | None, publish: bool = True) -> None:
        self.episode += 1
        self.step_in_episode = 0
        self.episode_return = 0.0
        obs, info = self.env.reset(seed=seed)
        self._obs = np.asarray(obs, dtype=np.float32)
        self._mission = str(info.get("mission", ""))
        if publish:
            self._publish_and_wait()

    def _lockstep_tick(self) -> None:
        if self.finished.is_set():
            return
        now = time.perf_counter()
        if self._pending is None:
            if self.started_at is None and self._graph_ready():
                self._publish_and_wait()  # the first observation, once someone listens and someone answers
            return
        if now - self._pending_since < self.action_timeout_s:
            return
        if self.actions_received == 0:
            # Nothing has answered yet: the agent may still have been starting (or not yet matched when the
            # first observation went out). Send the same observation again rather than stepping blind.
            self.get_logger().info(f"no action for episode {self._pending[0]} step {self._pending[1]} yet; "
                                   "publishing the observation again", throttle_duration_sec=10.0)
            msg = self._pending_msg
            self._published[self._pending] = now
            self._pending_since = now
            self.obs_pub.publish(msg)
            self.observations_published += 1
            return
        self.fallback_count += 1
        self.get_logger().warning(
            f"no action for episode {self._pending[0]} step {self._pending[1]} within {self.action_timeout_s:g} s: "
            f"applying the fallback ({self.fallback_mode}); {self.fallback_count} so far", throttle_duration_sec=5.0)
        self._pending = None
        self._step(self._fallback())

    def _realtime_tick(self) -> None:
        if self.finished.is_set():
            return
        if self.started_at is None:
            if not self._graph_ready():
                return
            self._publish_obs()  # the reset observation
            return
        action = self._newest_action
        if action is None:
            self.fallback_count += 1
            action = self._fallback()
        self._step(action)

    # -- service -----------------------------------------------------------------------------------------------
    def _on_reset(self, request, response):
        seed = int(request.seed) if request.use_seed else None
        if self.finished.is_set():
            response.success = False
            response.message = "max_steps reached: the bridge has stopped"
            response.episode = self.episode
            return response
        self._pending = None
        self._reset_episode(seed, publish=self.started_at is not None)
        self.get_logger().info(f"reset_episode: episode {self.episode} (seed {seed})")
        response.success = True
        response.message = ""
        response.episode = self.episode
        return response


def main(args=None) -> int:
    return spin_node(SimBridgeNode, args, done=lambda node: node.finished.is_set())


if __name__ == "__main__":
    sys.exit(main())
