"""Telemetry probes against fixture trees (Pi 4, Pi 5, x86 laptop): temperature, throttle bits, clocks, PMIC,
RAPL with wraparound, INA via hwmon, the CPU-utilisation estimate (always labelled estimated), energy per
episode, and unreadable sensors giving 'unavailable' rather than exceptions.
"""
from __future__ import annotations

import math
import os

import pytest

from bitrl_ros.telemetry import (CpuUsage, decode_throttled, detect_board, EnergyMeter, EstimatedPower, InaPower,
                                 open_power_source, parse_pmic_adc, parse_throttled, pmic_power_w, PowerReading,
                                 RaplPower, read_clocks, read_thermal, read_throttled, THROTTLE_BITS, Vcgencmd)
from telemetry_fixtures import (pi4_tree, PI5_PMIC, PI5_PMIC_WATTS, pi5_tree, proc_stat, set_energy, thermal_zone,
                                vcgencmd, write, x86_tree)

NOW_BITS = {0: "under-voltage", 1: "arm frequency capped", 2: "throttled", 3: "soft temperature limit"}
BOOT_BITS = {16: "under-voltage occurred", 17: "arm frequency capping occurred", 18: "throttling occurred",
             19: "soft temperature limit occurred"}


# --- throttle bits ---
@pytest.mark.parametrize("bit,name", sorted({**NOW_BITS, **BOOT_BITS}.items()))
def test_every_throttle_bit_decodes_alone(bit, name):
    flags = decode_throttled(1 << bit)
    assert flags[name] is True
    assert [k for k, v in flags.items() if v] == [name]


def test_throttle_decoding_of_a_real_value():
    assert set(THROTTLE_BITS) == set(NOW_BITS) | set(BOOT_BITS)
    assert parse_throttled("throttled=0x50005\n") == 0x50005
    assert parse_throttled("throttled=0x0") == 0
    assert parse_throttled("garbage") is None
    flags = decode_throttled(0x50005)
    assert {k for k, v in flags.items() if v} == {"under-voltage", "throttled", "under-voltage occurred",
                                                  "throttling occurred"}
    assert decode_throttled(0) == dict.fromkeys(THROTTLE_BITS.values(), False)


# --- Pi 4 ---
def test_pi4_tree(tmp_path):
    root = pi4_tree(tmp_path)
    board = detect_board(root)
    assert board.kind == "pi4" and "Raspberry Pi 4" in board.model and board.is_pi
    th = read_thermal(root)
    assert th.cpu_c == pytest.approx(56.0) and th.zone == "cpu-thermal"
    vc = Vcgencmd(root)
    t = read_throttled(vc)
    assert t.available and t.raw == 0x50005 and t.any_now and t.flags["under-voltage occurred"]
    c = read_clocks(vc)
    assert c.arm_hz == pytest.approx(1500398464) and c.core_volts == pytest.approx(0.85) and c.error is None
    # nothing measures power on a plain Pi 4: auto picks the estimate, labelled as such
    src = open_power_source("auto", root)
    assert isinstance(src, EstimatedPower)
    r = src.read()
    assert r.available and r.source == "estimated" and r.measured is False
    assert r.watts == pytest.approx(2.7 + (6.4 - 2.7) * 0.25)  # 100 busy of 400 jiffies since boot


# --- Pi 5 ---
def test_pi5_tree_pmic(tmp_path):
    root = pi5_tree(tmp_path)
    assert detect_board(root).kind == "pi5"
    rails = parse_pmic_adc(PI5_PMIC)
    assert rails["VDD_CORE"] == {"A": pytest.approx(2.21554), "V": pytest.approx(0.874)}
    watts, n = pmic_power_w(rails)
    assert n == 3 and watts == pytest.approx(PI5_PMIC_WATTS)  # 3V7_WL_SW at 0 A counts
    src = open_power_source("auto", root)
    r = src.read(now=1.0)
    assert r.available and r.source == "measured:pmic" and r.measured
    assert r.watts == pytest.approx(PI5_PMIC_WATTS)
    assert read_throttled(Vcgencmd(root)).raw == 0
    assert read_thermal(root).cpu_c == pytest.approx(61.0)


