"""Fixed-size rollout storage for PPO, on features rather than raw observations.

Truncation contract (SB3 style, stored separately until GAE): at every step the trainer passes
`terminated` and `truncated` per env, plus `bootstrap_values` = V(features of the final observation) for envs
whose episode was truncated at that step (any value elsewhere; it is masked out). The buffer keeps them apart
and `gae_rewards(gamma)` returns rewards + gamma * bootstrap for truncated-not-terminated steps, while
`dones = terminated | truncated` stops GAE from bootstrapping across any episode end.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class RolloutBuffer:
    @classmethod
    def for_space(cls, config, feature_dim: int, action_space) -> RolloutBuffer:
        """A buffer of config.num_steps x config.num_envs for the actions of action_space (Discrete or Box)."""
        if isinstance(action_space, gym.spaces.Discrete):
            shape, dtype = (), np.int64
        else:
            shape, dtype = tuple(action_space.shape), np.float32
        return cls(config.num_steps, config.num_envs, feature_dim, shape, dtype)

    def __init__(self, num_steps: int, num_envs: int, feature_dim: int, action_shape=(), action_dtype=np.int64):
        self.num_steps, self.num_envs, self.feature_dim = num_steps, num_envs, feature_dim
        self.action_shape = tuple(action_shape)
        self.action_dtype = np.dtype(action_dtype)
        shape = (num_steps, num_envs)
        self.features = np.zeros(shape + (feature_dim,), dtype=np.float32)
        self.actions = np.zeros(shape + self.action_shape, dtype=self.action_dtype)
        self.log_probs = np.zeros(shape, dtype=np.float32)
        self.values = np.zeros(shape, dtype=np.float32)
        self.rewards = np.zeros(shape, dtype=np.float32)
        self.terminated = np.zeros(shape, dtype=bool)
        self.truncated = np.zeros(shape, dtype=bool)
        self.bootstrap_values = np.zeros(shape, dtype=np.float32)
        self.step = 0

    def reset(self) -> None:
        """Start a new rollout; old contents are overwritten by the next adds."""
        self.step = 0

    @property
    def full(self) -> bool:
        return self.step == self.num_steps

    def add(self, features, actions, log_probs, values, rewards, terminated, truncated, bootstrap_values=None):
        """Store one vector-env step: all arguments are [N, ...] arrays for the transition from features."""
        if self.full:
            raise RuntimeError(f"RolloutBuffer is full ({self.num_steps} steps); call reset() first")
        t = self.step
        self.features[t] = features
        self.actions[t] = np.asarray(actions).reshape((self.num_envs,) + self.action_shape)
        self.log_probs[t] = log_probs
        self.values[t] = values
        self.rewards[t] = rewards
        self.terminated[t] = terminated
        self.truncated[t] = truncated
        cut = self.truncated[t] & ~self.terminated[t]
        if cut.any() and bootstrap_values is None:
            raise ValueError("bootstrap_values (V of the final observation) is required when an episode is truncated")
        boot = 0.0 if bootstrap_values is None else np.asarray(bootstrap_values, dtype=np.float32)
        self.bootstrap_values[t] = np.where(cut, boot, 0.0)
        self.step += 1

    @property
    def dones(self) -> np.ndarray:
        return self.terminated | self.truncated

    def gae_rewards(self, gamma: float) -> np.ndarray:
        """Rewards with gamma * V(final_obs) added at truncated (not terminated) steps."""
        return self.rewards + gamma * self.bootstrap_values

    def minibatches(self, batch_size: int, generator=None):
        """Yield LongTensor index batches into the flattened [T * N] rollout, in a shuffled order (generator: a
        torch.Generator; torch is imported here, so that the acting process can fill a buffer without it).
        """
        import torch

        total = self.num_steps * self.num_envs
        order = torch.randperm(total, generator=generator)
        for start in range(0, total, batch_size):
            yield order[start:start + batch_size]
