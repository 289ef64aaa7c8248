"""Helpers for tests that run one node on real DDS (localhost): every node in its own rclpy Context, spun by its
own executor in a background thread; bounded waits."""
from __future__ import annotations

import threading
import time
import uuid

import rclpy
from rclpy.executors import SingleThreadedExecutor

WAIT_S = 15.0


def unique_ns(prefix: str) -> str:
    return f"t_{prefix}_{uuid.uuid4().hex[:8]}"


class Spinner:
    """build(ctx) -> Node, spun in a background thread until close()."""

    def __init__(self, build):
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        try:
            self.node = build(self.ctx)
        except BaseException:
            rclpy.shutdown(context=self.ctx)
            raise
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        while not self._stop.is_set() and self.ctx.ok():
            self.executor.spin_once(timeout_sec=0.02)

    def close(self):
        self._stop.set()
        self.thread.join(5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


def wait_for(cond, timeout: float = WAIT_S, poll: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(poll)
    return bool(cond())
