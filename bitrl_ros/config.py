"""Training configuration: YAML -> validated dataclasses. Every error names the file, key, value and range."""
from __future__ import annotations

import copy
from dataclasses import asdict, field
import json
from pathlib import Path
from typing import Any

import yaml

from bitrl_ros import settings
from bitrl_ros.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "train.yaml"

SerializerConfig = settings.config_class("SerializerConfig", settings.SERIALIZER, __name__)
FeatureConfig = settings.config_class("FeatureConfig", settings.FEATURES, __name__)
NormalizeConfig = settings.config_class("NormalizeConfig", settings.NORMALIZE, __name__)
GuardConfig = settings.config_class("GuardConfig", settings.GUARD, __name__)
AqnConfig = settings.config_class("AqnConfig", settings.AQN, __name__)
_SECTIONS = {"serializer": (SerializerConfig, settings.SERIALIZER), "features": (FeatureConfig, settings.FEATURES),
             "normalize": (NormalizeConfig, settings.NORMALIZE), "guard": (GuardConfig, settings.GUARD),
             "aqn": (AqnConfig, settings.AQN)}


class _TrainConfigMethods:
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The top-level settings (settings.TRAIN), then the sections; `ppo` stays a dict that PPOConfig checks.
TrainConfig = settings.config_class(
    "TrainConfig", settings.TRAIN, __name__, bases=(_TrainConfigMethods,),
    extra_fields=tuple((section, Any, field(default_factory=cls)) for section, (cls, _) in _SECTIONS.items())
    + (("ppo", dict, field(default_factory=dict)),))


