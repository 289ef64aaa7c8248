"""`bitrl run`: the whole ROS graph (sim_bridge, state_serializer, ternary_encoder, policy_value,
diagnostics_monitor) in one process, from the same ROS 2 parameter file the launch files use.

This is manual composition, for installs without `ros2 launch`: each node is built with its parameters as
parameter_overrides and all of them share one executor (see make_executor). Every parameter is validated
against the node schemas before the first node exists, so a bad value is refused with the node, parameter,
value and allowed range and nothing half-starts.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bitrl_ros.errors import ConfigError
from bitrl_ros.params import MODES, SCHEMAS, read_ros_params, validate_params

NODE_ORDER = ("sim_bridge", "state_serializer", "ternary_encoder", "policy_value", "diagnostics_monitor")
AGENT_NODES = NODE_ORDER[1:]


@dataclass
class RunOptions:
    config: str | Path
    steps: int | None = None          # sim_bridge.max_steps
    mode: str | None = None           # overrides `mode` of every node
    overrides: dict[str, Any] = field(default_factory=dict)  # "node.param" or "param" (every node knowing it)
    duration: float | None = None     # wall seconds
    progress: bool = True
    namespace: str | None = None
    log: Callable[[str], None] = print
    executor: str = "events"          # events (rclpy's EventsExecutor) | multi (MultiThreadedExecutor)
    record: str | Path | None = None  # bag directory: adds the bag_recorder node (bag_recorder.path)
    record_storage: str | None = None # mcap | sqlite3 (bag_recorder.storage)
    threads: int | None = None        # MultiThreadedExecutor threads (default: min(nodes, max(2, CPU cores)))


def apply_overrides(params: dict[str, dict[str, Any]], overrides: dict[str, Any]) -> None:
    """`node.param=value` sets one node's parameter; `param=value` (or `/**.param=value`) sets it on every node
    whose schema has it. A key no node knows is refused."""
    for key, value in overrides.items():
        key = key[4:] if key.startswith("/**.") else key
        node, _, rest = key.partition(".")
        if node in SCHEMAS and rest:
            known = {s.name for s in SCHEMAS[node]} | {"use_sim_time"}
            if rest not in known:
                raise ConfigError(f"{node}: unknown parameter '{rest}' (known: {', '.join(sorted(known))})")
            params[node][rest] = value
            continue
        targets = [n for n in SCHEMAS if key in {s.name for s in SCHEMAS[n]}]
        if not targets:
            raise ConfigError(f"--set {key}: no node has a parameter '{key}' (use <node>.<parameter>, nodes: "
                              f"{', '.join(SCHEMAS)})")
        for n in targets:
            params[n][key] = value


def resolve_params(opts: RunOptions) -> dict[str, dict[str, Any]]:
    """Parameter file + overrides -> validated values per node (raises ConfigError before anything starts)."""
    if opts.executor not in EXECUTORS:
        raise ConfigError(f"executor {opts.executor!r} (allowed: {' | '.join(EXECUTORS)})")
    params = read_ros_params(opts.config)
    params = {n: dict(params.get(n, {})) for n in SCHEMAS}
    apply_overrides(params, opts.overrides)
    if opts.mode is not None:
        if opts.mode not in MODES:
            raise ConfigError(f"--mode {opts.mode!r} (allowed: {' | '.join(MODES)})")
        for n in NODE_ORDER:
            params[n]["mode"] = opts.mode
    if opts.steps is not None:
        params["sim_bridge"]["max_steps"] = int(opts.steps)
    validated = {}
    for n in NODE_ORDER:
        use_sim_time = params[n].pop("use_sim_time", False)
        validated[n] = validate_params(n, params[n])
        if not isinstance(use_sim_time, bool):
            raise ConfigError(f"{n}: invalid parameter 'use_sim_time' = {use_sim_time!r} (allowed: true | false)")
        validated[n]["use_sim_time"] = use_sim_time
    # One graph, one clock, one env: nodes that disagree here would silently misjoin.
    for key in ("env", "mode", "control_rate_hz"):
        values = {n: validated[n][key] for n in NODE_ORDER}
        if len(set(values.values())) > 1:
            raise ConfigError(f"parameter '{key}' differs between nodes: {values}")
    lockstep = validated["sim_bridge"]["mode"] == "lockstep"
    for n in AGENT_NODES:
        validated[n]["use_sim_time"] = lockstep
    validated["sim_bridge"]["use_sim_time"] = False  # the bridge is the clock
    if opts.record is not None:
        validated["bag_recorder"] = _recorder_params(params["bag_recorder"], validated["sim_bridge"], opts)
    return validated


def _recorder_params(params: dict, bridge: dict, opts: RunOptions) -> dict:
    """bag_recorder's parameters for `--record PATH`: the file's bag_recorder section + the CLI's path/storage."""
    params = {k: v for k, v in params.items() if k != "use_sim_time"}
    params.update(env=bridge["env"], mode=bridge["mode"], control_rate_hz=bridge["control_rate_hz"],
                  path=str(opts.record))
    if opts.record_storage is not None:
        params["storage"] = opts.record_storage
    out = validate_params("bag_recorder", params)
    if Path(out["path"]).exists():
        raise ConfigError(f"--record {out['path']}: exists already (the recorder never overwrites a bag)")
    out["use_sim_time"] = False  # bag timestamps are receive (wall) times, as ros2 bag record writes them
    return out


