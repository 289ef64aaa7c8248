"""Training configuration: YAML -> validated dataclasses. Every error names the file, key, value and range."""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bitrl_ros.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "train.yaml"

SERIALIZER_FORMATS = ("compact", "structured", "natural")
NUMBER_SCHEMES = ("fixed", "scaled", "digits")
POOLINGS = ("mean", "cls", "last")
READOUTS = ("mean", "cls", "last", "fields", "fields_proj")


@dataclass
class SerializerConfig:
    format: str = "compact"
    numbers: str = "fixed"
    precision: int | None = None


@dataclass
class FeatureConfig:
    readout: str = "fields_proj"  # chosen by measurement (bench/README.md); the paper's recipe is "mean"
    pooling: str | None = None  # the old name of readout, for mean | cls | last
    proj_dim: int = 16          # fields_proj: trainable dims per field
    balance: bool = True        # scale the backbone block to the raw observation's total variance
    raw_skip: bool = False
    cache_size: int = 65536
    max_tokens: int = 64
    engine: str = "auto"  # auto | torch | native (see bitrl_ros.backbone.engines)


@dataclass
class NormalizeConfig:
    features: bool = True
    reward: bool = True


@dataclass
class TrainConfig:
    env: str = "CartPole-v1"
    backbone: str = "minilm-bitnet-distilled"
    seed: int = 0
    total_steps: int = 150000
    torch_threads: int = 1
    run_dir: str = "runs"
    eval_episodes: int = 10
    serializer: SerializerConfig = field(default_factory=SerializerConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    ppo: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _refuse(where: str, key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{where}: invalid value for '{key}': {value!r} (allowed: {allowed})")


def _build(cls, data: Any, where: str, prefix: str):
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise _refuse(where, prefix.rstrip("."), data, "a mapping")
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{prefix}{unknown[0]}' (known keys: {', '.join(sorted(known))})")
    return cls(**data)


def _check_int(where, key, value, lo, hi=None, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        rng = f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}"
        raise _refuse(where, key, value, rng + (" or null" if allow_none else ""))


def _check_bool(where, key, value):
    if not isinstance(value, bool):
        raise _refuse(where, key, value, "true or false")


def _check_choice(where, key, value, choices):
    if value not in choices:
        raise _refuse(where, key, value, " | ".join(choices))


def validate(cfg: TrainConfig, where: str = "config") -> TrainConfig:
    from bitrl_ros.backbone import available_backbones
    from bitrl_ros.envs import list_envs
    from bitrl_ros.rl.ppo import PPOConfig

    if cfg.env not in list_envs():
        raise _refuse(where, "train.env", cfg.env, " | ".join(list_envs()))
    if not isinstance(cfg.backbone, str) or not (
        cfg.backbone in available_backbones() or Path(cfg.backbone).is_dir()
    ):
        raise _refuse(where, "train.backbone", cfg.backbone,
                      " | ".join(available_backbones()) + " | a model directory")
    _check_int(where, "train.seed", cfg.seed, 0, 2**31 - 1)
    _check_int(where, "train.total_steps", cfg.total_steps, 1)
    _check_int(where, "train.torch_threads", cfg.torch_threads, 1, 256)
    _check_int(where, "train.eval_episodes", cfg.eval_episodes, 0, 10000)
    if not isinstance(cfg.run_dir, str) or not cfg.run_dir:
        raise _refuse(where, "train.run_dir", cfg.run_dir, "a non-empty path")
    _check_choice(where, "train.serializer.format", cfg.serializer.format, SERIALIZER_FORMATS)
    _check_int(where, "train.serializer.precision", cfg.serializer.precision, 0, 6, allow_none=True)
    _check_choice(where, "train.serializer.numbers", cfg.serializer.numbers, NUMBER_SCHEMES)
    if cfg.serializer.numbers == "scaled" and cfg.serializer.precision is not None:
        raise _refuse(where, "train.serializer.precision", cfg.serializer.precision,
                      "null with numbers: scaled (the fitted field scales set the resolution)")
    _check_choice(where, "train.features.readout", cfg.features.readout, READOUTS)
    if cfg.features.pooling is not None:
        _check_choice(where, "train.features.pooling", cfg.features.pooling, POOLINGS)
        cfg.features.readout = cfg.features.pooling  # the alias wins: it was set explicitly
        cfg.features.pooling = None
    _check_int(where, "train.features.proj_dim", cfg.features.proj_dim, 1, 256)
    _check_bool(where, "train.features.raw_skip", cfg.features.raw_skip)
    _check_bool(where, "train.features.balance", cfg.features.balance)
    _check_int(where, "train.features.cache_size", cfg.features.cache_size, 0)
    _check_int(where, "train.features.max_tokens", cfg.features.max_tokens, 4, 512)
    _check_choice(where, "train.features.engine", cfg.features.engine, ("auto", "torch", "native"))
    _check_bool(where, "train.normalize.features", cfg.normalize.features)
    _check_bool(where, "train.normalize.reward", cfg.normalize.reward)
    try:
        PPOConfig.from_dict(cfg.ppo)
    except ConfigError as exc:
        raise ConfigError(f"{where}: train.ppo: {exc}") from None
    return cfg


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"config file {path} is not valid YAML{at}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping, got {type(data).__name__}")
    return data


def load_train_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read the `train` section of a YAML file, apply dotted-key overrides, validate."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    data = read_yaml(path)
    section = copy.deepcopy(data.get("train", {}))
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: 'train' must be a mapping")
    for dotted, value in (overrides or {}).items():
        node = section
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    where = str(path)
    known = set(TrainConfig.__dataclass_fields__)
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key 'train.{unknown[0]}' (known keys: {', '.join(sorted(known))})")
    nested = {
        "serializer": _build(SerializerConfig, section.pop("serializer", None), where, "train.serializer."),
        "features": _build(FeatureConfig, section.pop("features", None), where, "train.features."),
        "normalize": _build(NormalizeConfig, section.pop("normalize", None), where, "train.normalize."),
    }
    ppo = section.pop("ppo", None) or {}
    if not isinstance(ppo, dict):
        raise _refuse(where, "train.ppo", ppo, "a mapping")
    cfg = TrainConfig(**section, **nested, ppo=ppo)
    return validate(cfg, where)
