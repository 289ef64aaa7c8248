"""`bitrl run`: the whole ROS graph (sim_bridge, state_serializer, ternary_encoder, policy_value,
diagnostics_monitor) in one process, from the same ROS 2 parameter file the launch files use.

This is manual composition, for installs without `ros2 launch`: each node is built with its parameters as
parameter_overrides and all of them share one executor (nodes.base.InProcessGraph, make_executor). Every
parameter is validated against the node schemas before the first node exists, so a bad value is refused with
the node, parameter, value and allowed range and nothing half-starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import os
from pathlib import Path
import time
from typing import Any, Callable

import numpy as np

from bitrl_ros.errors import ConfigError
from bitrl_ros.nodes.stats import BridgeStats, PolicyStats
from bitrl_ros.params import MODES, read_ros_params, SCHEMAS, validate_params
from bitrl_ros.rl.evaluation import RETURN_WINDOW, success_rate, SUCCESS_WINDOW
from bitrl_ros.settings import EXECUTORS

NODE_ORDER = ("sim_bridge", "state_serializer", "ternary_encoder", "policy_value", "diagnostics_monitor")
AGENT_NODES = NODE_ORDER[1:]
MANAGED_NODES = ("ternary_encoder", "policy_value")  # lifecycle nodes (nodes/managed.py)


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
    executor: str = "events"          # events (EventsExecutor) | multi (MultiThreadedExecutor) | single
    record: str | Path | None = None  # bag directory: adds the bag_recorder node (bag_recorder.path)
    record_storage: str | None = None  # mcap | sqlite3 (bag_recorder.storage)
    threads: int | None = None        # MultiThreadedExecutor threads (default: min(nodes, max(2, CPU cores)))


def apply_overrides(params: dict[str, dict[str, Any]], overrides: dict[str, Any]) -> None:
    """`node.param=value` sets one node's parameter; `param=value` (or `/**.param=value`) sets it on every node
    whose schema has it. A key no node knows is refused.
    """
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
            raise ConfigError(f"{n}: invalid value for 'use_sim_time' = {use_sim_time!r} (allowed: true | false)")
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


def summarize(bridge: BridgeStats, policy: PolicyStats | None, wall_s: float, checkpoint: str) -> dict:
    periods = np.asarray(bridge.action_periods_ms, dtype=np.float64)
    # The period deviation from 1/rate only means something for the fixed-rate loop; lockstep runs flat out.
    if bridge.mode != "realtime":
        periods = periods[:0]
    deviation = np.abs(periods - 1000.0 / bridge.rate_hz) if periods.size else periods
    lat50, lat99 = _percentiles(bridge.latencies_ms)
    dev50, dev99 = _percentiles(deviation)
    returns = policy.episode_returns if policy is not None and policy.episode_returns else bridge.episode_returns
    return {
        "mode": bridge.mode,
        "env": bridge.env_id,
        "steps": bridge.total_steps,
        "episodes": bridge.episodes,
        "mean_return": float(np.mean(returns[-RETURN_WINDOW:])) if returns else None,
        "success_rate": success_rate(bridge.episode_successes[-SUCCESS_WINDOW:]),
        "updates": policy.updates if policy is not None else 0,
        "resumed_updates": policy.resumed_updates if policy is not None else 0,
        "wall_s": wall_s,
        "steps_per_s": bridge.total_steps / wall_s if wall_s > 0 else 0.0,
        "achieved_rate_hz": (1000.0 / float(np.mean(periods))) if periods.size else None,
        "period_dev_ms_p50": dev50,
        "period_dev_ms_p99": dev99,
        "period_dev_ms_max": float(deviation.max()) if periods.size else None,
        "latency_ms_p50": lat50,
        "latency_ms_p99": lat99,
        "fallbacks": bridge.fallbacks,
        "stale_actions": bridge.stale_actions,
        "clipped_actions": bridge.clipped_actions,
        "safe_actions": policy.safe_actions if policy is not None else 0,
        "rollouts_dropped": policy.rollouts_dropped if policy is not None else 0,
        "failed_updates": policy.failed_updates if policy is not None else 0,
        "glitches": policy.glitches if policy is not None else 0,
        "learning_stopped": policy.learning_stopped if policy is not None else False,
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
    try:
        for name in names:
            values = dict(validated[name])
            if name in MANAGED_NODES:
                values["autostart"] = False  # the transitions are driven below, in order
            overrides = [Parameter(k, value=v) for k, v in values.items()]
            kwargs = {"context": context, "parameter_overrides": overrides}
            if namespace:
                kwargs["namespace"] = namespace
            nodes[name] = classes[name](**kwargs)
        for transition in ("configure", "activate"):  # as a lifecycle manager would: the encoder first
            for name in MANAGED_NODES:
                if name in nodes:
                    nodes[name].change(transition)
    except BaseException:
        for node in nodes.values():  # the ones built before the failure
            node.destroy_node()
        raise
    return nodes


def run(opts: RunOptions) -> dict:
    """Build, spin and tear down the graph; returns the summary dict (see summarize)."""
    validated = resolve_params(opts)  # before any node (or rclpy) exists
    b = validated["sim_bridge"]
    opts.log(f"bitrl run: env={b['env']} mode={b['mode']} rate={b['control_rate_hz']:g} Hz "
             f"backbone={validated['ternary_encoder']['backbone']} steps={b['max_steps'] or 'unlimited'} "
             f"executor={opts.executor} checkpoint={validated['policy_value']['checkpoint_dir']}")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from bitrl_ros.nodes.base import InProcessGraph, torch_on_one_thread

    torch_on_one_thread()  # wherever torch runs in this process; the native encoder has its own `threads` pool
    names = NODE_ORDER + (("bag_recorder",) if "bag_recorder" in validated else ())
    # No rclpy signal handlers: Ctrl-C must reach Python as KeyboardInterrupt, so that the run stops, lets a
    # running update finish its checkpoint and still prints the summary (rclpy's handler would swallow it).
    graph = InProcessGraph(lambda ctx: build_nodes(validated, ctx, opts.namespace, names), opts.executor,
                           opts.threads, signal_handlers=False, start=False)
    policy = graph.nodes["policy_value"]
    try:
        recorder = graph.nodes.get("bag_recorder")
        if recorder is not None:
            opts.log(f"recording to {validated['bag_recorder']['path']} ({validated['bag_recorder']['storage']})")
            wait_for_recorder(recorder)
        summary = _spin(graph, opts)
        if recorder is not None:
            time.sleep(0.2)  # nothing spins now; messages already taken are in the writer
            recorder.shutdown()
            summary["recorded"] = {"path": str(recorder.path), "storage": recorder.storage_name,
                                   "messages": recorder.counts}
    finally:
        graph.close()
    summary["checkpoint"] = validated["policy_value"]["checkpoint_dir"]
    if "plot" in policy.outputs:  # the node wrote it at shutdown, with the checkpoint and summary.json
        summary["plot"] = policy.outputs["plot"]
    return summary


def _spin(graph, opts: RunOptions) -> dict:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bridge, policy = graph.nodes["sim_bridge"], graph.nodes["policy_value"]
    recorder = graph.nodes.get("bag_recorder")
    total = bridge.stats().max_steps or None
    t0 = time.perf_counter()
    deadline = t0 + opts.duration if opts.duration else None
    progress = Progress(TextColumn("[bold]bitrl run"), BarColumn(), TextColumn("{task.description}"),
                        TimeElapsedColumn(), disable=not opts.progress, transient=False)
    interrupted = False
    graph.start()
    try:
        with progress:
            task = progress.add_task("starting", total=total)
            while True:
                if bridge.finished.wait(0.25):
                    break
                if deadline is not None and time.perf_counter() >= deadline:
                    break
                if not graph.spinning:
                    break
                b = bridge.stats()
                progress.update(task, completed=b.total_steps, description=_progress_line(b, policy.stats()))
            b = bridge.stats()
            progress.update(task, completed=b.total_steps, description=_progress_line(b, policy.stats()))
    except KeyboardInterrupt:
        interrupted = True
    if recorder is not None and not interrupted:
        _drain_recorder(recorder, bridge)
    graph.stop_spinning()
    # Let an update that is running finish and checkpoint before the summary counts updates.
    policy.shutdown()
    b = bridge.stats()
    summary = summarize(b, policy.stats(), time.perf_counter() - (b.started_at or t0), "")
    summary["interrupted"] = interrupted
    return summary


def _drain_recorder(recorder, bridge, timeout_s: float = 5.0) -> None:
    """Keep spinning until the recorder holds every observation the bridge published (a loaded machine can take
    well over the usual few ms to deliver the last ones), then a little longer for the messages that follow it.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        recorded = sum(n for topic, n in recorder.counts.items() if topic.rsplit("/", 1)[-1] == "observation")
        if recorded >= bridge.stats().observations_published:
            break
        time.sleep(0.05)
    time.sleep(0.3)  # the action, encoded state and stats that answer the last observation


