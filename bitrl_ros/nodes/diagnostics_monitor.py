"""diagnostics_monitor: watches the pipeline topics and publishes diagnostic_msgs/DiagnosticArray on /diagnostics.

Statuses (diagnostic_updater conventions, names "bitrl: <component>"):
  control loop  achieved action rate and period deviation over a sliding window
  latency       observation -> action latency measured here (receive times joined by (episode, step)), encode_ms
  memory        process RSS / peak RSS (under `bitrl run` every node shares this process)
  learner       the latest training_stats
  safety        actions published with safe_action=true
  temperature   CPU temperature (thermal zones), WARN/ERROR at temp_warn_c / temp_error_c
  power         board power in W with its source ("measured:<sensor>" or "estimated", never mixed) and energy
                per episode (episode boundaries seen on `observation`)
  throttling    every Raspberry Pi get_throttled bit as a key; WARN when any is set; STALE without vcgencmd
  cpu           system CPU utilisation; ARM clock and core voltage on a Pi
A missing or unreadable sensor makes its status STALE with a message naming the file or command.
A component whose input topic has published nothing for stale_after_s is STALE. All times are wall (monotonic)
receive times, so the numbers mean the same in lockstep (sim time) and realtime mode. The window statistics
live in the ROS-free bitrl_ros.telemetry.loop_stats.
"""
from __future__ import annotations

import math
import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.node import Node

from bitrl_msgs.msg import Action, EncodedState, Observation, TrainingStats
from bitrl_ros.errors import ConfigError
from bitrl_ros.nodes.base import declare_parameters, DIAGNOSTICS_QOS, PIPELINE_QOS, spin_node, STATS_QOS
from bitrl_ros.nodes.convert import ERROR, make_status, OK, STALE, WARN
from bitrl_ros.telemetry import (CpuUsage, detect_board, EnergyMeter, LatencyJoin, open_power_source, PiClocks,
                                 RateWindow, read_clocks, read_memory_mb, read_thermal, read_throttled, SampleWindow,
                                 ThrottleReading, Vcgencmd)
