"""Window statistics of the diagnostics monitor (ROS-free, synthetic times)."""
import math
from pathlib import Path

import numpy as np
import pytest

from bitrl_ros.telemetry import LatencyJoin, percentile, RateWindow, read_memory_mb, SampleWindow


def test_percentile_matches_numpy_and_empty_is_nan():
    vals = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert percentile(vals, 50) == 3.0
    assert percentile(vals, 99) == pytest.approx(np.percentile(vals, 99))
    assert math.isnan(percentile([], 50))


def test_rate_of_a_steady_40hz_loop():
    w = RateWindow(window_s=2.0)
    for k in range(200):  # 5 s at 40 Hz; only the last 2 s count
        w.add(k * 0.025)
    now = 199 * 0.025
    assert w.rate_hz(now) == pytest.approx(40.0)
    p50, p99 = w.period_deviation_ms(now, nominal_period_s=0.025)
    assert p50 == pytest.approx(0.0, abs=1e-6) and p99 == pytest.approx(0.0, abs=1e-6)
    assert w.count == 200


def test_period_deviation_sees_jitter():
    w = RateWindow(window_s=10.0)
    t = 0.0
    rng = np.random.default_rng(0)
    for _ in range(100):
        w.add(t)
        t += 0.025 + rng.choice([-0.001, 0.001])
    p50, p99 = w.period_deviation_ms(t, nominal_period_s=0.025)
    assert p50 == pytest.approx(1.0, abs=1e-6) and p99 == pytest.approx(1.0, abs=1e-6)
    w.add(t + 0.030)  # one late period: 5 ms off nominal
    _, p99 = w.period_deviation_ms(t + 0.030, nominal_period_s=0.025)
    assert 1.0 < p99 <= 5.0


def test_rate_drops_to_zero_when_the_loop_stops():
    w = RateWindow(window_s=1.0)
    for k in range(40):
        w.add(k * 0.025)
    assert w.rate_hz(1.0) > 30
    assert w.events(1.0) == 40
    assert w.rate_hz(10.0) == 0.0 and w.events(10.0) == 0
    assert all(math.isnan(x) for x in w.period_deviation_ms(10.0))


def test_rate_window_memory_is_bounded():
    w = RateWindow(window_s=1e9, max_events=50)
    for k in range(1000):
        w.add(float(k))
    assert len(w.periods(1000.0)) == 49


def test_latency_join_by_episode_and_step():
    j = LatencyJoin(max_pending=8)
    for step in range(5):
        j.first((0, step), step * 0.025)
    assert j.second((0, 2), 2 * 0.025 + 0.004) == pytest.approx(0.004)
    assert j.second((0, 3), 3 * 0.025 + 0.006) == pytest.approx(0.006)
    assert j.second((1, 0), 1.0) is None and j.unmatched == 1
    assert j.percentile_ms(50) == pytest.approx(5.0)
    assert j.pending == 3


def test_latency_join_pending_is_bounded():
    j = LatencyJoin(max_pending=4)
    for step in range(100):  # observations that never get an action
        j.first((0, step), float(step))
    assert j.pending == 4 and j.dropped == 96
    assert j.second((0, 99), 99.5) == pytest.approx(0.5)
    assert j.second((0, 0), 100.0) is None


def test_sample_window_keeps_the_last_samples():
    s = SampleWindow(maxlen=3)
    for v in [100.0, 1.0, 2.0, 3.0]:
        s.add(v)
    assert len(s) == 3 and s.count == 4 and s.last == 3.0
    assert s.percentile(50) == 2.0


def test_read_memory_mb(tmp_path: Path):
    mem = read_memory_mb()
    assert mem["rss"] > 0 and mem["peak_rss"] >= mem["rss"] * 0.5
    f = tmp_path / "status"
    f.write_text("Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n")
    assert read_memory_mb(f) == {"rss": 1.0, "peak_rss": 2.0}
    assert read_memory_mb(tmp_path / "missing") == {}
