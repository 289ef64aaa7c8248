"""diagnostics_monitor: watches the pipeline topics and publishes diagnostic_msgs/DiagnosticArray on /diagnostics.

Statuses (diagnostic_updater conventions, names "bitrl: <component>"):
  control loop  achieved action rate and period deviation over a sliding window
  latency       observation -> action latency measured here (receive times joined by (episode, step)), encode_ms
  memory        process RSS / peak RSS (under `bitrl run` every node shares this process)
  learner       the latest training_stats
  safety        actions published with safe_action=true
A component whose input topic has published nothing for stale_after_s is STALE. All times are wall (monotonic)
receive times, so the numbers mean the same in lockstep (sim time) and realtime mode. The window statistics
live in the ROS-free bitrl_ros.telemetry.loop_stats.
"""
from __future__ import annotations

import math
import time

import rclpy
from bitrl_msgs.msg import Action, EncodedState, Observation, TrainingStats
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from bitrl_ros.errors import BitrlError, ConfigError
from bitrl_ros.nodes.base import DIAGNOSTICS_QOS, PIPELINE_QOS, STATS_QOS, declare_parameters
from bitrl_ros.nodes.convert import ERROR, OK, STALE, WARN, make_status
from bitrl_ros.telemetry import LatencyJoin, RateWindow, SampleWindow, read_memory_mb


