"""Environment registry and reproducible env construction."""

from bitrl_ros.envs.registry import (
    EnvSpec,
    EPISODE_KEY,
    FINAL_INFO_KEY,
    FINAL_OBS_KEY,
    get_spec,
    list_envs,
    make_env,
    make_vec_env,
    NUMERIC_FAMILIES,
)

__all__ = [
    "EPISODE_KEY",
    "FINAL_INFO_KEY",
    "FINAL_OBS_KEY",
    "EnvSpec",
    "get_spec",
    "list_envs",
    "make_env",
    "make_vec_env",
    "NUMERIC_FAMILIES",
]
