"""diagnostics_monitor alone on real DDS (localhost): a test node plays a ~40 Hz control loop (observation, then
the action for the same (episode, step)) and the monitor's /diagnostics must describe it."""
from __future__ import annotations

import time
import uuid

import pytest

rclpy = pytest.importorskip("rclpy")
from bitrl_msgs.msg import Action, EncodedState, Observation  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from ros_harness import Spinner, unique_ns, wait_for  # noqa: E402

from bitrl_ros.nodes.base import DIAGNOSTICS_QOS, PIPELINE_QOS  # noqa: E402
from bitrl_ros.nodes.convert import ERROR, OK, STALE, WARN, status_level  # noqa: E402
from bitrl_ros.nodes.diagnostics_monitor import DiagnosticsMonitorNode  # noqa: E402

NAMES = {"bitrl: control loop", "bitrl: latency", "bitrl: memory", "bitrl: learner", "bitrl: safety"}


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
    monitor = Spinner(lambda ctx: DiagnosticsMonitorNode(context=ctx, namespace=ns, parameter_overrides=params))
    player = Spinner(lambda ctx: LoopPlayer(ns, hw, context=ctx))
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
