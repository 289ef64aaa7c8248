"""Faults a real sensor has, as gymnasium wrappers: for the benchmarks and tests of what learning survives."""
from __future__ import annotations

import gymnasium as gym
import numpy as np


class SensorGlitch(gym.Wrapper):
    """Every `every`-th step (counted over the env's whole life, deterministic) the observation is `obs_value`
    in every field and the reward `reward_value`: a well-formed but absurd reading, e.g. a glitching encoder.
    """

    def __init__(self, env: gym.Env, every: int = 500, obs_value: float = 1e30, reward_value: float = 1e38):
        super().__init__(env)
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every, self.obs_value, self.reward_value = every, obs_value, reward_value
        self.steps = 0
        self.glitches = 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        if self.steps % self.every == 0:
            self.glitches += 1
            obs = np.full_like(np.asarray(obs), self.obs_value)
            reward = self.reward_value
        return obs, reward, terminated, truncated, info
