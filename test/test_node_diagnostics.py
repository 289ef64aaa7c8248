"""diagnostics_monitor alone on real DDS (localhost): a test node plays a ~40 Hz control loop (observation, then
the action for the same (episode, step)) and the monitor's /diagnostics must describe it.
"""
from __future__ import annotations

import time
import uuid

import pytest

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402, I100 - after the importorskip above
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from bitrl_msgs.msg import Action, EncodedState, Observation  # noqa: E402
from bitrl_ros.nodes.base import DIAGNOSTICS_QOS, PIPELINE_QOS  # noqa: E402
from bitrl_ros.nodes.convert import ERROR, OK, STALE, status_level, WARN  # noqa: E402
from bitrl_ros.nodes.diagnostics_monitor import DiagnosticsMonitorNode  # noqa: E402
from ros_harness import InProcessGraph, unique_ns, wait_for  # noqa: E402
from telemetry_fixtures import pi4_tree, set_energy, thermal_zone, x86_tree  # noqa: E402

NAMES = {"bitrl: control loop", "bitrl: latency", "bitrl: memory", "bitrl: learner", "bitrl: safety",
         "bitrl: temperature", "bitrl: power", "bitrl: throttling", "bitrl: cpu"}


class LoopPlayer(Node):
    def __init__(self, ns, hardware_id, **kw):
        super().__init__("loop_player", namespace=ns, **kw)
        self.hardware_id = hardware_id
        self.obs_pub = self.create_publisher(Observation, "observation", PIPELINE_QOS)
        self.enc_pub = self.create_publisher(EncodedState, "encoded_state", PIPELINE_QOS)
        self.act_pub = self.create_publisher(Action, "action", PIPELINE_QOS)
        self.arrays: list[tuple[float, DiagnosticArray]] = []
        # /diagnostics is absolute and shared with any other test's monitor: keep only ours (by hardware_id).
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, DIAGNOSTICS_QOS)

    def _on_diag(self, msg):
        if msg.status and msg.status[0].hardware_id == self.hardware_id:
            self.arrays.append((time.monotonic(), msg))

    def matched(self):
        return all(p.get_subscription_count() >= 1 for p in (self.obs_pub, self.enc_pub, self.act_pub))


def _by_name(arr: DiagnosticArray) -> dict:
    return {s.name: s for s in arr.status}


def _values(status) -> dict:
    return {kv.key: kv.value for kv in status.values}


@pytest.mark.slow
def test_monitor_reports_a_40hz_loop():
    ns, hw = unique_ns("diag"), f"test-{uuid.uuid4().hex[:6]}"
    params = [Parameter("publish_rate_hz", value=4.0), Parameter("hardware_id", value=hw),
              Parameter("stale_after_s", value=1.5)]
    monitor = InProcessGraph(lambda ctx: DiagnosticsMonitorNode(context=ctx, namespace=ns, parameter_overrides=params))
    player = InProcessGraph(lambda ctx: LoopPlayer(ns, hw, context=ctx))
    try:
        p = player.node
        assert wait_for(p.matched) and wait_for(lambda: len(p.arrays) >= 1)
        # Before any input everything fed by a topic is STALE; memory is measured, never stale.
        first = _by_name(p.arrays[-1][1])
        assert set(first) == NAMES
        assert status_level(first["bitrl: control loop"]) == STALE
        assert status_level(first["bitrl: memory"]) == OK

        period, t0 = 1 / 40, time.monotonic()
        for step in range(80):  # ~2 s at 40 Hz
            p.obs_pub.publish(Observation(episode=1, step=step, values=[0.0] * 4))
            p.enc_pub.publish(EncodedState(episode=1, step=step, encode_ms=3.0))
            time.sleep(0.002)
            p.act_pub.publish(Action(episode=1, step=step, safe_action=step == 10))
            time.sleep(max(t0 + (step + 1) * period - time.monotonic(), 0.0))
        fed = time.monotonic()
        assert wait_for(lambda: p.arrays[-1][0] > fed + 0.05)
        status = _by_name(p.arrays[-1][1])
        assert set(status) == NAMES
        assert all(s.hardware_id == hw for s in status.values())

        loop = status["bitrl: control loop"]
        assert status_level(loop) == OK, loop.message
        assert 30.0 <= float(_values(loop)["rate [Hz]"]) <= 50.0
        assert float(_values(loop)["period deviation p99 [ms]"]) >= 0.0
        assert int(_values(loop)["actions"]) == 80

        lat = status["bitrl: latency"]
        assert status_level(lat) in (OK, WARN)
        lv = _values(lat)
        assert 0.0 < float(lv["observation->action p50 [ms]"]) <= float(lv["observation->action p99 [ms]"])
        assert float(lv["encode p50 [ms]"]) == pytest.approx(3.0)
        assert int(lv["samples"]) == 80

        assert status_level(status["bitrl: learner"]) == STALE  # no training_stats published
        mem = _values(status["bitrl: memory"])
        assert float(mem["rss [MB]"]) > 0 and float(mem["peak rss [MB]"]) > 0

        safety = status["bitrl: safety"]
        assert status_level(safety) == WARN and _values(safety)["safe actions"] == "1"
        assert status_level(safety) != ERROR

        # The loop stops: after stale_after_s the control loop goes STALE.
        assert wait_for(lambda: status_level(_by_name(p.arrays[-1][1])["bitrl: control loop"]) == STALE, 5.0)
    finally:
        player.close()
        monitor.close()