def wait_for_recorder(recorder, timeout_s: float = 5.0) -> None:
    """Let DDS match the recorder with the publishers before anything is published (so step 0 is in the bag)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not recorder.subscriptions_matched():
        time.sleep(0.02)
    time.sleep(0.2)


def _percentiles(samples, qs=(50, 99)) -> list[float | None]:
    arr = np.asarray(list(samples), dtype=np.float64)
    if arr.size == 0:
        return [None for _ in qs]
    return [float(np.percentile(arr, q)) for q in qs]


def summarize(bridge, policy, wall_s: float, checkpoint: str) -> dict:
    rate_hz = bridge.rate_hz
    periods = np.asarray(list(bridge.action_periods_ms), dtype=np.float64)
    # The period deviation from 1/rate only means something for the fixed-rate loop; lockstep runs flat out.
    if bridge.mode != "realtime":
        periods = periods[:0]
    deviation = np.abs(periods - 1000.0 / rate_hz) if periods.size else periods
    lat50, lat99 = _percentiles(bridge.latencies_ms)
    dev50, dev99 = _percentiles(deviation)
    returns = list(policy.episode_returns) if policy is not None and policy.episode_returns else \
        list(bridge.episode_returns)
    return {
        "mode": bridge.mode,
        "env": bridge.env_id,
        "steps": bridge.total_steps,
        "episodes": bridge.episodes,
        "mean_return": float(np.mean(returns[-20:])) if returns else None,
        "updates": policy.updates if policy is not None else 0,
        "resumed_updates": (policy.restored or {}).get("updates", 0) if policy is not None else 0,
        "wall_s": wall_s,
        "steps_per_s": bridge.total_steps / wall_s if wall_s > 0 else 0.0,
        "achieved_rate_hz": (1000.0 / float(np.mean(periods))) if periods.size else None,
        "period_dev_ms_p50": dev50,
        "period_dev_ms_p99": dev99,
        "period_dev_ms_max": float(deviation.max()) if periods.size else None,
        "latency_ms_p50": lat50,
        "latency_ms_p99": lat99,
        "fallbacks": bridge.fallback_count,
        "stale_actions": bridge.stale_actions,
        "clipped_actions": bridge.clipped_count,
        "safe_actions": policy.safe_actions if policy is not None else 0,
        "rollouts_dropped": policy.rollouts_dropped if policy is not None else 0,
        "checkpoint": checkpoint,
    }


def build_nodes(validated: dict, context, namespace: str | None = None, names=NODE_ORDER) -> dict:
    """The named nodes (default: all five), built with their validated parameters as parameter_overrides."""
    from rclpy.parameter import Parameter

    from bitrl_ros.nodes.bag_recorder import BagRecorderNode
    from bitrl_ros.nodes.bag_replay import BagReplayNode
    from bitrl_ros.nodes.diagnostics_monitor import DiagnosticsMonitorNode
    from bitrl_ros.nodes.policy_value import PolicyValueNode
    from bitrl_ros.nodes.sim_bridge import SimBridgeNode
    from bitrl_ros.nodes.state_serializer import StateSerializerNode
    from bitrl_ros.nodes.ternary_encoder import TernaryEncoderNode

    classes = {"sim_bridge": SimBridgeNode, "state_serializer": StateSerializerNode,
               "ternary_encoder": TernaryEncoderNode, "policy_value": PolicyValueNode,
               "diagnostics_monitor": DiagnosticsMonitorNode, "bag_recorder": BagRecorderNode,
               "bag_replay": BagReplayNode}
    nodes = {}
    for name in names:
        overrides = [Parameter(k, value=v) for k, v in validated[name].items()]
        kwargs = {"context": context, "parameter_overrides": overrides}
        if namespace:
            kwargs["namespace"] = namespace
        nodes[name] = classes[name](**kwargs)
    return nodes


EXECUTORS = ("events", "multi")


def make_executor(kind: str, threads: int | None, num_nodes: int, context):
    """The executor all nodes share.

    events (default): rclpy's EventsExecutor dispatches callbacks from a C++ event queue without rebuilding a
    wait set per callback. Measured on the 2-core dev machine under load (bench/results/ros_graph*.json), it
    held the 40 Hz loop (40.0 Hz, period deviation p50 0.3 ms) where the MultiThreadedExecutor fell to
    15-38 Hz, and it stepped lockstep ~1.5x faster. One thread is enough because every callback is short and
    PPO updates run in the learner's own worker thread, never in a callback.
    multi: MultiThreadedExecutor. Callbacks are Python and hold the GIL, so threads beyond the core count only
    add contention (5 threads measured worse than 2 here); two or more let an encoder forward, which releases
    the GIL inside torch, overlap the bridge's and the policy's timer callbacks. Each node's callbacks stay in
    its default mutually exclusive group, so more threads than nodes could never be used.
    """
    from rclpy.executors import MultiThreadedExecutor

    if kind == "events":
        from rclpy.experimental import EventsExecutor
        return EventsExecutor(context=context)
    if kind != "multi":
        raise ConfigError(f"executor {kind!r} (allowed: {' | '.join(EXECUTORS)})")
    threads = threads or min(num_nodes, max(2, os.cpu_count() or 2))
    return MultiThreadedExecutor(num_threads=threads, context=context)


def run(opts: RunOptions) -> dict:
    """Build, spin and tear down the graph; returns the summary dict (see summarize)."""
    validated = resolve_params(opts)  # before any node (or rclpy) exists
    b = validated["sim_bridge"]
    opts.log(f"bitrl run: env={b['env']} mode={b['mode']} rate={b['control_rate_hz']:g} Hz "
             f"backbone={validated['ternary_encoder']['backbone']} steps={b['max_steps'] or 'unlimited'} "
             f"executor={opts.executor} checkpoint={validated['policy_value']['checkpoint_dir']}")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import rclpy
    import torch

    torch.set_num_threads(1)  # RL loop default (DESIGN §5); the encoder sets its own `threads`
    from rclpy.signals import SignalHandlerOptions

    context = rclpy.Context()
    # No rclpy signal handlers: Ctrl-C must reach Python as KeyboardInterrupt, so that the run stops, lets a
    # running update finish its checkpoint and still prints the summary (rclpy's handler would swallow it).
    rclpy.init(context=context, args=[], signal_handler_options=SignalHandlerOptions.NO)
    nodes: dict = {}
    executor = None
    summary: dict = {}
    try:
        names = NODE_ORDER + (("bag_recorder",) if "bag_recorder" in validated else ())
        nodes = build_nodes(validated, context, opts.namespace, names)
        bridge, policy = nodes["sim_bridge"], nodes["policy_value"]
        if "bag_recorder" in nodes:
            opts.log(f"recording to {validated['bag_recorder']['path']} ({validated['bag_recorder']['storage']})")
            wait_for_recorder(nodes["bag_recorder"])
        executor = make_executor(opts.executor, opts.threads, len(nodes), context)
        for node in nodes.values():
            executor.add_node(node)
        summary = _spin(executor, bridge, policy, opts, nodes.get("bag_recorder"))
        if "bag_recorder" in nodes:
            rec = nodes["bag_recorder"]
            time.sleep(0.2)  # nothing spins now; messages already taken are in the writer
            rec.shutdown()
            summary["recorded"] = {"path": str(rec.path), "storage": rec.storage_name, "messages": rec.counts}
    finally:
        if "policy_value" in nodes:
            nodes["policy_value"].shutdown()
        if executor is not None:
            executor.shutdown(timeout_sec=5.0)  # waits for callbacks in flight before the nodes go away
        for node in nodes.values():
            node.destroy_node()  # the recorder closes its bag here on any exit path
        if context.ok():
            rclpy.shutdown(context=context)
    summary["checkpoint"] = validated["policy_value"]["checkpoint_dir"]
    returns = list(policy.episode_returns) if policy is not None else []
    if returns:  # the whole history, restored episodes included
        from bitrl_ros.envs import get_spec
        from bitrl_ros.train import plot_learning_curve

        plot = Path(summary["checkpoint"]).parent / "learning_curve.png"
        plot.parent.mkdir(parents=True, exist_ok=True)
        plot_learning_curve([(i + 1, r, 0) for i, r in enumerate(returns)], plot,
                            title=f"bitrl run: {b['env']} / {validated['ternary_encoder']['backbone']}",
                            target=get_spec(b["env"]).solved_return, xlabel="episode")
        summary["plot"] = str(plot)
    return summary


def _spin(executor, bridge, policy, opts: RunOptions, recorder=None) -> dict:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    stop = threading.Event()
    thread = threading.Thread(target=_spin_executor, args=(executor, stop), name="executor", daemon=True)
    total = bridge.max_steps or None
    t0 = time.perf_counter()
    deadline = t0 + opts.duration if opts.duration else None
    progress = Progress(TextColumn("[bold]bitrl run"), BarColumn(), TextColumn("{task.description}"),
                        TimeElapsedColumn(), disable=not opts.progress, transient=False)
    interrupted = False
    thread.start()
    try:
        with progress:
            task = progress.add_task("starting", total=total)
            while True:
                if bridge.finished.wait(0.25):
                    break
                if deadline is not None and time.perf_counter() >= deadline:
                    break
                if not thread.is_alive():
                    break
                progress.update(task, completed=bridge.total_steps, description=_progress_line(bridge, policy))
            progress.update(task, completed=bridge.total_steps, description=_progress_line(bridge, policy))
    except KeyboardInterrupt:
        interrupted = True
    if recorder is not None and not interrupted:
        _drain_recorder(recorder, bridge)
    stop.set()
    thread.join(5.0)
    wall_s = time.perf_counter() - (bridge.started_at or t0)
    if getattr(thread, "error", None) is not None:
        raise thread.error
    # Let an update that is running finish and checkpoint before the summary counts updates.
    policy.shutdown()
    summary = summarize(bridge, policy, wall_s, "")
    summary["interrupted"] = interrupted
    return summary


def _drain_recorder(recorder, bridge, timeout_s: float = 5.0) -> None:
    """Keep spinning until the recorder holds every observation the bridge published (a loaded machine can take
    well over the usual few ms to deliver the last ones), then a little longer for the messages that follow it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        recorded = sum(n for topic, n in recorder.counts.items() if topic.rsplit("/", 1)[-1] == "observation")
        if recorded >= bridge.observations_published:
            break
        time.sleep(0.05)
    time.sleep(0.3)  # the action, encoded state and stats that answer the last observation