def _progress_line(bridge: BridgeStats, policy: PolicyStats) -> str:
    returns = policy.episode_returns[-RETURN_WINDOW:] or bridge.episode_returns[-RETURN_WINDOW:]
    rate = bridge.achieved_rate_hz
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
        (f"mean return (last {RETURN_WINDOW} episodes)",
         "-" if s["mean_return"] is None else f"{s['mean_return']:.4g}"),
        *([(f"success rate (last {SUCCESS_WINDOW} episodes)", f"{s['success_rate']:.0%}")]
          if s.get("success_rate") is not None else []),
        ("PPO updates", f"{s['updates']}" + (f" ({s['resumed_updates']} resumed)" if s["resumed_updates"] else "")),
        ("achieved rate", rate),
        ("action period deviation p50 / p99", f"{ms(s['period_dev_ms_p50'])} / {ms(s['period_dev_ms_p99'])}"),
        ("observation->action latency p50 / p99", f"{ms(s['latency_ms_p50'])} / {ms(s['latency_ms_p99'])}"),
        ("fallback actions (bridge)", str(s["fallbacks"])),
        ("safe actions (policy)", str(s["safe_actions"])),
        ("glitches (policy)", str(s.get("glitches", 0))),
        ("PPO updates undone", str(s.get("failed_updates", 0))
         + (" (learning stopped)" if s.get("learning_stopped") else "")),
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
    sim_bridge) + bag_replay, in one process. Returns {replayed, messages_per_s, actions_received, ...}.
    """
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
    from bitrl_ros.nodes.base import InProcessGraph, torch_on_one_thread

    torch_on_one_thread()
    graph = InProcessGraph(lambda ctx: build_nodes(validated, ctx, opts.namespace, AGENT_NODES + ("bag_replay",)),
                           "events", signal_handlers=False)
    try:
        player, policy = graph.nodes["bag_replay"], graph.nodes["policy_value"]
        deadline = time.monotonic() + opts.timeout_s if opts.timeout_s else None
        try:
            while not player.finished.wait(0.1) and graph.spinning:
                if deadline is not None and time.monotonic() > deadline:
                    break
        except KeyboardInterrupt:
            pass
        time.sleep(0.3)  # the last action
        graph.stop_spinning()
        r = player.stats()
        summary = {"bag": str(opts.bag), "rate": opts.rate, "replayed": r.replayed,
                   "messages_per_s": r.messages_per_s, "actions_received": r.actions_received,
                   "action_timeouts": r.action_timeouts,
                   "wall_s": (r.ended_at or time.perf_counter()) - (r.started_at or time.perf_counter()),
                   "episodes": len(policy.stats().episode_returns), "published": list(r.published),
                   "checkpoint": validated["policy_value"]["checkpoint_dir"]}
    finally:
        graph.close()
    return summary
