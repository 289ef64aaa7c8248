"""Node parameters, ROS-free: one schema per node (name, default, description, allowed range), validation with
errors that name the parameter, the value and the allowed range, and reading ROS 2 parameter YAML files.

The nodes declare exactly these parameters (with descriptors built from the same specs), so `ros2 param
describe` shows the ranges and `bitrl run` / `ros2 launch` refuse the same invalid values at start-up.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bitrl_ros.errors import ConfigError

MODES = ("lockstep", "realtime")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    low: float | None = None      # inclusive numeric range
    high: float | None = None
    choices: tuple | None = None  # for strings

    @property
    def kind(self) -> type:
        return type(self.default)

    def allowed(self) -> str:
        if self.choices:
            return " | ".join(str(c) for c in self.choices)
        if self.kind is bool:
            return "true | false"
        if self.low is not None or self.high is not None:
            lo = "-inf" if self.low is None else f"{self.low:g}"
            hi = "inf" if self.high is None else f"{self.high:g}"
            return f"{self.kind.__name__} in [{lo}, {hi}]"
        return self.kind.__name__

    def check(self, value: Any, node: str) -> Any:
        ok = True
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not self.kind:
            ok = False
        elif self.choices is not None and value not in self.choices:
            ok = False
        elif self.kind in (int, float) and ((self.low is not None and value < self.low)
                                            or (self.high is not None and value > self.high)):
            ok = False
        if not ok:
            raise ConfigError(f"{node}: invalid parameter '{self.name}' = {value!r} (allowed: {self.allowed()})")
        return value


def _envs():
    from bitrl_ros.envs import list_envs
    return tuple(list_envs())


COMMON = [
    ParamSpec("env", "CartPole-v1", "registered environment id: fixes observation layout and action space"),
    ParamSpec("mode", "lockstep", "lockstep: the bridge waits for each action (sim time); realtime: fixed-rate loop",
              choices=MODES),
    ParamSpec("control_rate_hz", 40.0, "control loop rate in realtime mode", 1.0, 1000.0),
]


def _feature_params() -> list[ParamSpec]:
    """What the serializer, encoder and policy nodes must agree on (set under `/**`); defaults are
    config/train.yaml's dataclass defaults, so `bitrl train` and the graph start from the same features."""
    from bitrl_ros.config import NUMBER_SCHEMES, READOUTS, SERIALIZER_FORMATS, FeatureConfig, SerializerConfig

    features, serializer = FeatureConfig(), SerializerConfig()
    return [
        ParamSpec("format", serializer.format, "serializer format", choices=SERIALIZER_FORMATS),
        ParamSpec("numbers", serializer.numbers, "number scheme of the serializer (fixed decimals | fitted "
                  "per-field scales | digit by digit)", choices=NUMBER_SCHEMES),
        ParamSpec("precision", -1, "decimals shift of the fixed/digits schemes (-1: the env's default)", -1, 6),
        ParamSpec("readout", features.readout, "backbone readout: pooled (mean|cls|last) or per field "
                  "(fields; fields_proj adds a trainable projection in the heads)", choices=READOUTS),
        ParamSpec("proj_dim", features.proj_dim, "fields_proj: trainable dims per field", 1, 256),
        ParamSpec("balance", features.balance, "scale the normalized backbone features to the raw observation's "
                  "total variance (keeps PPO updates of high-dimensional features as small as on raw numbers)"),
        ParamSpec("raw_skip", features.raw_skip, "append the raw observation to the backbone features (hybrid)"),
    ]


FEATURES = _feature_params()

