"""What every bitrl node shares: parameters declared from the ROS-free schemas, QoS profiles, stamps."""
from __future__ import annotations

import os
import sys
import threading

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
import rclpy
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from bitrl_ros.errors import ConfigError
from bitrl_ros.params import SCHEMAS, validate_params
from bitrl_ros.settings import EXECUTORS, Setting


def torch_on_one_thread() -> None:
    """Run torch on one thread in this process, whenever it imports it (the heads with update_worker thread or inline,
    a torch-engine encoder inside `bitrl run`): acting is a batch of one, and torch's second OpenMP thread would
    spin-wait on the core the rest of the pipeline needs (measured: policy_value at 94% CPU, lockstep at 111
    steps/s). Through OMP_NUM_THREADS, which torch reads when it is imported, so that a process that needs no torch
    (update_worker: process, the native encoder) is not made to import it; the update process sets its own count.
    """
    os.environ["OMP_NUM_THREADS"] = "1"
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


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


def _descriptor(spec: Setting) -> ParameterDescriptor:
    d = ParameterDescriptor(description=spec.description, read_only=True, dynamic_typing=True)
    if spec.choices:
        d.additional_constraints = "one of: " + ", ".join(str(c) for c in spec.choices)
    elif spec.type is int and (spec.low is not None and spec.high is not None):
        d.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=1)]
    elif spec.type is float and (spec.low is not None and spec.high is not None):
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high),
                                                     step=0.0)]
    return d


