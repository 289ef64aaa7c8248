"""PPO hyperparameters with range checks that name the key, the value and the allowed range."""

import dataclasses
import math
from dataclasses import dataclass

from bitrl_ros.errors import ConfigError


@dataclass
class PPOConfig:
    clip_coef: float = 0.1
    ent_coef: float = 0.05
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    policy_lr: float = 3e-4
    value_lr: float = 1e-3
    num_envs: int = 8
    num_steps: int = 256  # per env: rollout = num_envs * num_steps = 2048
    gae_lambda: float = 0.95
    gamma: float = 0.99
    update_epochs: int = 4
    minibatch_size: int = 64
    norm_adv: bool = True
    clip_vloss: bool = False
    target_kl: float | None = None
    anneal_lr: bool = False
    total_timesteps: int | None = None  # needed only for anneal_lr
    adam_eps: float = 1e-5
    hidden_sizes: tuple = (256, 128)

    def __post_init__(self):
        if isinstance(self.hidden_sizes, list):  # from YAML / state.json
            self.hidden_sizes = tuple(self.hidden_sizes)
        self.validate()

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @classmethod
    def from_dict(cls, d: dict) -> "PPOConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        for key in d:
            if key not in known:
                raise ConfigError(f"unknown PPO config key '{key}' (known keys: {', '.join(sorted(known))})")
        return cls(**d)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        return d

    def validate(self) -> None:
        _number("clip_coef", self.clip_coef, 0, 1, "(0, 1)", low_open=True, high_open=True)
        _number("ent_coef", self.ent_coef, 0, math.inf, "[0, inf)")
        _number("vf_coef", self.vf_coef, 0, math.inf, "[0, inf)")
        _number("max_grad_norm", self.max_grad_norm, 0, math.inf, "(0, inf)", low_open=True)
        _number("policy_lr", self.policy_lr, 0, math.inf, "(0, inf)", low_open=True)
        _number("value_lr", self.value_lr, 0, math.inf, "(0, inf)", low_open=True)
        _integer("num_envs", self.num_envs, 1)
        _integer("num_steps", self.num_steps, 1)
        _number("gae_lambda", self.gae_lambda, 0, 1, "[0, 1]")
        _number("gamma", self.gamma, 0, 1, "(0, 1]", low_open=True)
        _integer("update_epochs", self.update_epochs, 1)
        _integer("minibatch_size", self.minibatch_size, 1)
        if self.minibatch_size > self.batch_size:
            raise ConfigError(f"PPO config 'minibatch_size' = {self.minibatch_size!r} is out of range: must be in "
                              f"[1, num_steps * num_envs = {self.batch_size}]")
        for key in ("norm_adv", "clip_vloss", "anneal_lr"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"PPO config '{key}' = {getattr(self, key)!r} must be true or false")
        if self.target_kl is not None:
            _number("target_kl", self.target_kl, 0, math.inf, "(0, inf) or null", low_open=True)
        if self.total_timesteps is not None:
            _integer("total_timesteps", self.total_timesteps, self.batch_size)
        if self.anneal_lr and self.total_timesteps is None:
            raise ConfigError("PPO config 'anneal_lr' = True needs 'total_timesteps' (an integer >= "
                              f"num_steps * num_envs = {self.batch_size})")
        _number("adam_eps", self.adam_eps, 0, math.inf, "(0, inf)", low_open=True)
        if (not isinstance(self.hidden_sizes, tuple) or not self.hidden_sizes
                or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in self.hidden_sizes)):
            raise ConfigError(f"PPO config 'hidden_sizes' = {self.hidden_sizes!r} must be a non-empty list of "
                              "integers >= 1")


def _number(key, value, low, high, shown, low_open=False, high_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"PPO config '{key}' = {value!r} must be a number in {shown}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        raise ConfigError(f"PPO config '{key}' = {value!r} is out of range: must be in {shown}")


def _integer(key, value, low):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"PPO config '{key}' = {value!r} is out of range: must be an integer >= {low}")
