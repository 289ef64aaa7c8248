"""PPO hyperparameters: one field per setting of `bitrl_ros.settings.PPO` (defaults and ranges live there)."""

import dataclasses

from bitrl_ros import settings
from bitrl_ros.errors import ConfigError

_SETTINGS = settings.by_name(settings.PPO)
WHERE = "PPO config"


class _PPOConfigMethods:
    def __post_init__(self):
        self.validate()
        self.hidden_sizes = tuple(self.hidden_sizes)  # a list from YAML / state.json

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @classmethod
    def from_dict(cls, d: dict) -> "PPOConfig":
        for key in d:
            if key not in _SETTINGS:
                raise ConfigError(f"unknown PPO config key '{key}' (known keys: {', '.join(sorted(_SETTINGS))})")
        return cls(**d)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        return d

    def validate(self) -> None:
        for name, setting in _SETTINGS.items():
            setattr(self, name, setting.check(getattr(self, name), WHERE))
        if self.minibatch_size > self.batch_size:
            raise ConfigError(f"{WHERE}: invalid value for 'minibatch_size' = {self.minibatch_size!r} (allowed: "
                              f"[1, num_steps * num_envs = {self.batch_size}])")
        if self.total_timesteps is not None and self.total_timesteps < self.batch_size:
            raise ConfigError(f"{WHERE}: invalid value for 'total_timesteps' = {self.total_timesteps!r} (allowed: "
                              f"an integer >= num_steps * num_envs = {self.batch_size})")
        if self.anneal_lr and self.total_timesteps is None:
            raise ConfigError(f"{WHERE}: 'anneal_lr' = True needs 'total_timesteps' (an integer >= "
                              f"num_steps * num_envs = {self.batch_size})")


PPOConfig = settings.config_class("PPOConfig", settings.PPO, __name__, bases=(_PPOConfigMethods,))