def declare_parameters(node: Node, schema: str) -> dict:
    """Declare the schema's parameters on the node (descriptor with description and range) and return their
    validated values; an invalid value raises ConfigError naming the parameter, the value and the range.
    """
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
    SIGINT and SIGTERM end it with exit code 0 after the same clean-up. A node with a `shutdown()` method (e.g.
    policy_value, waiting for a running update) gets it called first.
    """
    return spin_nodes([node_class], args, None if done is None else (lambda nodes: done(nodes[0])))


def spin_nodes(builders, args=None, done=None) -> int:
    """spin_node for several nodes in one process (nodes/agent.py): built in order with the process's ROS
    arguments (each takes its own section of the parameter files), spun by one executor, shut down in reverse
    order; done(nodes) as spin_node's done.
    """
    import sys

    from rclpy.executors import ExternalShutdownException
    from rclpy.signals import SignalHandlerOptions

    from bitrl_ros.errors import BitrlError
    from bitrl_ros.interrupt import stop_on_signals
    from bitrl_ros.memory import limit_malloc_arenas

    limit_malloc_arenas()  # before rclpy starts the DDS threads
    # Our handlers, not rclpy's: rclpy's SIGTERM handler leaves a spinning executor waiting for good.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = stop_on_signals()
    nodes = []
    try:
        executor = make_executor("events", None, len(builders), None)  # no wait set rebuilt per callback
        for build in builders:
            nodes.append(build())
            executor.add_node(nodes[-1])
        # spin_once with a timeout, not spin(): the loop sees a signal's stop within 0.1 s.
        while rclpy.ok() and not stop.is_set() and (done is None or not done(nodes)):
            executor.spin_once(timeout_sec=0.1)
    except BitrlError as exc:
        print(f"error: {exc}", file=sys.stderr)  # the messages already name the node and parameter
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        for node in reversed(nodes):
            if hasattr(node, "shutdown"):
                node.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def make_executor(kind: str, threads: int | None, num_nodes: int, context):
    """The executor a graph's nodes share.

    events (`bitrl run`'s default): rclpy's EventsExecutor dispatches callbacks from a C++ event queue without
    rebuilding a wait set per callback. Measured on the 2-core dev machine under load
    (bench/results/ros_graph*.json), it held the 40 Hz loop (40.0 Hz, period deviation p50 0.3 ms) where the
    MultiThreadedExecutor fell to 15-38 Hz, and it stepped lockstep ~1.5x faster. One thread is enough because
    every callback is short and PPO updates run in policy_value's update process (or thread), never in a callback.
    A node's own process (spin_node) uses it too: with the SingleThreadedExecutor, lockstep under `ros2 launch`
    ran at 76 steps/s against 111 (bench/lockstep_processes.py, before the other fixes of that commit).
    multi: MultiThreadedExecutor. Callbacks are Python and hold the GIL, so threads beyond the core count only
    add contention (5 threads measured worse than 2 here); two or more let an encoder forward, which releases
    the GIL inside torch, overlap the bridge's and the policy's timer callbacks. Each node's callbacks stay in
    its default mutually exclusive group, so more threads than nodes could never be used.
    single: SingleThreadedExecutor (tests and benchmarks that run one node per graph).
    """
    import os

    from rclpy.executors import MultiThreadedExecutor

    if kind == "events":
        from rclpy.experimental import EventsExecutor
        return EventsExecutor(context=context)
    if kind == "single":
        return SingleThreadedExecutor(context=context)
    if kind != "multi":
        raise ConfigError(f"executor {kind!r} (allowed: {' | '.join(EXECUTORS)})")
    threads = threads or min(num_nodes, max(2, os.cpu_count() or 2))
    return MultiThreadedExecutor(num_threads=threads, context=context)


class InProcessGraph:
    """Nodes sharing one rclpy Context and one executor, spun in a background thread of this process: the one
    way the package runs nodes in-process (`bitrl run`, `bitrl replay`, the tests and the benchmarks).

    build(context) -> a Node or {name: Node}; when it fails, the context is shut down (a build that makes several
    nodes destroys the ones it made, as runner.build_nodes does).
    signal_handlers=False leaves SIGINT to Python (KeyboardInterrupt), so that `bitrl run` can stop cleanly and
    still print its summary. start=False: call start() later (e.g. after a recorder has matched its topics).
    domain_id: the DDS domain (default: ROS_DOMAIN_ID), e.g. to join a graph started in another process.
    close() stops the spinning, calls shutdown() on every node that has one (policy_value lets a running update
    finish its checkpoint), waits for callbacks in flight, destroys the nodes and shuts the context down.
    """

    def __init__(self, build, executor: str = "single", threads: int | None = None, signal_handlers: bool = True,
                 start: bool = True, domain_id: int | None = None):
        from rclpy.signals import SignalHandlerOptions

        self.ctx = rclpy.Context()
        options = {} if signal_handlers else {"signal_handler_options": SignalHandlerOptions.NO}
        rclpy.init(context=self.ctx, args=[], domain_id=domain_id, **options)
        self.nodes: dict = {}
        self._closed = False
        self.executor = None
        self.error: BaseException | None = None  # what stopped the executor thread, if anything did
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, name="executor", daemon=True)
        try:
            built = build(self.ctx)
            self.nodes = built if isinstance(built, dict) else {"node": built}
            self.executor = make_executor(executor, threads, len(self.nodes), self.ctx)
            for node in self.nodes.values():
                self.executor.add_node(node)
        except BaseException:
            self.close()
            raise
        if start:
            self.start()

    @property
    def node(self):
        """The node of a one-node graph."""
        (only,) = self.nodes.values()
        return only

    def start(self) -> None:
        self.thread.start()

    @property
    def spinning(self) -> bool:
        return self.thread.is_alive()

    def _spin(self) -> None:
        try:
            while not self._stop.is_set() and self.ctx.ok():
                self.executor.spin_once(timeout_sec=0.02)
        except Exception as exc:  # re-raised by stop_spinning() in the thread that owns the graph
            self.error = exc

    def stop_spinning(self, timeout: float = 5.0) -> None:
        """Stop the executor thread (nodes stay alive); re-raises what the thread died of, if anything."""
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout)
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def close(self) -> None:
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(5.0)
        if self._closed:
            return
        self._closed = True
        try:
            for node in self.nodes.values():
                if hasattr(node, "shutdown"):
                    node.shutdown()
        finally:
            try:
                if self.executor is not None:
                    self.executor.shutdown(timeout_sec=5.0)  # waits for callbacks in flight
            finally:
                try:
                    for node in self.nodes.values():
                        node.destroy_node()  # a recorder closes its bag here on any exit path
                finally:
                    if self.ctx.ok():
                        rclpy.shutdown(context=self.ctx)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
