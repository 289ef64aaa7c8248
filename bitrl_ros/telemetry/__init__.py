"""Telemetry probes and window statistics, ROS-free: control-loop rate and jitter, latency, memory."""

from bitrl_ros.telemetry.loop_stats import LatencyJoin, RateWindow, SampleWindow, percentile
from bitrl_ros.telemetry.memory import read_memory_mb

__all__ = ["LatencyJoin", "RateWindow", "SampleWindow", "percentile", "read_memory_mb"]