# --- x86 laptop: RAPL ---
def test_x86_tree_rapl_and_wraparound(tmp_path):
    root = x86_tree(tmp_path, energy_uj=1_000_000, max_range_uj=10_000_000)
    board = detect_board(root)
    assert board.kind == "x86" and "LENOVO" in board.model
    th = read_thermal(root)
    assert th.cpu_c == pytest.approx(48.0) and th.zone == "x86_pkg_temp" and th.zones["acpitz"] == 40.0
    rapl = RaplPower(root)
    assert rapl.domain_names == ["package-0"]  # the core subzone is inside the package: not added
    rapl._last = (10.0, [1_000_000.0])  # pin the baseline's time for exact numbers
    set_energy(root, 6_000_000)
    r = rapl.read(now=11.0)
    assert r.available and r.measured and r.source == "measured:rapl" and r.interval_average
    assert r.watts == pytest.approx(5.0)
    set_energy(root, 1_000_000)  # wrapped at 10 J: 4 J to the top, 1 J after
    r = rapl.read(now=12.0)
    assert r.watts == pytest.approx(5.0)
    assert isinstance(open_power_source("auto", root), RaplPower)


def test_rapl_unreadable_is_unavailable(tmp_path):
    root = x86_tree(tmp_path)
    write(root / "sys/class/powercap/intel-rapl:0/energy_uj", "not a number\n")
    r = RaplPower(root).read()
    assert not r.available and "energy_uj" in r.error
    assert isinstance(open_power_source("auto", root), EstimatedPower)  # auto falls back to the estimate
    if os.geteuid() != 0:
        set_energy(root, 5)
        os.chmod(root / "sys/class/powercap/intel-rapl:0/energy_uj", 0)
        r = RaplPower(root).read()
        assert not r.available and "permission denied" in r.error and "root" in r.error


# --- INA219 via hwmon ---
def test_ina_hwmon(tmp_path):
    hw = tmp_path / "sys/class/hwmon/hwmon2"
    write(hw / "name", "ina219\n")
    write(hw / "power1_input", "3250000\n")
    src = open_power_source("auto", tmp_path, board="pi4", ina_hwmon_name="ina219")
    assert isinstance(src, InaPower)
    r = src.read()
    assert r.available and r.source == "measured:ina219" and r.watts == pytest.approx(3.25)
    os.remove(hw / "power1_input")  # drivers without power1_input: bus mV x current mA
    write(hw / "in1_input", "5000\n")
    write(hw / "curr1_input", "600\n")
    assert src.read().watts == pytest.approx(3.0)
    assert not InaPower(tmp_path, "ina260").read().available  # not present -> unavailable, no exception


# --- the estimate ---
def test_estimate_is_labelled_and_follows_utilisation(tmp_path):
    root = x86_tree(tmp_path)
    src = open_power_source("estimate", root)
    r0 = src.read()
    proc_stat(root, 100 + 400, 300)  # fully busy since the last read
    r1 = src.read()
    assert r1.watts == pytest.approx(35.0)
    proc_stat(root, 500, 300 + 400)  # idle
    assert src.read().watts == pytest.approx(8.0)
    for r in (r0, r1):
        assert r.source == "estimated" and r.measured is False and "measured" not in r.source


def test_cpu_usage(tmp_path):
    proc_stat(tmp_path, 100, 300)
    cpu = CpuUsage(tmp_path)
    assert cpu.sample() == pytest.approx(0.25)
    proc_stat(tmp_path, 150, 350)
    assert cpu.sample() == pytest.approx(0.5)
    write(tmp_path / "proc/stat", "garbage\n")
    assert cpu.sample() is None and "unparsable" in cpu.error


# --- energy per episode ---
def _r(w, t, source="measured:ina219", measured=True):
    return PowerReading(w, source, measured, t)


def test_energy_meter_integrates_per_episode():
    m = EnergyMeter()
    for t in range(5):
        m.add(_r(2.0, float(t)))
    e = m.end_episode(1)
    assert e.joules == pytest.approx(8.0) and e.duration_s == 4.0 and e.measured and e.episode == 1
    m.add(_r(4.0, 5.0))  # the next episode starts from the carried-over last reading: trapezoid 2->4 W
    e2 = m.end_episode(2)
    assert e2.joules == pytest.approx(3.0) and e2.mean_w == pytest.approx(3.0)
    assert m.mean_joules() == pytest.approx(5.5)