def _spin_executor(executor, stop) -> None:
    me = threading.current_thread()
    try:
        while not stop.is_set() and executor.context.ok():
            executor.spin_once(timeout_sec=0.1)
    except Exception as exc:  # re-raised in the main thread
        me.error = exc


def _progress_line(bridge, policy) -> str:
    returns = policy.episode_returns[-20:] or bridge.episode_returns[-20:]
    rate = bridge.achieved_rate_hz()
    parts = [f"steps {bridge.total_steps}", f"episodes {bridge.episodes}"]
    if returns:
        parts.append(f"return {np.mean(returns):.1f}")
    parts.append(f"updates {policy.updates}")
    if rate:
        parts.append(f"{rate:.1f} steps/s")
    return "  ".join(parts)


def summary_rows(s: dict) -> list[tuple[str, str]]:
    def ms(v):
        return "-" if v is None else f"{v:.2f} ms"

    rate = (f"{s['steps_per_s']:.0f} env steps/s" if s["mode"] == "lockstep" else
            ("-" if s["achieved_rate_hz"] is None else f"{s['achieved_rate_hz']:.2f} Hz"))
    rows = [
        ("mode", s["mode"]),
        ("env steps", str(s["steps"])),
        ("episodes", str(s["episodes"])),
        ("mean return (last 20 episodes)", "-" if s["mean_return"] is None else f"{s['mean_return']:.1f}"),
        ("PPO updates", f"{s['updates']}" + (f" ({s['resumed_updates']} resumed)" if s["resumed_updates"] else "")),
        ("achieved rate", rate),
        ("action period deviation p50 / p99", f"{ms(s['period_dev_ms_p50'])} / {ms(s['period_dev_ms_p99'])}"),
        ("observation->action latency p50 / p99", f"{ms(s['latency_ms_p50'])} / {ms(s['latency_ms_p99'])}"),
        ("fallback actions (bridge)", str(s["fallbacks"])),
        ("safe actions (policy)", str(s["safe_actions"])),
        ("wall time", f"{s['wall_s']:.1f} s"),
        ("checkpoint", s["checkpoint"]),
        ("learning curve", s.get("plot", "-")),
    ]
    return rows


