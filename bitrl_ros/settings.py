"""Every setting declared once: name, default, description and allowed values.

`bitrl train` (config/train.yaml, `bitrl_ros.config`), `PPOConfig` (`bitrl_ros.rl.config`) and the nodes'
parameter schemas (`bitrl_ros.params`, config/agent.yaml) are all derived from the declarations here, so a
default or a range cannot differ between them, and every refusal reads the same:
``<where>: invalid value for '<key>' = <value> (allowed: <range>)``.

Nothing here imports torch, rclpy or gymnasium.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
import math
import re
from typing import Any, Callable

from bitrl_ros.errors import ConfigError

# PyYAML reads YAML 1.1, where "1e-3" (no dot in the mantissa) is a string, not a float.
_YAML11_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")

# -- the choices, defined once ------------------------------------------------------------------------------------
FORMATS = ("compact", "structured", "natural")
NUMBER_SCHEMES = ("fixed", "scaled", "digits")
POOLINGS = ("mean", "cls", "last")                  # one pooled vector per state
FIELD_READOUTS = ("fields", "fields_proj")          # one vector per observation field
READOUTS = POOLINGS + FIELD_READOUTS
TRAINABLE_READOUTS = ("fields_proj",)               # readouts with trainable parameters inside the heads
FIELD_CONTEXTS = ("state", "field")  # per-field readouts: a field read within the whole state text, or on its own
ENGINES = ("auto", "torch", "native")
EXECUTORS = ("events", "multi", "single")         # how an in-process graph spins (nodes.base.make_executor)
DEFAULT_BACKBONE = "minilm-bitnet-distilled"


@dataclass(frozen=True)
class Setting:
    """One setting. Numeric ranges are closed unless low_open / high_open; None bounds are unbounded.
    nullable: None is allowed too (written null in YAML). check: an extra test of the value (returns an error
    text or None) for what a range cannot say.
    """

    name: str
    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    nullable: bool = False
    kind: type | None = None          # default: type(default)
    extra_check: Callable[[Any], str | None] | None = None
    allowed_text: str | None = None   # shown instead of the derived range when extra_check decides

    @property
    def type(self) -> type:  # noqa: A003 - the public name of the setting's value type
        return self.kind if self.kind is not None else type(self.default)

    def allowed(self) -> str:
        if self.allowed_text:
            text = self.allowed_text
        elif self.choices is not None:
            text = " | ".join(str(c) for c in self.choices)
        elif self.type is bool:
            text = "true | false"
        elif self.low is not None and self.high is None and self.type is int and not self.low_open:
            text = f"int >= {self._number(self.low)}"
        elif self.low is not None or self.high is not None:
            lo = "-inf" if self.low is None else self._number(self.low)
            hi = "inf" if self.high is None else self._number(self.high)
            text = (f"{self.type.__name__} in {'(' if self.low_open or self.low is None else '['}{lo}, "
                    f"{hi}{')' if self.high_open or self.high is None else ']'}")
        else:
            text = self.type.__name__
        return text + (" or null" if self.nullable else "")

    def _number(self, x) -> str:
        return str(int(x)) if self.type is int else f"{x:g}"

    def refuse(self, value: Any, where: str, key: str | None = None) -> ConfigError:
        return ConfigError(f"{where}: invalid value for '{key or self.name}' = {value!r} (allowed: {self.allowed()})")

    def check(self, value: Any, where: str, key: str | None = None) -> Any:
        """The value (an int widened to float where the setting is a float), or ConfigError."""
        if value is None:
            if self.nullable:
                return None
            raise self.refuse(value, where, key)
        kind = self.type
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is float and isinstance(value, str) and _YAML11_EXPONENT.fullmatch(value):
            value = float(value)
        ok = type(value) is kind or self.extra_check is not None  # extra_check then decides the type too
        if ok and kind is float and math.isnan(value):
            ok = False
        if ok and self.choices is not None:
            ok = value in self.choices
        if ok and kind in (int, float):
            ok = not ((self.low is not None and (value <= self.low if self.low_open else value < self.low))
                      or (self.high is not None and (value >= self.high if self.high_open else value > self.high)))
        if ok and self.extra_check is not None:
            ok = self.extra_check(value) is None
        if not ok:
            raise self.refuse(value, where, key)
        return value

    def renamed(self, name: str, **changes) -> "Setting":
        return dataclasses.replace(self, name=name, **changes)

    def as_ros_parameter(self, name: str | None = None, **changes) -> "Setting":
        """The setting as a node parameter, which cannot be null: a nullable int becomes -1 for null (its low
        bound must be >= 0), a nullable string "" for null.
        """
        s = dataclasses.replace(self, name=name or self.name, **changes)
        if not s.nullable:
            return s
        if s.type is int:
            return dataclasses.replace(s, nullable=False, default=-1 if s.default is None else s.default, low=-1,
                                       description=s.description + "; -1: null")
        if s.type is str:
            return dataclasses.replace(s, nullable=False, default="" if s.default is None else s.default,
                                       choices=None if s.choices is None else ("",) + tuple(s.choices),
                                       description=s.description + '; "": null')
        raise ValueError(f"setting {s.name!r}: no null value for a {s.type.__name__} node parameter")


def by_name(settings) -> dict[str, Setting]:
    return {s.name: s for s in settings}


def config_class(name: str, settings, module: str, bases: tuple = (), extra_fields: tuple = ()) -> type:
    """A dataclass with one field per setting and its declared default (a list default is copied per instance),
    then extra_fields ((name, type, dataclasses.field) tuples, e.g. nested sections).
    """
    def field_of(s: Setting):
        if isinstance(s.default, (list, dict)):
            return dataclasses.field(default_factory=lambda d=s.default: type(d)(d))
        return dataclasses.field(default=s.default)

    cls = dataclasses.make_dataclass(name, [(s.name, Any, field_of(s)) for s in settings] + list(extra_fields),
                                     bases=bases)
    cls.__module__ = module
    return cls


def _positive_int_list(value) -> str | None:
    if (not isinstance(value, (list, tuple)) or not value
            or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in value)):
        return "not a non-empty list of integers >= 1"
    return None


# -- PPO (train.ppo in config/train.yaml; ppo.* of the policy_value node) -----------------------------------------
ACTING_PRECISIONS = ("fp32", "nvfp4")
PPO = (
    Setting("clip_coef", 0.1, "PPO clip range", 0.0, 1.0, low_open=True, high_open=True),
    # 0.01 by measurement (text-only CartPole solves in 5 of 5 seeds instead of 0 of 5, bench/README.md); the
    # paper's stability-tuned value is 0.05 (--set ppo.ent_coef=0.05).
    Setting("ent_coef", 0.01, "entropy bonus", 0.0, 1.0),
    Setting("vf_coef", 0.5, "value loss weight", 0.0, 100.0),
    Setting("max_grad_norm", 0.5, "per-head gradient norm clip", 0.0, 1000.0, low_open=True),
    Setting("policy_lr", 3e-4, "Adam learning rate of the policy head", 0.0, 1.0, low_open=True),
    Setting("value_lr", 1e-3, "Adam learning rate of the value head", 0.0, 1.0, low_open=True),
    Setting("num_envs", 8, "parallel environments (`bitrl train`; a node learns from one stream)", 1, 4096),
    Setting("num_steps", 256, "rollout length per environment (rollout = num_envs * num_steps)", 1, 1_000_000),
    Setting("gae_lambda", 0.95, "GAE lambda", 0.0, 1.0),
    Setting("gamma", 0.99, "discount", 0.0, 1.0, low_open=True),
    Setting("update_epochs", 4, "PPO epochs per update", 1, 100),
    Setting("minibatch_size", 64, "PPO minibatch (at most num_envs * num_steps)", 1, 1_000_000),
    Setting("norm_adv", True, "normalize advantages per minibatch"),
    Setting("clip_vloss", False, "clip the value loss like the policy ratio"),
    Setting("target_kl", None, "stop an update's epochs early above this approx-KL", 0.0, None, low_open=True,
            nullable=True, kind=float),
    # Off by default; bench/README.md ("Adaptive policy learning rate") has what it does per task.
    Setting("adapt_kl", None, "adapt the policy learning rate to this approx-KL per update (x1.5 below half of "
            "it, /1.5 above twice it, within policy_lr / 10 .. policy_lr * 10); null: a fixed rate", 0.0, None,
            low_open=True, nullable=True, kind=float),
    Setting("anneal_lr", False, "anneal the learning rates linearly to 0 over total_timesteps"),
    Setting("total_timesteps", None, "steps the learning rates anneal over (needed only for anneal_lr)", 1, None,
            nullable=True, kind=int),
    Setting("adam_eps", 1e-5, "Adam epsilon", 0.0, 1.0, low_open=True),
    # -1.0 (std 0.37) by measurement: HalfCheetah's text agent and mlp both learn several times faster than from
    # std 1 (0.0, the default before), bench/README.md "Starting action noise". Box actions only.
    Setting("init_log_std", -1.0, "starting log std of the Gaussian policy (Box actions)", -5.0, 2.0),
    Setting("hidden_sizes", [256, 128], "hidden widths of each head's MLP", kind=list,
            extra_check=_positive_int_list, allowed_text="a non-empty list of integers >= 1"),
    Setting("acting_precision", "fp32", "weights the policy acts with: fp32, or nvfp4 (QeRL's rollout idea: an "
            "NVFP4 copy of the policy head's weight matrices, refreshed after every update, while PPO updates the "
            "fp32 masters)", choices=ACTING_PRECISIONS),
)
# The PPO settings a policy_value node exposes as `ppo.<name>` (it learns from one stream: num_envs = 1).
NODE_PPO = ("num_steps", "minibatch_size", "update_epochs", "clip_coef", "ent_coef", "vf_coef", "max_grad_norm",
            "policy_lr", "value_lr", "gamma", "gae_lambda", "init_log_std", "acting_precision")
NODE_PPO_DEFAULTS = {"num_steps": 2048}  # one stream: the same 2048-step rollout as train's 8 x 256

# -- train.serializer ---------------------------------------------------------------------------------------------
SERIALIZER = (
    Setting("format", "compact", "serializer format", choices=FORMATS),
    Setting("numbers", "fixed", "number scheme of the serializer (fixed decimals | fitted per-field scales | "
            "digit by digit)", choices=NUMBER_SCHEMES),
    Setting("precision", None, "decimals of the fixed/digits schemes (null: the env's default)", 0, 6,
            nullable=True, kind=int),
)

# -- train.features -----------------------------------------------------------------------------------------------
FEATURES = (
    # Defaults chosen by measurement (bench/README.md); the paper's recipe is readout=mean, balance=false.
    Setting("readout", "fields_proj", "backbone readout: pooled (mean|cls|last) or per field (fields; fields_proj "
            "adds a trainable projection in the heads)", choices=READOUTS),
    Setting("pooling", None, "the old name of readout, for mean | cls | last", choices=POOLINGS, nullable=True,
            kind=str),
    Setting("proj_dim", 16, "fields_proj: trainable dims per field", 1, 256),
    Setting("context", "field", "per-field readouts: read each field's tokens in the context of the whole state "
            "text (state), or encode each field on its own (field: no attention across fields, and a field value "
            "seen before is one cache lookup whatever the other fields say); pooled readouts read the whole text",
            choices=FIELD_CONTEXTS),
    Setting("balance", True, "scale the normalized backbone features to the raw observation's total variance "
            "(keeps PPO updates of high-dimensional features as small as on raw numbers)"),
    Setting("raw_skip", False, "append the raw observation to the backbone features (hybrid)"),
    Setting("cache_mb", 32.0, "embedding cache budget in MiB: an LRU cache that never holds more, and switches "
            "itself off where its hit rate does not pay (0 disables)", 0.0, 4096.0),
    Setting("max_tokens", 64, "token budget; longer texts are truncated and counted", 4, 512),
    Setting("engine", "auto", "inference engine (auto: native when built and the backbone is ternary)",
            choices=ENGINES),
)
# The feature settings the serializer, encoder and policy nodes must agree on (set under `/**` in agent.yaml).
SHARED_FEATURES = ("readout", "context", "proj_dim", "balance", "raw_skip")

# -- train.normalize ----------------------------------------------------------------------------------------------
NORMALIZE = (
    Setting("features", True, "running mean/std normalization of the feature vector fed to the heads"),
    Setting("reward", True, "scale rewards by the running std of the discounted return"),
)

# -- train.guard: glitch bounds on observations and rewards (rl/guard.py) ------------------------------------------
GLITCH_POLICIES = ("reject", "clip", "off")
GUARD = (
    Setting("policy", "reject", "a value out of its bounds: reject (the last good observation / reward 0 is used "
            "instead), clip (to the bound) or off (used as it is); counted in every case", choices=GLITCH_POLICIES),
    Setting("reward_bound", 1000.0, "|reward| above this is a glitch", 0.0, None, low_open=True),
    Setting("obs_bound_factor", 100.0, "where the env's observation space is unbounded, a field beyond this many "
            "times its fitted scale (serialize/field_scales.json) is a glitch", 1.0, None),
)

# -- train.aqn: adaptive quantization noise (QeRL) on the encoder's normalization gains (backbone/noise.py) -------
AQN = (
    Setting("enabled", False, "Gaussian noise on the policy backbone's normalization gains while collecting "
            "rollouts, resampled per rollout (evaluation and the ROS graph never add it)"),
    Setting("stages", 10, "training split into this many equal stages: none in the first, then sigma decays "
            "geometrically from sigma_start to sigma_end", 2, 1000),
    Setting("sigma_start", 1.0e-2, "noise std of the second stage", 0.0, 1.0, low_open=True),
    Setting("sigma_end", 1.0e-4, "noise std of the last stage (<= sigma_start)", 0.0, 1.0, low_open=True),
)

# -- train (top level) --------------------------------------------------------------------------------------------
SEED = Setting("seed", 0, "seed of the environments, the heads and action sampling", 0, 2**31 - 1)
BACKBONE = Setting("backbone", DEFAULT_BACKBONE, "backbone id (bitrl backbones) or a model directory; mlp: the "
                   "raw-observation baseline")
CRITIC_BACKBONE = Setting("critic_backbone", None, "the hybrid critic: the value head reads this backbone's "
                          "features (same readout and tokenizer) while the policy reads backbone's, e.g. minilm-int8 "
                          "(the paper's INT8 critic); null: both heads read backbone's", nullable=True, kind=str)
ENV = Setting("env", "CartPole-v1", "registered environment id (bitrl envs)")
TRAIN = (
    ENV,
    BACKBONE,
    CRITIC_BACKBONE,
    SEED,
    Setting("total_steps", 150000, "environment steps to train", 1, None),
    Setting("torch_threads", 1, "torch intra-op threads of the training process", 1, 256),
    Setting("run_dir", "runs", "folder of the runs (checkpoint, metrics, plots)"),
    Setting("eval_episodes", 10, "greedy evaluation episodes after training", 0, 10000),
    Setting("eval_env", None, "env of the greedy evaluation (null: the training env), e.g. SmartHome-Light-Heldout-v0 "
            "for instructions training never saw", nullable=True, kind=str),
)