def test_energy_meter_never_mixes_estimated_and_measured():
    m = EnergyMeter()
    m.add(_r(3.0, 0.0))
    m.add(_r(3.0, 1.0))
    m.add(_r(20.0, 2.0, "estimated", False))  # the source switches: a new total, flagged
    m.add(_r(20.0, 3.0, "estimated", False))
    e = m.end_episode(7)
    assert e.source == "estimated" and e.measured is False and e.source_changed
    assert e.joules == pytest.approx(20.0)  # only the estimated interval, none of the measured 3 J
    assert m.mean_joules(measured_only=True) != m.mean_joules(measured_only=True)  # NaN: nothing measured


def test_energy_meter_skips_unavailable_readings():
    m = EnergyMeter()
    m.add(_r(2.0, 0.0))
    m.add(PowerReading(None, "measured:rapl", True, 1.0, error="x"))
    m.add(_r(2.0, 2.0))
    m.add(_r(2.0, 3.0))
    e = m.end_episode()
    assert e.joules == pytest.approx(2.0) and e.gaps == 1


# --- missing and unreadable sensors ---
def test_empty_root_gives_unavailable_everywhere(tmp_path):
    assert not read_thermal(tmp_path).available and "thermal_zone" in read_thermal(tmp_path).error
    vc = Vcgencmd(tmp_path)
    t = read_throttled(vc)
    assert not t.available and "vcgencmd" in t.error
    assert read_clocks(vc).arm_hz is None
    assert detect_board(tmp_path).kind == "unknown"
    for kind in ("rapl", "pmic", "ina", "estimate", "none"):
        r = open_power_source(kind, tmp_path).read()
        assert not r.available and r.error, kind
    assert CpuUsage(tmp_path).sample() is None


def test_garbage_and_unreadable_files(tmp_path):
    thermal_zone(tmp_path, 0, "cpu-thermal", "hot")
    th = read_thermal(tmp_path)
    assert not th.available and "unparsable" in th.error
    thermal_zone(tmp_path, 1, "x86_pkg_temp", 50000)  # one good zone is enough
    assert read_thermal(tmp_path).cpu_c == 50.0
    if os.geteuid() != 0:
        os.chmod(tmp_path / "sys/class/thermal/thermal_zone1/temp", 0)
        th = read_thermal(tmp_path)
        assert not th.available and "permission denied" in th.error
    # unreadable even for root: the sysfs file is a directory
    os.chmod(tmp_path / "sys/class/thermal/thermal_zone1/temp", 0o644)
    os.remove(tmp_path / "sys/class/thermal/thermal_zone1/temp")
    os.mkdir(tmp_path / "sys/class/thermal/thermal_zone1/temp")
    th = read_thermal(tmp_path)
    assert not th.available and "thermal_zone" in th.error


def test_vcgencmd_failures(tmp_path):
    vcgencmd(tmp_path, throttled="zzz")
    t = read_throttled(Vcgencmd(tmp_path))
    assert not t.available and "unparsable" in t.error
    vcgencmd(tmp_path, exit_code=1)
    t = read_throttled(Vcgencmd(tmp_path))
    assert not t.available and "exit 1" in t.error
    vcgencmd(tmp_path, sleep_s=3)
    t = read_throttled(Vcgencmd(tmp_path, timeout_s=0.2))
    assert not t.available and "timed out" in t.error
    r = open_power_source("pmic", tmp_path, timeout_s=0.2).read()  # a Pi 4-style vcgencmd without pmic_read_adc
    assert not r.available and r.error


def test_real_machine_probes_never_raise():
    # whatever this machine has: every probe answers with a value or an error
    for r in (read_thermal("/"), read_throttled(Vcgencmd("/")), open_power_source("auto", "/").read()):
        assert r.available or r.error
    r = open_power_source("auto", "/").read()
    assert r.measured == r.source.startswith("measured:")
    assert not math.isnan(r.watts) if r.available else True
