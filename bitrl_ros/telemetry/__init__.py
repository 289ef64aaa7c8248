"""Telemetry probes and window statistics, ROS-free: control-loop rate and jitter, latency, memory, CPU
utilisation, temperature, Raspberry Pi throttling/clock/voltage, and power (measured or estimated) with
per-episode energy. Probes take the file-system root so tests point them at fixture trees.
"""

from bitrl_ros.telemetry.board import Board, BOARDS, detect_board, POWER_MODELS, PowerModel
from bitrl_ros.telemetry.cpu import CpuUsage, process_cpu_seconds, read_cpu_times
from bitrl_ros.telemetry.loop_stats import LatencyJoin, percentile, RateWindow, SampleWindow
from bitrl_ros.telemetry.memory import read_memory_mb
from bitrl_ros.telemetry.pi import (decode_throttled, parse_pmic_adc, parse_throttled, PiClocks, pmic_power_w,
                                    read_clocks, read_throttled, THROTTLE_BITS, ThrottleReading, Vcgencmd)
from bitrl_ros.telemetry.power import (EnergyMeter, EpisodeEnergy, ESTIMATED, EstimatedPower, InaPower, NoPower,
                                       open_power_source, PmicPower, POWER_SOURCES, PowerReading, PowerSource,
                                       RaplPower)
from bitrl_ros.telemetry.thermal import read_thermal, ThermalReading

__all__ = [
    "BOARDS", "POWER_MODELS", "Board", "PowerModel", "detect_board",
    "CpuUsage", "process_cpu_seconds", "read_cpu_times",
    "LatencyJoin", "RateWindow", "SampleWindow", "percentile", "read_memory_mb",
    "THROTTLE_BITS", "PiClocks", "ThrottleReading", "Vcgencmd", "decode_throttled", "parse_pmic_adc",
    "parse_throttled", "pmic_power_w", "read_clocks", "read_throttled",
    "ESTIMATED", "POWER_SOURCES", "EnergyMeter", "EpisodeEnergy", "EstimatedPower", "InaPower", "NoPower",
    "PmicPower", "PowerReading", "PowerSource", "RaplPower", "open_power_source",
    "ThermalReading", "read_thermal",
]