def test_monitor_refuses_invalid_parameters():
    from bitrl_ros.errors import ConfigError

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        with pytest.raises(ConfigError, match=r"'publish_rate_hz' = 0\.0"):
            DiagnosticsMonitorNode(context=ctx, namespace=unique_ns("bad"),
                                   parameter_overrides=[Parameter("publish_rate_hz", value=0.0)])
    finally:
        rclpy.shutdown(context=ctx)


def _monitor_with_root(ns, hw, root, **extra):
    params = [Parameter("publish_rate_hz", value=5.0), Parameter("hardware_id", value=hw),
              Parameter("telemetry_root", value=str(root)), Parameter("vcgencmd_interval_s", value=0.5)]
    params += [Parameter(k, value=v) for k, v in extra.items()]
    return InProcessGraph(lambda ctx: DiagnosticsMonitorNode(context=ctx, namespace=ns, parameter_overrides=params))


@pytest.mark.slow
def test_pi4_fixture_temperature_throttling_and_estimate_on_the_topic(tmp_path):
    root = pi4_tree(tmp_path, temp_millic=75000, throttled="0x50005")
    ns, hw = unique_ns("diagpi"), f"test-{uuid.uuid4().hex[:6]}"
    monitor = _monitor_with_root(ns, hw, root)
    player = InProcessGraph(lambda ctx: LoopPlayer(ns, hw, context=ctx))
    try:
        p = player.node
        assert wait_for(lambda: len(p.arrays) >= 1)
        st = _by_name(p.arrays[-1][1])
        assert set(st) == NAMES and all(s.hardware_id == hw for s in st.values())
        temp = st["bitrl: temperature"]
        assert status_level(temp) == WARN, temp.message
        assert float(_values(temp)["cpu temperature [C]"]) == pytest.approx(75.0)

        thr = st["bitrl: throttling"]
        tv = _values(thr)
        assert status_level(thr) == WARN
        assert tv["get_throttled"] == "0x50005"
        assert tv["under-voltage"] == "true" and tv["throttled"] == "true"
        assert tv["arm frequency capped"] == "false" and tv["soft temperature limit"] == "false"
        assert tv["under-voltage occurred"] == "true" and tv["throttling occurred"] == "true"
        assert tv["arm frequency capping occurred"] == "false" and tv["soft temperature limit occurred"] == "false"

        cpu = _values(st["bitrl: cpu"])
        assert float(cpu["arm clock [MHz]"]) == pytest.approx(1500.4, abs=0.01)
        assert float(cpu["core voltage [V]"]) == pytest.approx(0.85)
        assert 0.0 <= float(cpu["utilisation [%]"]) <= 100.0

        # a Pi 4 without an INA sensor: the power is the estimate, and says so in every key
        power = st["bitrl: power"]
        pv = _values(power)
        assert status_level(power) == OK
        assert pv["source"] == "estimated" and pv["measured"] == "false"
        assert "power (estimated) [W]" in pv and "power [W]" not in pv
        assert not any(k.startswith("energy") and "(estimated)" not in k for k in pv)
        assert "estimated" in power.message and "not measured" in power.message

        thermal_zone(root, 0, "cpu-thermal", 85000)
        assert wait_for(lambda: status_level(_by_name(p.arrays[-1][1])["bitrl: temperature"]) == ERROR, 5.0)
        thermal_zone(root, 0, "cpu-thermal", 50000)
        (root / "usr/bin/vcgencmd").write_text('#!/bin/sh\necho "throttled=0x0"\n')
        assert wait_for(lambda: status_level(_by_name(p.arrays[-1][1])["bitrl: temperature"]) == OK, 5.0)
        assert wait_for(lambda: status_level(_by_name(p.arrays[-1][1])["bitrl: throttling"]) == OK, 5.0)
    finally:
        player.close()
        monitor.close()


