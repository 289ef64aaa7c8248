"""Helpers for tests that run one node on real DDS (localhost): every node in its own rclpy Context, spun by its
own executor in a background thread; bounded waits.
"""
from __future__ import annotations

import time
import uuid

from bitrl_ros.nodes.base import InProcessGraph  # noqa: F401  (re-exported for the tests)

WAIT_S = 15.0


def unique_ns(prefix: str) -> str:
    return f"t_{prefix}_{uuid.uuid4().hex[:8]}"


def wait_for(cond, timeout: float = WAIT_S, poll: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(poll)
    return bool(cond())
