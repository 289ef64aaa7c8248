"""Raspberry Pi firmware probes through `vcgencmd`: throttling flags (every bit of get_throttled decoded), ARM
clock, core voltage, and the Pi 5 PMIC rail currents/voltages (`pmic_read_adc`).

The vcgencmd binary is found under the file-system root (<root>/usr/bin/vcgencmd, so tests can put a fixture
script there) or at a configured path. A missing binary, a non-zero exit, a timeout or unparsable output makes
the reading unavailable (an `error` naming the command), never an exception.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import os
import re
import shutil
import subprocess

from bitrl_ros.telemetry._files import under

# get_throttled bits (Raspberry Pi documentation, "vcgencmd get_throttled").
THROTTLE_BITS: dict[int, str] = {
    0: "under-voltage",
    1: "arm frequency capped",
    2: "throttled",
    3: "soft temperature limit",
    16: "under-voltage occurred",
    17: "arm frequency capping occurred",
    18: "throttling occurred",
    19: "soft temperature limit occurred",
}
NOW_MASK = 0xF          # bits 0-3: the condition holds now
SINCE_BOOT_MASK = 0xF0000  # bits 16-19: it has happened since boot

_CANDIDATES = ("/usr/bin/vcgencmd", "/opt/vc/bin/vcgencmd", "/usr/local/bin/vcgencmd")


def find_vcgencmd(root: str | os.PathLike = "/", path: str | None = None) -> str | None:
    """The vcgencmd to run: `path` if given, else the first executable candidate under root (on "/", also
    $PATH). None when there is none.
    """
    if path:
        return path if os.access(path, os.X_OK) else None
    for cand in _CANDIDATES:
        p = under(root, cand)
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    if str(root) == "/":
        return shutil.which("vcgencmd")
    return None


class Vcgencmd:
    """Runs vcgencmd with a short timeout; `run` returns (stdout, None) or (None, reason)."""

    def __init__(self, root: str | os.PathLike = "/", path: str | None = None, timeout_s: float = 1.0):
        self.path = find_vcgencmd(root, path)
        self.requested = path or str(under(root, _CANDIDATES[0]))
        self.timeout_s = timeout_s

    @property
    def available(self) -> bool:
        return self.path is not None

    def run(self, *args: str) -> tuple[str | None, str | None]:
        cmd = f"vcgencmd {' '.join(args)}"
        if self.path is None:
            return None, f"{cmd}: {self.requested} not found (not a Raspberry Pi, or vcgencmd not installed)"
        try:
            res = subprocess.run([self.path, *args], capture_output=True, text=True, timeout=self.timeout_s,
                                 check=False)
        except subprocess.TimeoutExpired:
            return None, f"{cmd}: timed out after {self.timeout_s:g} s"
        except OSError as exc:
            return None, f"{cmd}: {exc.strerror or exc}"
        if res.returncode != 0:
            msg = (res.stderr or res.stdout).strip().splitlines()
            hint = " (is the user in the 'video' group?)" if "permission" in " ".join(msg).lower() else ""
            return None, f"{cmd}: exit {res.returncode}{': ' + msg[0] if msg else ''}{hint}"
        return res.stdout, None


def decode_throttled(value: int) -> dict[str, bool]:
    """Every get_throttled bit -> {name: set}."""
    return {name: bool(value >> bit & 1) for bit, name in THROTTLE_BITS.items()}


def parse_throttled(text: str) -> int | None:
    """`throttled=0x50005` -> 0x50005; None when unparsable."""
    m = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", text or "")
    return int(m.group(1), 0) if m else None


@dataclass
class ThrottleReading:
    raw: int | None = None
    flags: dict[str, bool] = field(default_factory=dict)
    error: str | None = None

    @property
    def available(self) -> bool:
        return self.raw is not None

    @property
    def any_now(self) -> bool:
        return bool(self.raw and self.raw & NOW_MASK)

    @property
    def any_set(self) -> bool:
        return bool(self.raw)


def read_throttled(vc: Vcgencmd) -> ThrottleReading:
    out, err = vc.run("get_throttled")
    if err:
        return ThrottleReading(error=err)
    raw = parse_throttled(out)
    if raw is None:
        return ThrottleReading(error=f"vcgencmd get_throttled: unparsable output {out.strip()[:40]!r}")
    return ThrottleReading(raw=raw, flags=decode_throttled(raw))


@dataclass
class PiClocks:
    arm_hz: float | None = None
    core_volts: float | None = None
    error: str | None = None  # the first failure, if any


def read_clocks(vc: Vcgencmd) -> PiClocks:
    """ARM clock (`measure_clock arm` -> frequency(48)=1500398464) and core voltage (`measure_volts core` ->
    volt=0.8500V).
    """
    r = PiClocks()
    out, err = vc.run("measure_clock", "arm")
    m = re.search(r"=\s*(\d+)", out or "")
    if m:
        r.arm_hz = float(m.group(1))
    else:
        r.error = err or f"vcgencmd measure_clock arm: unparsable output {(out or '').strip()[:40]!r}"
    out, err = vc.run("measure_volts", "core")
    m = re.search(r"volt=\s*([0-9.]+)", out or "")
    if m:
        r.core_volts = float(m.group(1))
    elif r.error is None:
        r.error = err or f"vcgencmd measure_volts core: unparsable output {(out or '').strip()[:40]!r}"
    return r


_PMIC_LINE = re.compile(r"^\s*(\S+)\s+(current|volt)\(\d+\)=\s*([0-9.eE+-]+)\s*([AV])\s*$")


def parse_pmic_adc(text: str) -> dict[str, dict[str, float]]:
    """`pmic_read_adc` output -> {rail: {"A": amps, "V": volts}}; rails are paired by the name before the
    last "_" (VDD_CORE_A current + VDD_CORE_V volt -> rail VDD_CORE).
    """
    rails: dict[str, dict[str, float]] = {}
    for line in (text or "").splitlines():
        m = _PMIC_LINE.match(line)
        if not m:
            continue
        name, kind, value, _unit = m.groups()
        rail = name.rsplit("_", 1)[0] if name[-2:] in ("_A", "_V") else name
        rails.setdefault(rail, {})["A" if kind == "current" else "V"] = float(value)
    return rails


def pmic_power_w(rails: dict[str, dict[str, float]]) -> tuple[float, int]:
    """(sum over rails with both current and voltage of A x V, number of rails used)."""
    total, n = 0.0, 0
    for vals in rails.values():
        if "A" in vals and "V" in vals:
            total += vals["A"] * vals["V"]
            n += 1
    return total, n