@pytest.mark.slow
def test_x86_fixture_measured_energy_per_episode(tmp_path):
    root = x86_tree(tmp_path, energy_uj=0)
    ns, hw = unique_ns("diagx86"), f"test-{uuid.uuid4().hex[:6]}"
    monitor = _monitor_with_root(ns, hw, root)
    player = InProcessGraph(lambda ctx: LoopPlayer(ns, hw, context=ctx))
    try:
        p, m = player.node, monitor.node
        assert wait_for(p.matched)
        energy = 0
        for step in range(6):  # ~1.2 s of episode 3, the counter advancing 1 J per 0.2 s
            energy += 1_000_000
            set_energy(root, energy)
            p.obs_pub.publish(Observation(episode=3, step=step, values=[0.0], terminated=step == 5))
            time.sleep(0.2)
        assert wait_for(lambda: m.energy.last_episode is not None)
        mark = time.monotonic()
        assert wait_for(lambda: p.arrays and p.arrays[-1][0] > mark + 0.05)
        st = _by_name(p.arrays[-1][1])
        pv = _values(st["bitrl: power"])
        assert pv["source"] == "measured:rapl" and pv["measured"] == "true"
        assert pv["last episode"] == "3" and pv["last episode source"] == "measured:rapl"
        assert 0.0 < float(pv["energy last episode [J]"]) <= 6.0 + 1e-6
        assert not any("(estimated)" in k for k in pv)
        assert float(_values(st["bitrl: temperature"])["cpu temperature [C]"]) == pytest.approx(48.0)
        assert status_level(st["bitrl: throttling"]) == STALE  # no vcgencmd on a laptop
    finally:
        player.close()
        monitor.close()


def test_missing_sensors_are_stale_not_a_crash(tmp_path):
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = None
    try:
        node = DiagnosticsMonitorNode(context=ctx, namespace=unique_ns("diagnone"), parameter_overrides=[
            Parameter("telemetry_root", value=str(tmp_path)), Parameter("power_source", value="rapl")])
        st = {s.name: s for s in node.statuses()}
        for name, needle in (("bitrl: temperature", "thermal_zone"), ("bitrl: power", "powercap"),
                             ("bitrl: throttling", "vcgencmd"), ("bitrl: cpu", "proc/stat")):
            assert status_level(st[name]) == STALE, name
            assert needle in st[name].message, (name, st[name].message)
        (tmp_path / "proc").mkdir()
        (tmp_path / "proc" / "stat").write_text("garbage")
        st = {s.name: s for s in node.statuses()}
        assert status_level(st["bitrl: cpu"]) == STALE and "unparsable" in st["bitrl: cpu"].message
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.shutdown(context=ctx)


def test_monitor_refuses_warn_above_error():
    from bitrl_ros.errors import ConfigError

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        with pytest.raises(ConfigError, match="temp_warn_c"):
            DiagnosticsMonitorNode(context=ctx, namespace=unique_ns("bad"), parameter_overrides=[
                Parameter("temp_warn_c", value=90.0), Parameter("temp_error_c", value=80.0)])
        with pytest.raises(ConfigError, match="power_source"):
            DiagnosticsMonitorNode(context=ctx, namespace=unique_ns("bad"), parameter_overrides=[
                Parameter("power_source", value="solar")])
    finally:
        rclpy.shutdown(context=ctx)
