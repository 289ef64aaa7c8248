"""What every bitrl node shares: parameters declared from the ROS-free schemas, QoS profiles, stamps."""
from __future__ import annotations

import threading

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from bitrl_ros.errors import ConfigError
from bitrl_ros.params import SCHEMAS, ParamSpec, validate_params

# Pipeline topics (observation -> serialized_state -> encoded_state -> action): reliable, so lockstep never
# loses a step on the way; a short queue, because every stage works on the newest message and a stale backlog
# is worth nothing to a 40 Hz controller.
PIPELINE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE)
# Training statistics: reliable, a few kept for late-joining subscribers (e.g. a recorder).
STATS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL)
# /diagnostics as diagnostic_updater publishes it.
DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
# /clock as rclpy's TimeSource subscribes to it (best effort, newest only).
CLOCK_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)


def _descriptor(spec: ParamSpec) -> ParameterDescriptor:
    d = ParameterDescriptor(description=spec.description, read_only=True, dynamic_typing=True)
    if spec.choices:
        d.additional_constraints = "one of: " + ", ".join(str(c) for c in spec.choices)
    elif spec.kind is int and (spec.low is not None and spec.high is not None):
        d.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=1)]
    elif spec.kind is float and (spec.low is not None and spec.high is not None):
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high),
                                                     step=0.0)]
    return d


def declare_parameters(node: Node, schema: str) -> dict:
    """Declare the schema's parameters on the node (descriptor with description and range) and return their
    validated values; an invalid value raises ConfigError naming the parameter, the value and the range."""
    values = {}
    try:
        for spec in SCHEMAS[schema]:
            # dynamic_typing lets an integer YAML value reach a float parameter; the schema check converts it.
            try:
                values[spec.name] = node.declare_parameter(spec.name, spec.default, _descriptor(spec)).value
            except (InvalidParameterValueException, InvalidParameterTypeException):
                override = node._parameter_overrides.get(spec.name)  # rclpy refused it against the range
                spec.check(override.value if override is not None else None, node.get_name())
                raise
        return validate_params(schema, values)
    except ConfigError as exc:
        node.get_logger().fatal(str(exc))
        raise


def spin_node(node_class, args=None, done=None) -> int:
    """The body of a node's `ros2 run` entry point: build, spin until Ctrl-C or shutdown (or until ``done(node)``
    is true, if given), clean up.

    A configuration or model error ends the process with exit code 2 and one line on stderr, no traceback.
    A node with a `shutdown()` method (e.g. policy_value, waiting for a running update) gets it called first.
    """
    import sys

    from rclpy.executors import ExternalShutdownException

    from bitrl_ros.errors import BitrlError

    rclpy.init(args=args)
    node = None
    try:
        node = node_class()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if done is None:
            executor.spin()
        else:
            while rclpy.ok() and not done(node):
                executor.spin_once(timeout_sec=0.1)
    except BitrlError as exc:
        print(f"error: {exc}", file=sys.stderr)  # the messages already name the node and parameter
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            if hasattr(node, "shutdown"):
                node.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


class Spinner:
    """A node in its own rclpy Context, spun by its own executor thread in this process until close().

    ``build(context) -> Node``. Used by tests and benchmarks that run several nodes side by side."""

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
