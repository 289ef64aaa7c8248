"""Actions as the env takes them (numpy only, so that the nodes that act but never train need no torch)."""

import gymnasium as gym
import numpy as np


def clip_action(action: np.ndarray, space: gym.Space) -> np.ndarray:
    """Clip a continuous action to the Box bounds before stepping the env; other spaces pass through."""
    if isinstance(space, gym.spaces.Box):
        return np.clip(action, space.low, space.high).astype(space.dtype, copy=False)
    return action
