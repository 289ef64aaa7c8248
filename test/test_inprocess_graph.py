"""InProcessGraph: the one way nodes run inside this process (bitrl run, bitrl replay, tests, benchmarks)."""
import threading
import time

import pytest
from rclpy.node import Node

from bitrl_ros.nodes.base import InProcessGraph


class Ticker(Node):
    def __init__(self, context, fail_after=None):
        super().__init__("ticker", context=context, namespace="t_inproc")
        self.ticks = 0
        self.fail_after = fail_after
        self.shut_down = threading.Event()
        self.create_timer(0.005, self._tick)

    def _tick(self):
        self.ticks += 1
        if self.fail_after is not None and self.ticks >= self.fail_after:
            raise ValueError("a callback failed")

    def shutdown(self):
        self.shut_down.set()


def _wait(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not pred():
        time.sleep(0.01)
    return pred()


@pytest.mark.parametrize("executor", ["single", "events", "multi"])
def test_graph_spins_its_nodes_and_tears_everything_down(executor):
    graph = InProcessGraph(lambda ctx: {"a": Ticker(ctx), "b": Node("other", context=ctx, namespace="t_inproc")},
                           executor)
    ticker = graph.nodes["a"]
    assert _wait(lambda: ticker.ticks >= 5) and graph.spinning
    graph.close()
    assert not graph.spinning and not graph.ctx.ok() and ticker.shut_down.is_set()
    graph.close()  # idempotent


def test_a_failed_build_shuts_its_context_down():
    contexts = []

    def build(ctx):
        contexts.append(ctx)
        raise RuntimeError("no model")

    with pytest.raises(RuntimeError, match="no model"):
        InProcessGraph(build)
    assert contexts and not contexts[0].ok()


def test_a_callback_error_stops_the_graph_and_reaches_its_owner():
    with InProcessGraph(lambda ctx: Ticker(ctx, fail_after=3)) as graph:
        assert _wait(lambda: not graph.spinning)
        with pytest.raises(ValueError, match="a callback failed"):
            graph.stop_spinning()
    assert not graph.ctx.ok()