from bitrl_ros.telemetry.power import PmicPower


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

        # hardware probes (ROS-free, bitrl_ros.telemetry), all reading under telemetry_root
        if p["temp_warn_c"] > p["temp_error_c"]:
            raise ConfigError(f"diagnostics_monitor: invalid value for 'temp_warn_c' = {p['temp_warn_c']!r} "
                              f"(allowed: <= temp_error_c = {p['temp_error_c']!r})")
        root = p["telemetry_root"]
        self.board = detect_board(root, p["board"])
        self.power = open_power_source(p["power_source"], root, self.board, p["ina_hwmon_name"],
                                       p["vcgencmd_path"] or None)
        self.energy = EnergyMeter()
        self.cpu = CpuUsage(root)
        self.vcgencmd = Vcgencmd(root, p["vcgencmd_path"] or None, timeout_s=1.0)
        self.throttle = ThrottleReading(error="not read yet")
        self.clocks = PiClocks(error="not read yet")
        self._vc_time: float | None = None
        self.last_power = None
        self._episode: int | None = None
        self._episode_closed = False

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
        self._track_episode(msg, now)

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

    def _track_episode(self, msg: Observation, now: float) -> None:
        """Close the energy total at episode boundaries: a terminated/truncated observation, or a new episode
        number (when the end was not seen).
        """
        new_episode = self._episode is not None and msg.episode != self._episode
        if new_episode and not self._episode_closed:
            self._close_episode(self._episode, now)
        if new_episode:
            self._episode_closed = False
        self._episode = msg.episode
        if (msg.terminated or msg.truncated) and not self._episode_closed:
            self._close_episode(msg.episode, now)
            self._episode_closed = True

    def _close_episode(self, episode: int, now: float) -> None:
        if not isinstance(self.power, PmicPower):  # file reads are cheap: read at the boundary itself
            self.energy.add(self.power.read(now))
        self.energy.end_episode(episode)

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
        self._probe(now)
        return [self._loop_status(now), self._latency_status(now), self._memory_status(),
                self._learner_status(now), self._safety_status(now), self._temperature_status(),
                self._power_status(), self._throttling_status(), self._cpu_status()]

    def _probe(self, now: float) -> None:
        """Read the hardware probes: files every call, vcgencmd at most every vcgencmd_interval_s."""
        self.thermal = read_thermal(self.params["telemetry_root"])
        self.utilisation = self.cpu.sample()
        self.last_power = self.power.read(now)
        self.energy.add(self.last_power)
        if self._vc_time is None or now - self._vc_time >= self.params["vcgencmd_interval_s"]:
            self._vc_time = now
            self.throttle = read_throttled(self.vcgencmd)
            self.clocks = read_clocks(self.vcgencmd) if self.vcgencmd.available else PiClocks(
                error=self.throttle.error)

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

    def _temperature_status(self):
        th = self.thermal
        if not th.available:
            return self._status("temperature", STALE, f"no temperature: {th.error}", {})
        values = {"cpu temperature [C]": th.cpu_c, "zone": th.zone}
        values.update({f"{name} [C]": c for name, c in th.zones.items() if name != th.zone})
        values.update({"warn at [C]": self.params["temp_warn_c"], "error at [C]": self.params["temp_error_c"]})
        if th.cpu_c >= self.params["temp_error_c"]:
            return self._status("temperature", ERROR, f"CPU {th.cpu_c:.1f} C at or above "
                                f"{self.params['temp_error_c']:g} C", values)
        if th.cpu_c >= self.params["temp_warn_c"]:
            return self._status("temperature", WARN, f"CPU {th.cpu_c:.1f} C at or above "
                                f"{self.params['temp_warn_c']:g} C", values)
        return self._status("temperature", OK, f"CPU {th.cpu_c:.1f} C", values)

    def _power_status(self):
        r = self.last_power
        values = {"source": r.source, "measured": r.measured, "board": self.board.kind}
        # estimated energy gets its own keys, so nothing reading "energy ... [J]" can take it for a measurement
        tag = "" if r.measured else " (estimated)"
        last = self.energy.last_episode
        if last is not None and last.source is not None:
            ltag = "" if last.measured else " (estimated)"
            values[f"energy last episode{ltag} [J]"] = last.joules
            values[f"mean power last episode{ltag} [W]"] = last.mean_w
            values[f"mean energy per episode{ltag} [J]"] = self.energy.mean_joules()
            values["last episode"] = last.episode if last.episode is not None else -1
            values["last episode source"] = last.source
            values["last episode source changed"] = last.source_changed
        values["episodes"] = len(self.energy.episodes)
        values[f"energy this episode{tag} [J]"] = self.energy.current.joules
        if not r.available:
            return self._status("power", STALE, f"no power reading: {r.error}", values)
        values = {f"power{tag} [W]": r.watts, **values}
        if not r.measured:
            return self._status("power", OK, f"{r.watts:.2f} W estimated from CPU utilisation "
                                f"({self.board.kind} model; not measured)", values)
        return self._status("power", OK, f"{r.watts:.2f} W ({r.source})", values)

    def _throttling_status(self):
        t = self.throttle
        if not t.available:
            return self._status("throttling", STALE, f"no throttle flags: {t.error}", {})
        values = {"get_throttled": f"0x{t.raw:x}", **t.flags}
        bad = t.any_set if self.params["throttle_warn_since_boot"] else t.any_now
        if bad:
            set_names = [k for k, v in t.flags.items() if v] or [f"0x{t.raw:x}"]
            return self._status("throttling", WARN, ", ".join(set_names), values)
        return self._status("throttling", OK, "no throttling", values)

    def _cpu_status(self):
        values = {}
        if self.utilisation is not None:
            values["utilisation [%]"] = 100.0 * self.utilisation
        c = self.clocks
        if c.arm_hz is not None:
            values["arm clock [MHz]"] = c.arm_hz / 1e6
        if c.core_volts is not None:
            values["core voltage [V]"] = c.core_volts
        values["board"] = self.board.model
        if self.utilisation is None:
            return self._status("cpu", STALE, f"no CPU utilisation: {self.cpu.error}", values)
        msg = f"{100.0 * self.utilisation:.0f} % busy"
        if self.board.is_pi and c.error:
            msg += f"; clock/voltage unavailable: {c.error}"
        return self._status("cpu", OK, msg, values)


def main(args=None) -> int:
    return spin_node(DiagnosticsMonitorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
