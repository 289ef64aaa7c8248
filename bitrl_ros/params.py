"""Node parameters, ROS-free: one schema per node (name, default, description, allowed range), validation with
errors that name the parameter, the value and the allowed range, and reading ROS 2 parameter YAML files.

The nodes declare exactly these parameters (with descriptors built from the same specs), so `ros2 param
describe` shows the ranges and `bitrl run` / `ros2 launch` refuse the same invalid values at start-up.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bitrl_ros import settings
from bitrl_ros.errors import ConfigError
from bitrl_ros.settings import Setting

MODES = ("lockstep", "realtime")


def _envs():
    from bitrl_ros.envs import list_envs
    return tuple(list_envs())


COMMON = [
    settings.ENV.as_ros_parameter(description="registered environment id: fixes observation layout and action "
                                  "space"),
    Setting("mode", "lockstep", "lockstep: the bridge waits for each action (sim time); realtime: fixed-rate loop",
            choices=MODES),
    Setting("control_rate_hz", 40.0, "control loop rate in realtime mode", 1.0, 1000.0),
]

_FEATURE = settings.by_name(settings.FEATURES)
# What the serializer, encoder and policy nodes must agree on (set under `/**` in agent.yaml), from the same
# declarations as config/train.yaml's, so `bitrl train` and the graph start from the same features.
FEATURES = ([s.as_ros_parameter() for s in settings.SERIALIZER]
            + [_FEATURE[name].as_ros_parameter() for name in settings.SHARED_FEATURES])
_PPO = settings.by_name(settings.PPO)
NODE_PPO = [_PPO[name].as_ros_parameter(f"ppo.{name}", **({"default": settings.NODE_PPO_DEFAULTS[name]}
                                                          if name in settings.NODE_PPO_DEFAULTS else {}))
            for name in settings.NODE_PPO]
_NORMALIZE = settings.by_name(settings.NORMALIZE)
_GUARD = settings.by_name(settings.GUARD)
_BACKBONE = settings.BACKBONE.as_ros_parameter(description="backbone id or model dir (frozen); the serializer "
                                               "uses its tokenizer to produce token_ids")

_CRITIC = settings.CRITIC_BACKBONE.as_ros_parameter(description="the hybrid critic's backbone (the value head reads "
                                                    "its features; same readout and tokenizer as backbone); "
                                                    '"": none')

# The managed (lifecycle) nodes' own parameter (bitrl_ros/nodes/managed.py).
AUTOSTART = Setting("autostart", True, "configure and activate at start-up (ros2 run); false: stay unconfigured "
                    "until a lifecycle manager drives the transitions (the launch files and bitrl run do)")

# A node parameter is a Setting; the ones only nodes have are declared here.
SCHEMAS: dict[str, list[Setting]] = {
    "sim_bridge": COMMON + [
        settings.SEED.as_ros_parameter(description="environment seed (episode k resets with seed + k)"),
        Setting("action_timeout_s", 2.0, "lockstep: wall time to wait for the action of step k before the "
                "fallback action is applied (counted)", 0.001, 600.0),
        Setting("fallback_action", "hold", "action when none arrives in time: repeat the last or zero",
                choices=("hold", "zero")),
        Setting("max_steps", 0, "stop stepping after this many env steps (0: never)", 0, 2**31 - 1),
        Setting("publish_clock", True, "publish /clock from simulation time"),
    ],
    "state_serializer": COMMON + FEATURES + [_BACKBONE, _FEATURE["max_tokens"]],
    "ternary_encoder": COMMON + FEATURES + [
        _BACKBONE, _CRITIC, _FEATURE["engine"], _FEATURE["pooling"].as_ros_parameter(), _FEATURE["cache_mb"],
        Setting("threads", 1, "encoder threads: the native engine's pool; torch's (process-wide) only when the "
                "node runs in a process of its own", 1, 64),
        AUTOSTART,
    ],
    "policy_value": COMMON + FEATURES + [
        _CRITIC,
        settings.SEED.as_ros_parameter(description="seed of the heads and of action sampling"),
        Setting("learn", True, "train online with PPO (false: evaluation, greedy actions, the heads in numpy: no "
                "update process, no torch)"),
        _NORMALIZE["features"].as_ros_parameter("normalize_features"),
        _NORMALIZE["reward"].as_ros_parameter("normalize_reward"),
        _GUARD["policy"].as_ros_parameter("glitch_policy", description=(
            "an observation or reward out of its bounds: reject (the step gets the safe action and is not learned "
            "from; its reward does not count), clip (the raw values and reward are clipped; the encoded text is "
            "the serializer's, already clipped to its units) or off; counted in every case")),
        _GUARD["reward_bound"], _GUARD["obs_bound_factor"],
        Setting("checkpoint_dir", "runs/agent/checkpoint", "checkpoint directory (written after every update)"),
        Setting("resume", True, "resume from checkpoint_dir when a checkpoint is there"),
        Setting("safe_action", "zero", "action on watchdog/invalid input: zero or hold the last",
                choices=("zero", "hold")),
        Setting("watchdog_periods", 3, "control periods without a fresh observation before the watchdog trips",
                1, 1000),
        Setting("action_release_ms", 0.0, "realtime: publish each action this many ms after its observation's "
                "stamp (wall clock) instead of as soon as it is computed: a fixed observation->action delay in "
                "place of the pipeline's jitter (set it above the latency's p99); 0: at once", 0.0, 1000.0),
        Setting("update_worker", "process", "where PPO updates run: process (a niced child process that owns the PPO, "
                "so the update never holds this node's interpreter while it acts and this process, acting with the "
                "heads in numpy, never imports torch) or thread (a thread of this node; torch in this process)",
                choices=("process", "thread")),
        AUTOSTART,
    ] + NODE_PPO,
    "bag_recorder": COMMON + [
        Setting("path", "runs/bag", "bag directory to create (must not exist)"),
        Setting("storage", "mcap", "rosbag2 storage plugin", choices=("mcap", "sqlite3")),
        Setting("topics", ["observation", "serialized_state", "encoded_state", "action", "training_stats",
                           "/diagnostics"], "topics to record (relative names follow the namespace; "
                "/clock may be added)"),
        Setting("flush_interval_s", 1.0, "seconds between flushes to disk (what a crash can lose at most)",
                0.01, 60.0),
    ],
    "bag_replay": COMMON + [
        Setting("bag", "", "bag directory (or .mcap/.db3 file) to replay"),
        Setting("rate", 1.0, "1.0: recorded rate; >1 faster; 0: stepped (next observation when the agent's "
                "action for the current one arrives)", 0.0, 1000.0),
        Setting("publish_clock", True, "publish /clock from the recorded observation stamps"),
        Setting("mapping", "", "YAML topic mapping for foreign bags (empty: a bitrl bag)"),
        Setting("topic", "observation", "observation topic in a bitrl bag"),
        Setting("max_messages", 0, "stop after this many observations (0: all)", 0, 2**31 - 1),
        Setting("action_timeout_s", 2.0, "stepped: wall time to wait for an action before moving on (counted)",
                0.01, 3600.0),
        Setting("min_subscribers", 1, "subscribers of `observation` to wait for before the first observation "
                "(bitrl replay: the agent's three)", 1, 100),
        Setting("start_delay_s", 15.0, "wait for those subscribers (and, stepped, an action publisher) at most "
                "this long, then start anyway", 0.0, 600.0),
    ],
    "diagnostics_monitor": COMMON + [
        Setting("publish_rate_hz", 1.0, "rate of /diagnostics", 0.1, 100.0),
        Setting("hardware_id", "bitrl-agent", "hardware_id of the published statuses"),
        Setting("rate_warn_hz", 38.0, "realtime: WARN when the achieved action rate falls below", 0.0, 1000.0),
        Setting("latency_warn_ms", 20.0, "WARN when observation->action p50 latency exceeds", 0.0, 10000.0),
        Setting("stale_after_s", 3.0, "STALE when a stage has published nothing for this long", 0.1, 3600.0),
        Setting("window_s", 5.0, "sliding window of the rate, period-deviation and latency statistics",
                0.5, 3600.0),
        Setting("telemetry_root", "/", "file-system root the hardware probes read (/sys, /proc, vcgencmd)"),
        Setting("board", "auto", "board for detection-dependent probes and the power estimate",
                choices=("auto", "pi4", "pi5", "x86")),
        Setting("power_source", "auto", "where board power comes from (auto: ina if configured, pmic, rapl, "
                "else the CPU-utilisation estimate)", choices=("auto", "ina", "pmic", "rapl", "estimate", "none")),
        Setting("ina_hwmon_name", "", "hwmon name (e.g. ina219) or directory of an INA power sensor; empty: none"),
        Setting("vcgencmd_path", "", "vcgencmd binary; empty: <telemetry_root>/usr/bin/vcgencmd"),
        Setting("vcgencmd_interval_s", 5.0, "seconds between vcgencmd throttle/clock queries", 0.5, 3600.0),
        Setting("temp_warn_c", 70.0, "WARN when the CPU temperature reaches", 0.0, 150.0),
        Setting("temp_error_c", 80.0, "ERROR when the CPU temperature reaches", 0.0, 150.0),
        Setting("throttle_warn_since_boot", True, "WARN also for throttle bits that only record a past event "
                "(since boot); false: only for conditions active now"),
    ],
}


def validate_params(node: str, values: dict[str, Any]) -> dict[str, Any]:
    """Check every value of a node's parameters against its schema; unknown names are refused too."""
    specs = {s.name: s for s in SCHEMAS[node]}
    unknown = sorted(set(values) - set(specs) - {"use_sim_time"})
    if unknown:
        raise ConfigError(f"{node}: unknown parameter '{unknown[0]}' (known: {', '.join(sorted(specs))})")
    out = {}
    for name, spec in specs.items():
        out[name] = spec.check(values.get(name, spec.default), node)
    if out["env"] not in _envs():
        raise ConfigError(f"{node}: invalid value for 'env' = {out['env']!r} (allowed: {' | '.join(_envs())})")
    return out


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def read_ros_params(path: str | Path) -> dict[str, dict[str, Any]]:
    """A ROS 2 parameter file -> {node name: {dotted parameter: value}}; `/**` entries apply to every node."""
    from bitrl_ros.config import read_yaml

    data = read_yaml(path)
    per_node: dict[str, dict[str, Any]] = {}
    shared: dict[str, Any] = {}
    for key, body in data.items():
        if not isinstance(body, dict) or not isinstance(body.get("ros__parameters"), dict):
            raise ConfigError(f"{path}: '{key}' must hold a 'ros__parameters' mapping (ROS 2 parameter file format)")
        params = _flatten(body["ros__parameters"])
        name = str(key).strip("/")
        if name in ("**", "*"):
            shared.update(params)
        else:
            per_node[name] = params
    result = {}
    for node, specs in SCHEMAS.items():
        known = {s.name for s in specs} | {"use_sim_time"}
        merged = {k: v for k, v in shared.items() if k in known}
        merged.update(per_node.get(node, {}))
        result[node] = merged
    for extra in sorted(set(per_node) - set(SCHEMAS)):
        result[extra] = per_node[extra]
    return result


def node_overrides_file(node: str, overrides: dict[str, Any]) -> str:
    """Launch-time overrides of one node as a parameter file of their own (a temporary file, like launch_ros's),
    to be listed after the parameter file they override.

    Not a parameters dict: launch_ros writes a dict under `/**`, and a node's own entry in the parameter file
    beats a wildcard entry whatever the file order, so `max_steps:=400` would silently keep the file's value.
    Not `-p` ros_arguments either: launch_ros puts them before `--params-file`, and the later one wins.
    """
    import tempfile

    import yaml

    with tempfile.NamedTemporaryFile("w", prefix=f"bitrl_{node}_", suffix=".yaml", delete=False) as out:
        yaml.safe_dump({node: {"ros__parameters": dict(overrides)}}, out)
    return out.name
