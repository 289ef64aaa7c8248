"""Board power, ROS-free: measured sources (INA219/INA226/INA260-class sensors through Linux hwmon, the Pi 5
PMIC through `vcgencmd pmic_read_adc`, x86 RAPL energy counters in /sys/class/powercap) and, when nothing
measures power, an estimate from system CPU utilisation and a per-board model.

Every reading says where it came from: `source` is "measured:<name>" (measured=True) or "estimated"
(measured=False, always). EnergyMeter integrates readings over time per episode and never adds measured and
estimated samples into one total.

Public API (stable; `bitrl bench edge` uses it):
    PowerReading, PowerSource, RaplPower, InaPower, PmicPower, EstimatedPower, NoPower,
    open_power_source(kind, root, board, ina_hwmon_name, vcgencmd_path) -> PowerSource
    EnergyMeter, EpisodeEnergy, POWER_SOURCES
All probes take the file-system root ("/" on a machine, a fixture tree in tests) and never raise on a missing or
unreadable sensor: the reading carries `error` (naming the file or command) and watts=None.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import glob
import math
import os
from pathlib import Path
import time

from bitrl_ros.telemetry._files import read_number, read_text, under
from bitrl_ros.telemetry.board import Board, detect_board
from bitrl_ros.telemetry.cpu import CpuUsage
from bitrl_ros.telemetry.pi import parse_pmic_adc, pmic_power_w, Vcgencmd

POWER_SOURCES = ("auto", "ina", "pmic", "rapl", "estimate", "none")
ESTIMATED = "estimated"
# hwmon driver names of TI INA current/power monitors (ina2xx: INA219/220/226/230/231, INA260 on recent
# kernels; ina238: INA237/238; ina3221: 3 channels, power not summed here).
INA_HWMON_NAMES = ("ina209", "ina219", "ina220", "ina226", "ina230", "ina231", "ina233", "ina237", "ina238",
                   "ina260")


@dataclass(frozen=True)
class PowerReading:
    watts: float | None         # None when unavailable
    source: str                 # "measured:rapl" | "measured:ina219" | "measured:pmic" | "estimated" | "none"
    measured: bool              # True only for a physical measurement; an estimate is never measured
    t: float                    # monotonic seconds of the reading
    error: str | None = None    # why there is no value (names the file/command)
    interval_average: bool = False  # watts is the mean since the previous reading (RAPL), not a sample
    detail: dict = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return self.watts is not None and math.isfinite(self.watts)


class PowerSource:
    """One way of getting board power. `read(now)` never raises."""

    name = "none"
    measured = False

    def read(self, now: float | None = None) -> PowerReading:
        raise NotImplementedError

    def _reading(self, now, watts=None, error=None, **kw) -> PowerReading:
        return PowerReading(watts, self.source, self.measured, time.monotonic() if now is None else now,
                            error, **kw)

    @property
    def source(self) -> str:
        return f"measured:{self.name}" if self.measured else self.name


class NoPower(PowerSource):
    name = "none"

    def __init__(self, reason: str = "power_source is none"):
        self.reason = reason

    def read(self, now=None):
        return self._reading(now, error=self.reason)


class RaplPower(PowerSource):
    """x86 RAPL energy counters (<root>/sys/class/powercap/intel-rapl:N/energy_uj, also used for AMD Zen by the
    kernel's powercap driver). Power is delta energy / delta time between reads, with wraparound at
    max_energy_range_uj. Uses the "psys" (whole platform) domain when present, else the sum of the packages.
    Since Linux 5.10 energy_uj is readable by root only (CVE-2020-8694): otherwise the reading says so.
    """

    name = "rapl"
    measured = True

    def __init__(self, root: str | os.PathLike = "/"):
        base = under(root, "/sys/class/powercap")
        zones = sorted(Path(p) for p in glob.glob(str(base / "intel-rapl:*")) if p.count(":") == 1)
        names = {z: (read_text(z / "name")[0] or z.name) for z in zones}
        psys = [z for z in zones if names[z].startswith("psys")]
        self.zones = psys or [z for z in zones if not names[z].startswith("psys")]
        self.domain_names = [names[z] for z in self.zones]
        self.base = base
        self._last: tuple[float, list[float]] | None = None
        self._last_watts: float | None = None
        self.init_error: str | None = None
        energies, err = self._energies()
        if err:
            self.init_error = err
        else:
            self._last = (time.monotonic(), energies)

    def _energies(self) -> tuple[list[float] | None, str | None]:
        if not self.zones:
            return None, f"{self.base}/intel-rapl:*: missing (no RAPL on this machine)"
        out = []
        for z in self.zones:
            e, err = read_number(z / "energy_uj")
            if err:
                return None, err + (" (RAPL energy needs root since Linux 5.10)" if "permission" in err else "")
            out.append(e)
        return out, None

    def _range(self, zone: Path) -> float | None:
        r, _ = read_number(zone / "max_energy_range_uj")
        return r if r and r > 0 else None

    def read(self, now=None):
        now = time.monotonic() if now is None else now
        energies, err = self._energies()
        if err:
            self._last = None
            return self._reading(now, error=err)
        if self._last is None:
            self._last = (now, energies)
            return self._reading(now, error="rapl: first sample taken, power from the next read")
        t0, e0 = self._last
        dt = now - t0
        if dt <= 1e-3:
            return self._reading(now, self._last_watts, None if self._last_watts is not None else
                                 "rapl: reads too close together", interval_average=True)
        joules = 0.0
        for z, a, b in zip(self.zones, e0, energies):
            d = b - a
            if d < 0:  # the counter wrapped
                rng = self._range(z)
                if rng is None:
                    self._last = (now, energies)
                    return self._reading(now, error=f"{z}/max_energy_range_uj: unreadable, cannot unwrap")
                d += rng
            joules += d * 1e-6
        self._last = (now, energies)
        self._last_watts = joules / dt
        return self._reading(now, self._last_watts, interval_average=True,
                             detail={"domains": ",".join(self.domain_names), "energy [J]": joules})


def find_hwmon(root: str | os.PathLike = "/", name: str = "auto") -> Path | None:
    """The hwmon directory whose `name` is `name` (or, for "auto", any INA_HWMON_NAMES); an absolute directory
    path is taken as is (inside root).
    """
    if name.startswith("/"):
        p = under(root, name)
        return p if p.is_dir() else None
    for d in sorted(glob.glob(str(under(root, "/sys/class/hwmon/hwmon*")))):
        n, _ = read_text(Path(d) / "name")
        if n and (n == name or (name == "auto" and n in INA_HWMON_NAMES)):
            return Path(d)
    return None


class InaPower(PowerSource):
    """A TI INA219/INA226/INA260-class sensor through the Linux hwmon driver: power1_input (microwatts), else
    in1_input (bus mV) x curr1_input (mA).
    """

    measured = True

    def __init__(self, root: str | os.PathLike = "/", hwmon_name: str = "auto"):
        self.root, self.hwmon_name = root, hwmon_name or "auto"
        self.path = find_hwmon(root, self.hwmon_name)
        self.name = (read_text(self.path / "name")[0] if self.path else None) or "ina"

    def read(self, now=None):
        if self.path is None:
            self.path = find_hwmon(self.root, self.hwmon_name)  # the driver may bind after start-up
            if self.path is None:
                return self._reading(now, error=f"{under(self.root, '/sys/class/hwmon')}: no hwmon named "
                                     f"{self.hwmon_name!r} (enable the INA overlay, see README)")
        uw, err = read_number(self.path / "power1_input")
        if err is None:
            return self._reading(now, uw * 1e-6, detail={"hwmon": str(self.path)})
        mv, err_v = read_number(self.path / "in1_input")
        ma, err_c = read_number(self.path / "curr1_input")
        if err_v or err_c:
            return self._reading(now, error=f"{err}; {err_v or err_c}")
        return self._reading(now, mv * ma * 1e-6, detail={"hwmon": str(self.path), "bus [V]": mv / 1e3,
                                                          "current [A]": ma / 1e3})


class PmicPower(PowerSource):
    """Raspberry Pi 5 PMIC: sum over rails of current x voltage from `vcgencmd pmic_read_adc`. Covers the
    SoC/board rails the PMIC sees, not USB peripherals.
    """

    name = "pmic"
    measured = True

    def __init__(self, root: str | os.PathLike = "/", vcgencmd_path: str | None = None, timeout_s: float = 1.0):
        self.vc = Vcgencmd(root, vcgencmd_path, timeout_s)

    def read(self, now=None):
        out, err = self.vc.run("pmic_read_adc")
        if err:
            return self._reading(now, error=err)
        watts, rails = pmic_power_w(parse_pmic_adc(out))
        if rails == 0:
            return self._reading(now, error="vcgencmd pmic_read_adc: no rail with both current and voltage "
                                 "(not a Pi 5?)")
        return self._reading(now, watts, detail={"rails": rails})


class EstimatedPower(PowerSource):
    """NOT a measurement: board model idle_w + (max_w - idle_w) x system CPU utilisation. The model numbers are
    rough assumptions (bitrl_ros.telemetry.board.POWER_MODELS). source is always "estimated".
    """

    name = ESTIMATED
    measured = False

    def __init__(self, board: Board, root: str | os.PathLike = "/"):
        self.board = board
        self.cpu = CpuUsage(root)

    def read(self, now=None):
        u = self.cpu.sample()
        if u is None:
            return self._reading(now, error=self.cpu.error)
        return self._reading(now, self.board.power_model.watts(u),
                             detail={"board": self.board.kind, "cpu utilisation": u,
                                     "model idle [W]": self.board.power_model.idle_w,
                                     "model max [W]": self.board.power_model.max_w})


def open_power_source(kind: str = "auto", root: str | os.PathLike = "/", board: str | Board = "auto",
                      ina_hwmon_name: str = "", vcgencmd_path: str | None = None,
                      timeout_s: float = 1.0) -> PowerSource:
    """The power source for `kind` (POWER_SOURCES). "auto" tries, in order, an INA sensor (only when
    ina_hwmon_name is configured), the Pi 5 PMIC, RAPL, and falls back to the CPU-utilisation estimate. An
    explicit kind is returned even if it cannot read now (its readings then carry the error).
    """
    if kind not in POWER_SOURCES:
        raise ValueError(f"power source must be {' | '.join(POWER_SOURCES)}, got {kind!r}")
    b = board if isinstance(board, Board) else detect_board(root, board)
    if kind == "none":
        return NoPower()
    if kind == "ina":
        return InaPower(root, ina_hwmon_name or "auto")
    if kind == "pmic":
        return PmicPower(root, vcgencmd_path, timeout_s)
    if kind == "rapl":
        return RaplPower(root)
    if kind == "estimate":
        return EstimatedPower(b, root)
    if ina_hwmon_name:
        ina = InaPower(root, ina_hwmon_name)
        if ina.read().available:
            return ina
    if b.kind in ("pi5", "unknown"):
        pmic = PmicPower(root, vcgencmd_path, timeout_s)
        if pmic.vc.available and pmic.read().available:
            return pmic
    if b.kind in ("x86", "unknown"):
        rapl = RaplPower(root)
        if rapl.init_error is None:
            return rapl
    return EstimatedPower(b, root)


@dataclass
class EpisodeEnergy:
    """Energy integrated over one episode (or the part of it after a source switch)."""

    joules: float = 0.0
    duration_s: float = 0.0   # time covered by integrated intervals
    source: str | None = None
    measured: bool = False
    samples: int = 0
    gaps: int = 0             # intervals skipped (an unavailable reading or a gap over max_gap_s)
    source_changed: bool = False  # the source switched during the episode: this total covers only its tail
    episode: object = None

    @property
    def mean_w(self) -> float:
        return self.joules / self.duration_s if self.duration_s > 0 else float("nan")


class EnergyMeter:
    """Integrates PowerReadings over time, one total per episode. Samples are trapezoid-integrated (interval
    averages, e.g. RAPL, as mean x dt). A reading from another source than the running total's (measured vs
    estimated, or another sensor) never joins it: the running total restarts with the new source and is
    flagged source_changed.
    """

    def __init__(self, max_gap_s: float = 10.0, keep: int = 100):
        self.max_gap_s = max_gap_s
        self.keep = keep
        self.current = EpisodeEnergy()
        self.episodes: list[EpisodeEnergy] = []
        self._prev: PowerReading | None = None

    def add(self, r: PowerReading) -> None:
        if not r.available:
            if self._prev is not None:
                self.current.gaps += 1
            self._prev = None
            return
        cur = self.current
        if cur.source is not None and r.source != cur.source:
            self.current = cur = EpisodeEnergy(source_changed=True, episode=cur.episode)
            self._prev = None
        if cur.source is None:
            cur.source, cur.measured = r.source, r.measured
        cur.samples += 1
        p = self._prev
        self._prev = r
        if p is None:
            return
        dt = r.t - p.t
        if dt <= 0:
            return
        if dt > self.max_gap_s:
            cur.gaps += 1
            return
        cur.joules += (r.watts if r.interval_average else 0.5 * (p.watts + r.watts)) * dt
        cur.duration_s += dt

    def end_episode(self, episode=None) -> EpisodeEnergy:
        """Close the running total (it belongs to `episode` if given) and start the next one; the last reading
        carries over as the start of the next episode's first interval.
        """
        done = self.current
        if episode is not None:
            done.episode = episode
        self.episodes.append(done)
        del self.episodes[:-self.keep]
        self.current = EpisodeEnergy()
        if self._prev is not None:
            self.current.source, self.current.measured = self._prev.source, self._prev.measured
        return done

    @property
    def last_episode(self) -> EpisodeEnergy | None:
        return self.episodes[-1] if self.episodes else None

    def mean_joules(self, measured_only: bool = False) -> float:
        """Mean energy of the kept complete episodes of the newest episode's source (never mixing sources)."""
        last = self.last_episode
        if last is None:
            return float("nan")
        same = [e for e in self.episodes if e.source == last.source and not e.source_changed
                and (e.measured or not measured_only)]
        return sum(e.joules for e in same) / len(same) if same else float("nan")
