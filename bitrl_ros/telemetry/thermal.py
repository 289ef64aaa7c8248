"""CPU temperature from the Linux thermal framework (<root>/sys/class/thermal/thermal_zone*/{type,temp}, temp
in millidegrees C). The CPU zone is the first whose type names a CPU/SoC sensor (cpu-thermal on a Pi,
x86_pkg_temp / coretemp / k10temp-style on x86), else the hottest zone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import glob
import os
from pathlib import Path

from bitrl_ros.telemetry._files import read_number, read_text, under

CPU_ZONE_TYPES = ("cpu-thermal", "cpu_thermal", "x86_pkg_temp", "soc-thermal", "soc_thermal", "cpu", "tcpu",
                  "k10temp", "coretemp", "acpitz")


@dataclass
class ThermalReading:
    cpu_c: float | None = None
    zone: str | None = None                      # type of the zone cpu_c came from
    zones: dict[str, float] = field(default_factory=dict)  # zone type (or dir name) -> C
    error: str | None = None                     # set when cpu_c is None

    @property
    def available(self) -> bool:
        return self.cpu_c is not None


def read_thermal(root: str | os.PathLike = "/") -> ThermalReading:
    base = under(root, "/sys/class/thermal")
    dirs = sorted(glob.glob(str(base / "thermal_zone*")), key=lambda p: (len(p), p))
    if not dirs:
        return ThermalReading(error=f"{base}/thermal_zone*: missing (no thermal zones exposed)")
    zones: dict[str, float] = {}
    errors = []
    for d in map(Path, dirs):
        kind = read_text(d / "type")[0] or d.name
        milli, err = read_number(d / "temp")
        if err:
            errors.append(err)
            continue
        zones[kind if kind not in zones else f"{kind} ({d.name})"] = milli / 1000.0
    if not zones:
        return ThermalReading(error="; ".join(errors[:2]))
    for t in CPU_ZONE_TYPES:
        for name, c in zones.items():
            if name.lower().startswith(t):
                return ThermalReading(c, name, zones)
    name = max(zones, key=zones.get)
    return ThermalReading(zones[name], name, zones)
