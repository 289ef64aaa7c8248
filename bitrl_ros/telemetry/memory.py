"""Process memory from /proc/self/status (Linux): resident set size now and at its peak."""
from __future__ import annotations

from pathlib import Path

_STATUS = Path("/proc/self/status")


def read_memory_mb(status_path: Path = _STATUS) -> dict[str, float]:
    """{"rss": VmRSS, "peak_rss": VmHWM} in MB (1 MB = 2**20 bytes); an empty dict where /proc is missing."""
    try:
        text = status_path.read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            kb = float(rest.split()[0])  # the kernel always reports these in kB
            out["rss" if key == "VmRSS" else "peak_rss"] = kb / 1024.0
    return out
