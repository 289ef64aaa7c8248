"""The BabyAI env as the package builds it: minigrid's env behind `MissionObservation` (layout: babyai.py)."""
from __future__ import annotations

import contextlib
import io

import gymnasium as gym
import numpy as np

from bitrl_ros.envs.babyai import DIRECTIONS, flatten, MAX_INDEX, VIEW


class MissionObservation(gym.ObservationWrapper):
    """minigrid dict observation -> flat float32 values; the mission goes to info["mission"]."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        high = np.concatenate([np.tile(MAX_INDEX, VIEW * VIEW), [len(DIRECTIONS) - 1]]).astype(np.float32)
        self.observation_space = gym.spaces.Box(np.zeros_like(high), high, dtype=np.float32)
        self._mission = ""

    def observation(self, observation):
        self._mission = str(observation["mission"])
        return flatten(observation)

    def reset(self, **kwargs):
        with contextlib.redirect_stdout(io.StringIO()):  # minigrid prints each rejected layout sample
            obs, info = super().reset(**kwargs)
        return obs, {**info, "mission": self._mission}

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        info = {**info, "mission": self._mission}
        if terminated or truncated:
            info["success"] = bool(reward > 0)  # BabyAI pays only on success
        return obs, reward, terminated, truncated, info


def make(env_id: str) -> gym.Env:
    import minigrid  # noqa: F401  (registers the BabyAI ids)

    return MissionObservation(gym.make(env_id))
