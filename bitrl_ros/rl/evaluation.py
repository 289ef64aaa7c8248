"""Greedy evaluation of a trained agent: the one implementation behind `bitrl train`'s final evaluation,
`bitrl bench edge` and the tests.
"""
from __future__ import annotations

from dataclasses import dataclass
import time
from typing import Callable

import numpy as np

from bitrl_ros.rl.heads import clip_action

RETURN_WINDOW = 20  # "mean return" everywhere: the mean over the last RETURN_WINDOW episodes


@dataclass
class Evaluation:
    returns: list[float]
    lengths: list[int]
    wall_s: float

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns)) if self.returns else float("nan")

    @property
    def mean_length(self) -> float:
        return float(np.mean(self.lengths)) if self.lengths else float("nan")

    @property
    def steps_per_s(self) -> float:
        return sum(self.lengths) / max(self.wall_s, 1e-9)


def evaluate_policy(env_id: str, features: Callable[[np.ndarray], np.ndarray], learner, episodes: int,
                    seed: int) -> Evaluation:
    """Run `episodes` episodes of the deterministic policy on one fresh env, reset with `seed` first and
    continuing from its RNG after that. features: raw observations [N, obs_dim] -> raw feature vectors (a
    StateEncoder); the learner's normalizer statistics stay frozen and nothing is recorded or learned.
    """
    from bitrl_ros.envs import make_env

    env = make_env(env_id, seed)
    returns, lengths = [], []
    t0 = time.perf_counter()
    try:
        obs, _ = env.reset(seed=seed)
        total, steps = 0.0, 0
        while len(returns) < episodes:
            x = learner.normalize(features(np.asarray(obs)[None]), update=False)
            action = learner.act(x, deterministic=True, learn=False)[0]
            action = clip_action(action, env.action_space)[0] if hasattr(env.action_space, "low") else int(action[0])
            obs, reward, terminated, truncated, _ = env.step(action)
            total, steps = total + float(reward), steps + 1
            if terminated or truncated:
                returns.append(total)
                lengths.append(steps)
                total, steps = 0.0, 0
                obs, _ = env.reset()
    finally:
        env.close()
    return Evaluation(returns, lengths, time.perf_counter() - t0)