SCHEMAS: dict[str, list[ParamSpec]] = {
    "sim_bridge": COMMON + [
        ParamSpec("seed", 0, "environment seed (episode k resets with seed + k)", 0, 2**31 - 1),
        ParamSpec("action_timeout_s", 2.0, "lockstep: wall time to wait for the action of step k before the "
                  "fallback action is applied (counted)", 0.001, 600.0),
        ParamSpec("fallback_action", "hold", "action when none arrives in time: repeat the last or zero",
                  choices=("hold", "zero")),
        ParamSpec("max_steps", 0, "stop stepping after this many env steps (0: never)", 0, 2**31 - 1),
        ParamSpec("publish_clock", True, "publish /clock from simulation time"),
    ],
    "state_serializer": COMMON + FEATURES + [
        ParamSpec("backbone", "minilm-bitnet-distilled", "backbone id or model dir whose tokenizer produces token_ids"),
        ParamSpec("max_tokens", 64, "token budget; longer texts are truncated and counted", 4, 512),
    ],
    "ternary_encoder": COMMON + FEATURES + [
        ParamSpec("backbone", "minilm-bitnet-distilled", "backbone id or model dir (frozen)"),
        ParamSpec("engine", "auto", "inference engine (auto: native when built and the backbone is ternary)",
                  choices=("auto", "torch", "native")),
        ParamSpec("pooling", "", "old name of readout for mean | cls | last (empty: readout decides)",
                  choices=("", "mean", "cls", "last")),
        ParamSpec("cache_size", 65536, "LRU embedding cache entries (0 disables)", 0, 10_000_000),
        ParamSpec("threads", 1, "encoder threads (torch, and the native engine's pool)", 1, 64),
    ],
    "policy_value": COMMON + FEATURES + [
        ParamSpec("seed", 0, "seed of the heads and of action sampling", 0, 2**31 - 1),
        ParamSpec("learn", True, "train online with PPO (false: evaluation, greedy actions)"),
        ParamSpec("normalize_features", True, "running mean/std normalization of the features"),
        ParamSpec("normalize_reward", True, "scale rewards by the running std of the discounted return"),
        ParamSpec("checkpoint_dir", "runs/agent/checkpoint", "checkpoint directory (written after every update)"),
        ParamSpec("resume", True, "resume from checkpoint_dir when a checkpoint is there"),
        ParamSpec("safe_action", "zero", "action on watchdog/invalid input: zero or hold the last",
                  choices=("zero", "hold")),
        ParamSpec("watchdog_periods", 3, "control periods without a fresh observation before the watchdog trips",
                  1, 1000),
        ParamSpec("ppo.num_steps", 2048, "rollout length (one stream)", 8, 1_000_000),
        ParamSpec("ppo.minibatch_size", 64, "PPO minibatch", 1, 1_000_000),
        ParamSpec("ppo.update_epochs", 4, "PPO epochs per update", 1, 100),
        ParamSpec("ppo.clip_coef", 0.1, "PPO clip range", 1e-6, 1.0),
        ParamSpec("ppo.ent_coef", 0.05, "entropy bonus", 0.0, 1.0),
        ParamSpec("ppo.vf_coef", 0.5, "value loss weight", 0.0, 100.0),
        ParamSpec("ppo.max_grad_norm", 0.5, "per-head gradient norm clip", 1e-6, 1000.0),
        ParamSpec("ppo.policy_lr", 3e-4, "Adam learning rate of the policy head", 1e-8, 1.0),
        ParamSpec("ppo.value_lr", 1e-3, "Adam learning rate of the value head", 1e-8, 1.0),
        ParamSpec("ppo.gamma", 0.99, "discount", 0.0, 1.0),
        ParamSpec("ppo.gae_lambda", 0.95, "GAE lambda", 0.0, 1.0),
    ],
    "bag_recorder": COMMON + [
        ParamSpec("path", "runs/bag", "bag directory to create (must not exist)"),
        ParamSpec("storage", "mcap", "rosbag2 storage plugin", choices=("mcap", "sqlite3")),
        ParamSpec("topics", ["observation", "serialized_state", "encoded_state", "action", "training_stats",
                             "/diagnostics"], "topics to record (relative names follow the namespace; "
                  "/clock may be added)"),
        ParamSpec("flush_interval_s", 1.0, "seconds between flushes to disk (what a crash can lose at most)",
                  0.01, 60.0),
    ],
    "bag_replay": COMMON + [
        ParamSpec("bag", "", "bag directory (or .mcap/.db3 file) to replay"),
        ParamSpec("rate", 1.0, "1.0: recorded rate; >1 faster; 0: stepped (next observation when the agent's "
                  "action for the current one arrives)", 0.0, 1000.0),
        ParamSpec("publish_clock", True, "publish /clock from the recorded observation stamps"),
        ParamSpec("mapping", "", "YAML topic mapping for foreign bags (empty: a bitrl bag)"),
        ParamSpec("topic", "observation", "observation topic in a bitrl bag"),
        ParamSpec("max_messages", 0, "stop after this many observations (0: all)", 0, 2**31 - 1),
        ParamSpec("action_timeout_s", 2.0, "stepped: wall time to wait for an action before moving on (counted)",
                  0.01, 3600.0),
        ParamSpec("min_subscribers", 1, "subscribers of `observation` to wait for before the first observation "
                  "(bitrl replay: the agent's three)", 1, 100),
        ParamSpec("start_delay_s", 15.0, "wait for those subscribers (and, stepped, an action publisher) at most "
                  "this long, then start anyway", 0.0, 600.0),
    ],
    "diagnostics_monitor": COMMON + [
        ParamSpec("publish_rate_hz", 1.0, "rate of /diagnostics", 0.1, 100.0),
        ParamSpec("hardware_id", "bitrl-agent", "hardware_id of the published statuses"),
        ParamSpec("rate_warn_hz", 38.0, "realtime: WARN when the achieved action rate falls below", 0.0, 1000.0),
        ParamSpec("latency_warn_ms", 20.0, "WARN when observation->action p50 latency exceeds", 0.0, 10000.0),
        ParamSpec("stale_after_s", 3.0, "STALE when a stage has published nothing for this long", 0.1, 3600.0),
        ParamSpec("window_s", 5.0, "sliding window of the rate, period-deviation and latency statistics",
                  0.5, 3600.0),
        ParamSpec("telemetry_root", "/", "file-system root the hardware probes read (/sys, /proc, vcgencmd)"),
        ParamSpec("board", "auto", "board for detection-dependent probes and the power estimate",
                  choices=("auto", "pi4", "pi5", "x86")),
        ParamSpec("power_source", "auto", "where board power comes from (auto: ina if configured, pmic, rapl, "
                  "else the CPU-utilisation estimate)", choices=("auto", "ina", "pmic", "rapl", "estimate", "none")),
        ParamSpec("ina_hwmon_name", "", "hwmon name (e.g. ina219) or directory of an INA power sensor; empty: none"),
        ParamSpec("vcgencmd_path", "", "vcgencmd binary; empty: <telemetry_root>/usr/bin/vcgencmd"),
        ParamSpec("vcgencmd_interval_s", 5.0, "seconds between vcgencmd throttle/clock queries", 0.5, 3600.0),
        ParamSpec("temp_warn_c", 70.0, "WARN when the CPU temperature reaches", 0.0, 150.0),
        ParamSpec("temp_error_c", 80.0, "ERROR when the CPU temperature reaches", 0.0, 150.0),
        ParamSpec("throttle_warn_since_boot", True, "WARN also for throttle bits that only record a past event "
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
        raise ConfigError(f"{node}: invalid parameter 'env' = {out['env']!r} (allowed: {' | '.join(_envs())})")
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
