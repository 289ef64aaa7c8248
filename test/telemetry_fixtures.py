"""Fixture file-system trees for the telemetry probes: a Raspberry Pi 4, a Pi 5 and an x86 laptop, built under a
tmp dir. vcgencmd is a shell script answering the commands the probes send.
"""
from __future__ import annotations

import os
from pathlib import Path

PI5_PMIC = """\
     3V7_WL_SW_A current(0)=0.00000000A
   3V3_SYS_A current(1)=0.05270000A
   VDD_CORE_A current(7)=2.21554000A
   EXT5V_V volt(24)=5.15036000V
   3V7_WL_SW_V volt(8)=3.71508000V
   3V3_SYS_V volt(9)=3.31008000V
   VDD_CORE_V volt(15)=0.87400000V
"""
PI5_PMIC_WATTS = 0.0527 * 3.31008 + 2.21554 * 0.874  # rails with both A and V


def write(path: Path, text: str, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mode is not None:
        os.chmod(path, mode)
    return path


def proc_stat(root: Path, busy: int, idle: int) -> None:
    """/proc/stat whose cpu line has `busy` user jiffies and `idle` idle jiffies."""
    write(root / "proc/stat", f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 {busy} 0 0 {idle} 0 0 0 0 0 0\n")


def thermal_zone(root: Path, n: int, kind: str, millic: int | str) -> None:
    write(root / f"sys/class/thermal/thermal_zone{n}/type", kind + "\n")
    write(root / f"sys/class/thermal/thermal_zone{n}/temp", f"{millic}\n")


def vcgencmd(root: Path, throttled: str = "0x50005", pmic: str | None = None, exit_code: int = 0,
             sleep_s: float = 0.0) -> Path:
    pmic_case = f"  pmic_read_adc) printf '%s' '{pmic}' ;;\n" if pmic is not None else ""
    script = f"""#!/bin/sh
{f'sleep {sleep_s}' if sleep_s else ''}
[ {exit_code} -ne 0 ] && {{ echo "VCHI initialization failed" >&2; exit {exit_code}; }}
case "$1" in
  get_throttled) echo "throttled={throttled}" ;;
  measure_clock) echo "frequency(48)=1500398464" ;;
  measure_volts) echo "volt=0.8500V" ;;
{pmic_case}  *) echo "error=1 error_msg=\\"Command not registered\\"" ; exit 255 ;;
esac
"""
    return write(root / "usr/bin/vcgencmd", script, 0o755)


def pi4_tree(root: Path, temp_millic: int = 56000, throttled: str = "0x50005") -> Path:
    write(root / "proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.4\x00")
    thermal_zone(root, 0, "cpu-thermal", temp_millic)
    vcgencmd(root, throttled)
    proc_stat(root, 100, 300)
    return root


def pi5_tree(root: Path, temp_millic: int = 61000) -> Path:
    write(root / "proc/device-tree/model", "Raspberry Pi 5 Model B Rev 1.0\x00")
    thermal_zone(root, 0, "cpu-thermal", temp_millic)
    vcgencmd(root, "0x0", pmic=PI5_PMIC)
    proc_stat(root, 100, 300)
    return root


def x86_tree(root: Path, temp_millic: int = 48000, energy_uj: int = 1_000_000,
             max_range_uj: int = 262143328850) -> Path:
    write(root / "sys/class/dmi/id/sys_vendor", "LENOVO\n")
    write(root / "sys/class/dmi/id/product_name", "20XW\n")
    thermal_zone(root, 0, "acpitz", 40000)
    thermal_zone(root, 1, "x86_pkg_temp", temp_millic)
    rapl = root / "sys/class/powercap/intel-rapl:0"
    write(rapl / "name", "package-0\n")
    write(rapl / "energy_uj", f"{energy_uj}\n")
    write(rapl / "max_energy_range_uj", f"{max_range_uj}\n")
    write(root / "sys/class/powercap/intel-rapl:0:0/name", "core\n")  # a subzone: must not be double counted
    write(root / "sys/class/powercap/intel-rapl:0:0/energy_uj", "5\n")
    proc_stat(root, 100, 300)
    return root


def set_energy(root: Path, energy_uj: int) -> None:
    write(root / "sys/class/powercap/intel-rapl:0/energy_uj", f"{energy_uj}\n")
