"""System CPU utilisation from /proc/stat deltas, and this process's CPU time."""
from __future__ import annotations

import os

from bitrl_ros.telemetry._files import read_text, under


def read_cpu_times(root: str | os.PathLike = "/") -> tuple[tuple[float, float] | None, str | None]:
    """((busy, total) jiffies summed over all CPUs, None) from the first line of <root>/proc/stat, or
    (None, reason).
    """
    path = under(root, "/proc/stat")
    text, err = read_text(path)
    if err:
        return None, err
    first = text.splitlines()[0].split() if text else []
    try:
        if not first or first[0] != "cpu":
            raise ValueError
        fields = [float(x) for x in first[1:]]
        if len(fields) < 4:
            raise ValueError
    except ValueError:
        return None, f"{path}: unparsable first line {text[:40]!r}"
    # user nice system idle iowait irq softirq steal [guest guest_nice: already counted in user/nice]
    fields = fields[:8]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    total = sum(fields)
    return (total - idle, total), None


class CpuUsage:
    """System-wide CPU utilisation (0..1) between consecutive `sample()` calls. The first call reports the
    average since boot, so a value is available at once.
    """

    def __init__(self, root: str | os.PathLike = "/"):
        self.root = root
        self._last: tuple[float, float] | None = None
        self.utilisation: float | None = None  # the newest value
        self.error: str | None = None

    def sample(self) -> float | None:
        times, err = read_cpu_times(self.root)
        self.error = err
        if times is None:
            self.utilisation = None
            return None
        busy, total = times
        if self._last is not None and total > self._last[1]:
            u = (busy - self._last[0]) / (total - self._last[1])
        elif total > 0:
            u = busy / total
        else:
            u = 0.0
        self._last = times
        self.utilisation = min(max(u, 0.0), 1.0)
        return self.utilisation


def process_cpu_seconds() -> float:
    """User + system CPU time of this process, seconds (divide deltas by wall time for a process %)."""
    t = os.times()
    return t.user + t.system
