"""Message <-> numpy helpers shared by the nodes: the only place that knows how bitrl_msgs map to arrays.

Small and stable on purpose; every node imports from here instead of poking at message fields itself.
"""
from __future__ import annotations

import array

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
import numpy as np

# diagnostic_updater level constants (DiagnosticStatus.level is a byte).
# Plain ints here; rclpy's own constants are 1-byte `bytes` (DiagnosticStatus.OK == b"\x00").
OK, WARN, ERROR, STALE = 0, 1, 2, 3
LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR", STALE: "STALE"}


def observation_to_array(msg) -> np.ndarray:
    """Observation.values -> 1-D float64 array (a copy; not validated: pass it to validate_observation)."""
    return np.asarray(msg.values, dtype=np.float64).reshape(-1)


def to_float32_list(values) -> array.array:
    """A float32 sequence for a float32[] message field (array('f') is the type rclpy stores there; assigning
    it skips rclpy's per-element checks).
    """
    if isinstance(values, np.ndarray):
        return array.array("f", np.ascontiguousarray(values, dtype=np.float32).reshape(-1).tobytes())
    return array.array("f", values)


def to_int32_list(values) -> array.array:
    """An int32 sequence for an int32[] message field."""
    if isinstance(values, np.ndarray):
        return array.array("i", np.ascontiguousarray(values, dtype=np.int32).reshape(-1).tobytes())
    return array.array("i", values)


def copy_header(src, dst):
    """Copy header (stamp, frame_id), episode and step from one pipeline message to the next; returns dst."""
    dst.header.stamp = src.header.stamp
    dst.header.frame_id = src.header.frame_id
    dst.episode = src.episode
    dst.step = src.step
    return dst


def make_status(name: str, level: int, message: str, hardware_id: str, values: dict) -> DiagnosticStatus:
    """A DiagnosticStatus as diagnostic_updater builds them: name "<node>: <component>", level OK/WARN/ERROR/
    STALE (int 0-3), values as KeyValue strings (units go in the key, e.g. "rate [Hz]"; floats with up to 6
    significant digits, bools as true/false).
    """
    status = DiagnosticStatus()
    status.level = bytes([int(level)])
    status.name = name
    status.message = message
    status.hardware_id = hardware_id
    status.values = [KeyValue(key=str(k), value=_fmt(v)) for k, v in values.items()]
    return status


def status_level(status: DiagnosticStatus) -> int:
    """DiagnosticStatus.level as an int (rclpy stores the byte field as bytes)."""
    lv = status.level
    return lv[0] if isinstance(lv, (bytes, bytearray)) else int(lv)


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.6g}"
    return str(v)