class DiagnosticsMonitorNode(Node):
    def __init__(self, **node_kwargs):
        super().__init__("diagnostics_monitor", **node_kwargs)
        self.params = p = declare_parameters(self, "diagnostics_monitor")
        self.hardware_id = p["hardware_id"]
        self.realtime = p["mode"] == "realtime"
        self.nominal_period_s = 1.0 / p["control_rate_hz"] if self.realtime else None
        window = p["window_s"]

        self.actions = RateWindow(window)
        self.latency = LatencyJoin(max_pending=1024)
        self.encode_ms = SampleWindow(1000)
        self.safe_times = RateWindow(window)  # times of safe actions, for "in window" counts
        self.safe_action_count = 0
        self.last_action_safe = False
        self.observation_count = 0
        self.last_stats: TrainingStats | None = None
        self.stats_times = RateWindow(1e9, max_events=16)
        self.last_seen: dict[str, float] = {}  # topic -> monotonic receive time of its newest message
        self.published_count = 0

        self.create_subscription(Observation, "observation", self._on_observation, PIPELINE_QOS)
        self.create_subscription(EncodedState, "encoded_state", self._on_encoded, PIPELINE_QOS)
        self.create_subscription(Action, "action", self._on_action, PIPELINE_QOS)
        self.create_subscription(TrainingStats, "training_stats", self._on_stats, STATS_QOS)
        self.pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        # A steady-clock timer: diagnostics keep coming when sim time (lockstep /clock) stalls.
        self.timer = self.create_timer(1.0 / p["publish_rate_hz"], self.publish_diagnostics,
                                       clock=Clock(clock_type=ClockType.STEADY_TIME))

    # --- inputs: record receive times only; all math happens at publish time ---
    def _on_observation(self, msg: Observation) -> None:
        now = time.monotonic()
        self.last_seen["observation"] = now
        self.observation_count += 1
        self.latency.first((msg.episode, msg.step), now)

    def _on_encoded(self, msg: EncodedState) -> None:
        self.last_seen["encoded_state"] = time.monotonic()
        self.encode_ms.add(msg.encode_ms)

    def _on_action(self, msg: Action) -> None:
        now = time.monotonic()
        self.last_seen["action"] = now
        self.actions.add(now)
        self.latency.second((msg.episode, msg.step), now)
        self.last_action_safe = msg.safe_action
        if msg.safe_action:
            self.safe_action_count += 1
            self.safe_times.add(now)

    def _on_stats(self, msg: TrainingStats) -> None:
        now = time.monotonic()
        self.last_seen["training_stats"] = now
        self.stats_times.add(now)
        self.last_stats = msg

    # --- output ---
    def _stale(self, topic: str, now: float, after_s: float | None = None) -> str | None:
        """A STALE message when `topic` has published nothing for after_s (default stale_after_s), else None."""
        after_s = self.params["stale_after_s"] if after_s is None else after_s
        seen = self.last_seen.get(topic)
        if seen is None:
            return f"no {topic} received"
        if now - seen > after_s:
            return f"no {topic} for {now - seen:.1f} s"
        return None

    def statuses(self, now: float | None = None) -> list:
        now = time.monotonic() if now is None else now
        return [self._loop_status(now), self._latency_status(now), self._memory_status(),
                self._learner_status(now), self._safety_status(now)]

    def publish_diagnostics(self) -> None:
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = self.statuses()
        self.pub.publish(arr)
        self.published_count += 1

    def _status(self, component: str, level: int, message: str, values: dict):
        return make_status(f"bitrl: {component}", level, message, self.hardware_id, values)

    def _loop_status(self, now: float):
        rate = self.actions.rate_hz(now)
        p50, p99 = self.actions.period_deviation_ms(now, self.nominal_period_s)
        values = {"rate [Hz]": rate, "period deviation p50 [ms]": p50, "period deviation p99 [ms]": p99,
                  "actions": self.actions.count, "mode": self.params["mode"],
                  "window [s]": self.actions.window_s}
        if self.realtime:
            values["target rate [Hz]"] = self.params["control_rate_hz"]
        stale = self._stale("action", now)
        if stale:
            return self._status("control loop", STALE, stale, values)
        if self.realtime and rate < self.params["rate_warn_hz"]:
            return self._status("control loop", WARN, f"action rate {rate:.1f} Hz below "
                                f"{self.params['rate_warn_hz']:g} Hz", values)
        return self._status("control loop", OK, f"{rate:.1f} Hz", values)

    def _latency_status(self, now: float):
        p50, p99 = self.latency.percentile_ms(50), self.latency.percentile_ms(99)
        values = {"observation->action p50 [ms]": p50, "observation->action p99 [ms]": p99,
                  "encode p50 [ms]": self.encode_ms.percentile(50),
                  "samples": len(self.latency.latency_s), "observations": self.observation_count,
                  "observations without action": self.latency.dropped + self.latency.pending}
        stale = self._stale("observation", now) or self._stale("action", now)
        if stale:
            return self._status("latency", STALE, stale, values)
        if p50 > self.params["latency_warn_ms"]:
            return self._status("latency", WARN, f"p50 {p50:.1f} ms above {self.params['latency_warn_ms']:g} ms",
                                values)
        return self._status("latency", OK, f"p50 {p50:.2f} ms" if not math.isnan(p50) else "no joined samples yet",
                            values)

    def _memory_status(self):
        mem = read_memory_mb()
        if not mem:
            return self._status("memory", WARN, "/proc/self/status unavailable", {})
        return self._status("memory", OK, f"RSS {mem['rss']:.0f} MB (this process; under bitrl run all nodes "
                            "share it)", {"rss [MB]": mem["rss"], "peak rss [MB]": mem["peak_rss"]})

    def _learner_status(self, now: float):
        s = self.last_stats
        # PPO updates come once per rollout (seconds to minutes apart): once two have arrived, allow a few of
        # the observed intervals before calling the learner stale.
        periods = self.stats_times.periods(now)
        after = self.params["stale_after_s"]
        if periods.size:
            after = max(after, 2.5 * float(periods[-1]))
        stale = self._stale("training_stats", now, after)
        if s is None:
            return self._status("learner", STALE, stale, {"updates": 0})
        values = {"updates": s.update, "global step": s.global_step, "episodes": s.episodes,
                  "policy loss": s.policy_loss, "value loss": s.value_loss, "entropy [nats]": s.entropy,
                  "approx kl": s.approx_kl, "clip fraction": s.clip_fraction, "grad norm": s.grad_norm,
                  "mean return": s.mean_return, "throughput [steps/s]": s.steps_per_second,
                  "update time [ms]": s.update_ms}
        if stale:
            return self._status("learner", STALE, stale, values)
        losses = (s.policy_loss, s.value_loss, s.entropy)
        if not all(math.isfinite(x) for x in losses):
            return self._status("learner", ERROR, "non-finite loss or entropy", values)
        return self._status("learner", OK, f"update {s.update}, {s.steps_per_second:.0f} steps/s", values)

    def _safety_status(self, now: float):
        in_window = self.safe_times.events(now)
        values = {"safe actions": self.safe_action_count, "safe actions in window": in_window,
                  "holding safe action": self.last_action_safe}
        stale = self._stale("action", now)
        if stale:
            return self._status("safety", STALE, stale, values)
        if self.last_action_safe:
            return self._status("safety", ERROR, "holding a safe action (watchdog or invalid input)", values)
        if in_window:
            return self._status("safety", WARN, f"{in_window} safe action(s) in the last "
                                f"{self.safe_times.window_s:g} s", values)
        return self._status("safety", OK, "policy actions", values)


def main(args=None) -> int:
    rclpy.init(args=args)
    node = None
    try:
        node = DiagnosticsMonitorNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (ConfigError, BitrlError) as exc:
        print(exc)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