@dataclass
class ReplayOptions:
    bag: str | Path
    config: str | Path = "config/agent.yaml"
    rate: float = 1.0                 # 1.0 recorded rate, >1 faster, 0 stepped on the agent's actions
    mapping: str = ""                 # YAML mapping of a foreign bag
    steps: int | None = None          # replay at most this many observations
    overrides: dict[str, Any] = field(default_factory=dict)
    namespace: str | None = None
    log: Callable[[str], None] = print
    timeout_s: float | None = None    # wall limit


def replay(opts: ReplayOptions) -> dict:
    """The agent nodes in evaluation mode (policy_value learn=false, resuming from its checkpoint_dir; no
    sim_bridge) + bag_replay, in one process. Returns {replayed, messages_per_s, actions_received, ...}."""
    overrides = dict(opts.overrides)
    overrides["policy_value.learn"] = False
    validated = resolve_params(RunOptions(config=opts.config, overrides=overrides))
    r = dict(read_ros_params(opts.config).get("bag_replay", {}))
    r.pop("use_sim_time", None)
    b = validated["sim_bridge"]
    # The agent's observation subscribers (state_serializer, policy_value, diagnostics_monitor) must all be
    # matched before the first observation goes out, or one of them misses the start of the bag (agent.yaml).
    r.update({k.split(".", 1)[1]: v for k, v in opts.overrides.items() if k.startswith("bag_replay.")})
    r.update(env=b["env"], mode=b["mode"], control_rate_hz=b["control_rate_hz"], bag=str(opts.bag),
             rate=float(opts.rate), mapping=str(opts.mapping or ""), max_messages=int(opts.steps or 0))
    validated["bag_replay"] = validate_params("bag_replay", r)
    validated["bag_replay"]["use_sim_time"] = False
    opts.log(f"bitrl replay: {opts.bag} rate={'stepped' if opts.rate == 0 else opts.rate} env={b['env']} "
             f"checkpoint={validated['policy_value']['checkpoint_dir']} (learn=false)")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import rclpy
    import torch
    from rclpy.signals import SignalHandlerOptions

    torch.set_num_threads(1)
    context = rclpy.Context()
    rclpy.init(context=context, args=[], signal_handler_options=SignalHandlerOptions.NO)
    nodes: dict = {}
    executor = None
    try:
        nodes = build_nodes(validated, context, opts.namespace, AGENT_NODES + ("bag_replay",))
        player, policy = nodes["bag_replay"], nodes["policy_value"]
        executor = make_executor("events", None, len(nodes), context)
        for node in nodes.values():
            executor.add_node(node)
        stop = threading.Event()
        thread = threading.Thread(target=_spin_executor, args=(executor, stop), daemon=True)
        thread.start()
        deadline = time.monotonic() + opts.timeout_s if opts.timeout_s else None
        try:
            while not player.finished.wait(0.1) and thread.is_alive():
                if deadline is not None and time.monotonic() > deadline:
                    break
        except KeyboardInterrupt:
            pass
        time.sleep(0.3)  # the last action
        stop.set()
        thread.join(5.0)
        if getattr(thread, "error", None) is not None:
            raise thread.error
        summary = {"bag": str(opts.bag), "rate": opts.rate, "replayed": player.replayed,
                   "messages_per_s": player.messages_per_s(), "actions_received": player.actions_received,
                   "action_timeouts": player.action_timeouts,
                   "wall_s": (player.ended_at or time.perf_counter()) - (player.started_at or time.perf_counter()),
                   "episodes": len(policy.episode_returns), "published": player.published,
                   "checkpoint": validated["policy_value"]["checkpoint_dir"]}
    finally:
        if "policy_value" in nodes:
            nodes["policy_value"].shutdown()
        if executor is not None:
            executor.shutdown(timeout_sec=5.0)
        for node in nodes.values():
            node.destroy_node()
        if context.ok():
            rclpy.shutdown(context=context)
    return summary
