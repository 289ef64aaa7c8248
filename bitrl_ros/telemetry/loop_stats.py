"""Sliding-window statistics of a control loop, ROS-free: achieved rate, period deviation, percentiles, and
observation->action latency joined by (episode, step) with bounded memory.

Times are plain float seconds from one monotonic clock chosen by the caller (the diagnostics node passes
time.monotonic()); nothing here reads a clock itself, so tests drive it with synthetic times.
"""
from __future__ import annotations

from collections import deque, OrderedDict
from typing import Hashable

import numpy as np


def percentile(values, q: float) -> float:
    """The q-th percentile of values (0-100, linear interpolation); NaN for no values."""
    if len(values) == 0:
        return float("nan")
    return float(np.percentile(np.fromiter(values, dtype=np.float64, count=len(values)), q))


class SampleWindow:
    """The last `maxlen` samples of a quantity (e.g. encode_ms) with percentiles over them."""

    def __init__(self, maxlen: int = 1000):
        self._samples: deque[float] = deque(maxlen=maxlen)
        self.count = 0  # samples ever added
        self.last: float = float("nan")

    def add(self, value: float) -> None:
        self._samples.append(float(value))
        self.count += 1
        self.last = float(value)

    def __len__(self) -> int:
        return len(self._samples)

    def percentile(self, q: float) -> float:
        return percentile(self._samples, q)

    def values(self) -> list[float]:
        return list(self._samples)


class RateWindow:
    """Event times within the last `window_s` seconds (at most `max_events`): achieved rate and the deviation
    of the periods between events from the nominal period.
    """

    def __init__(self, window_s: float = 5.0, max_events: int = 10_000):
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = window_s
        self._times: deque[float] = deque(maxlen=max_events)
        self.count = 0  # events ever seen
        self.last_time: float | None = None

    def add(self, t: float) -> None:
        self._times.append(t)
        self.count += 1
        self.last_time = t

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()

    def events(self, now: float) -> int:
        """Number of events in the window ending at now."""
        self._trim(now)
        return len(self._times)

    def periods(self, now: float) -> np.ndarray:
        """Intervals between consecutive events in the window, seconds."""
        self._trim(now)
        if len(self._times) < 2:
            return np.empty(0)
        return np.diff(np.fromiter(self._times, dtype=np.float64, count=len(self._times)))

    def rate_hz(self, now: float) -> float:
        """Events per second over the window: (n - 1) intervals over the span they cover; 0 with < 2 events.
        A loop that has stopped reads 0 once its last event leaves the window.
        """
        self._trim(now)
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0

    def period_deviation_ms(self, now: float, nominal_period_s: float | None = None) -> tuple[float, float]:
        """(p50, p99) of |period - nominal| in ms; nominal defaults to the median period of the window
        (jitter around whatever rate the loop runs at). NaN, NaN with < 2 events.
        """
        p = self.periods(now)
        if p.size == 0:
            return float("nan"), float("nan")
        nominal = float(np.median(p)) if nominal_period_s is None else nominal_period_s
        dev = np.abs(p - nominal) * 1e3
        return float(np.percentile(dev, 50)), float(np.percentile(dev, 99))


class LatencyJoin:
    """Latency from a first event (observation k) to a second (action k), joined by a key such as
    (episode, step). Pending first events are bounded (`max_pending`, oldest dropped and counted), so keys that
    never get a second event (invalid observations, drops) cannot grow memory.
    """

    def __init__(self, max_pending: int = 1024, window: int = 1000):
        self._pending: OrderedDict[Hashable, float] = OrderedDict()
        self.max_pending = max_pending
        self.latency_s = SampleWindow(window)
        self.dropped = 0    # first events evicted before their second event came
        self.unmatched = 0  # second events with no pending first event

    def first(self, key: Hashable, t: float) -> None:
        if key in self._pending:  # a repeated key (e.g. a re-published observation) keeps its first time
            return
        self._pending[key] = t
        if len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)
            self.dropped += 1

    def second(self, key: Hashable, t: float) -> float | None:
        """Record the second event; returns the latency in seconds, or None when the key was not pending."""
        t0 = self._pending.pop(key, None)
        if t0 is None:
            self.unmatched += 1
            return None
        self.latency_s.add(t - t0)
        return t - t0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def percentile_ms(self, q: float) -> float:
        return self.latency_s.percentile(q) * 1e3