def _refuse(where: str, key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{where}: invalid value for '{key}' = {value!r} (allowed: {allowed})")


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


def _check_eval_env(cfg: TrainConfig, where: str) -> None:
    """The evaluation env must look like the training env to the agent (same fields, actions and mission words)."""
    from bitrl_ros.envs import get_spec, list_envs

    if cfg.eval_env not in list_envs():
        raise _refuse(where, "train.eval_env", cfg.eval_env, " | ".join(list_envs()) + " | null")
    train, test = get_spec(cfg.env), get_spec(cfg.eval_env)
    if (train.field_names, train.action_kind, train.mission_words, train.family) != \
            (test.field_names, test.action_kind, test.mission_words, test.family):
        raise _refuse(where, "train.eval_env", cfg.eval_env, f"an env with {cfg.env}'s observation, actions and "
                      "mission vocabulary (e.g. its held-out split), or null")


def validate(cfg: TrainConfig, where: str = "config") -> TrainConfig:
    from bitrl_ros.backbone import available_backbones
    from bitrl_ros.envs import list_envs
    from bitrl_ros.rl.ppo import PPOConfig

    if not isinstance(cfg.env, str) or cfg.env not in list_envs():
        raise _refuse(where, "train.env", cfg.env, " | ".join(list_envs()))
    if not isinstance(cfg.backbone, str) or not (
        cfg.backbone in available_backbones() or Path(cfg.backbone).is_dir()
    ):
        raise _refuse(where, "train.backbone", cfg.backbone,
                      " | ".join(available_backbones()) + " | a model directory")
    if cfg.critic_backbone is not None and not (
        isinstance(cfg.critic_backbone, str) and cfg.critic_backbone != "mlp"
        and (cfg.critic_backbone in available_backbones() or Path(cfg.critic_backbone).is_dir())
    ):
        raise _refuse(where, "train.critic_backbone", cfg.critic_backbone,
                      " | ".join(b for b in available_backbones() if b != "mlp") + " | a model directory | null")
    if cfg.critic_backbone is not None and cfg.backbone == "mlp":
        raise _refuse(where, "train.critic_backbone", cfg.critic_backbone,
                      "null with backbone mlp (a critic backbone reads the policy backbone's text)")
    for s in settings.TRAIN:
        if s.name not in ("env", "backbone", "critic_backbone"):
            setattr(cfg, s.name, s.check(getattr(cfg, s.name), where, f"train.{s.name}"))
    if not cfg.run_dir:
        raise _refuse(where, "train.run_dir", cfg.run_dir, "a non-empty path")
    if cfg.eval_env is not None:
        _check_eval_env(cfg, where)
    for section, (_, declared) in _SECTIONS.items():
        values = getattr(cfg, section)
        for s in declared:
            setattr(values, s.name, s.check(getattr(values, s.name), where, f"train.{section}.{s.name}"))
    if cfg.serializer.numbers == "scaled" and cfg.serializer.precision is not None:
        raise _refuse(where, "train.serializer.precision", cfg.serializer.precision,
                      "null with numbers: scaled (the fitted field scales set the resolution)")
    if cfg.aqn.sigma_end > cfg.aqn.sigma_start:
        raise _refuse(where, "train.aqn.sigma_end", cfg.aqn.sigma_end, f"(0, sigma_start = {cfg.aqn.sigma_start}]")
    if cfg.aqn.enabled and cfg.backbone == "mlp":
        raise _refuse(where, "train.aqn.enabled", True, "false with backbone mlp (no encoder to perturb)")
    if cfg.features.pooling is not None:
        cfg.features.readout = cfg.features.pooling  # the alias wins: it was set explicitly
        cfg.features.pooling = None
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
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
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


def _apply_overrides(section: dict, overrides: dict[str, Any] | None) -> None:
    for dotted, value in (overrides or {}).items():
        node = section
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value


def load_train_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read the `train` section of a YAML file, apply dotted-key overrides, validate."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    data = read_yaml(path)
    section = copy.deepcopy(data.get("train", {}))
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: 'train' must be a mapping")
    _apply_overrides(section, overrides)
    return train_config_from_section(section, str(path))


# What a resume may change: the budget and how the run is computed, never what it learns from or how.
RESUMABLE = ("total_steps", "torch_threads", "eval_episodes", "eval_env", "run_dir", "features.engine",
             "features.cache_mb")
RUN_CONFIG = "config.json"


def load_run_config(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The configuration a run was started with (its config.json), for `bitrl train --resume`. An override of a
    RESUMABLE key is applied; any other override must equal the run's value, or it is refused.
    """
    path = Path(run_dir) / RUN_CONFIG
    try:
        recorded = json.loads(path.read_text())
        section, resolved_ppo = recorded["train"], recorded.get("ppo_resolved", {})
        if not isinstance(section, dict) or not isinstance(resolved_ppo, dict):
            raise TypeError("'train' and 'ppo_resolved' must be mappings")
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing; --resume needs the run folder of a `bitrl train` run") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: unreadable run configuration ({type(exc).__name__}: {exc})") from None
    section = copy.deepcopy(section)
    # Runs from before features.context existed read each field within the state text.
    if isinstance(section.get("features"), dict):
        section["features"].setdefault("context", "state")
    for dotted, value in (overrides or {}).items():
        if dotted in RESUMABLE:
            continue
        if dotted == "features.pooling":
            dotted = "features.readout"
        node = {**section, "ppo": {**resolved_ppo, **section.get("ppo", {})}}
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node != value:
            raise ConfigError(f"{path}: this run was trained with {dotted} = {node!r}; a resume cannot change it to "
                              f"{value!r} (leave it out to keep the run's value, or start a new run)")
    _apply_overrides(section, {k: v for k, v in (overrides or {}).items() if k in RESUMABLE})
    # Every PPO setting as the run resolved it, so a default changed since cannot change a resumed run.
    section["ppo"] = {**resolved_ppo, **(section.get("ppo") or {})}
    return train_config_from_section(section, str(path))


def train_config_from_section(section: dict, where: str) -> TrainConfig:
    """A validated TrainConfig from the `train` mapping (YAML or a run's config.json); `where` names the source."""
    section = dict(section)
    known = set(TrainConfig.__dataclass_fields__)
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key 'train.{unknown[0]}' (known keys: {', '.join(sorted(known))})")
    nested = {name: _build(cls, section.pop(name, None), where, f"train.{name}.")
              for name, (cls, _) in _SECTIONS.items()}
    ppo = section.pop("ppo", None) or {}
    if not isinstance(ppo, dict):
        raise _refuse(where, "train.ppo", ppo, "a mapping")
    cfg = TrainConfig(**section, **nested, ppo=ppo)
    return validate(cfg, where)
