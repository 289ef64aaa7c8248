"""Greedy evaluation of a trained agent: the one implementation behind `bitrl train`'s final evaluation,
`bitrl bench edge` and the tests.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import time
from typing import Callable

import numpy as np

from bitrl_ros.rl.actions import clip_action

RETURN_WINDOW = 20  # "mean return" everywhere: the mean over the last RETURN_WINDOW episodes
SUCCESS_WINDOW = 100  # "success rate" of training: the last SUCCESS_WINDOW episodes (short episodes, a 0/1 each)


def success_rate(successes) -> float | None:
    """Share of successful episodes (None when there are none to count)."""
    return float(np.mean(successes)) if len(successes) else None


@dataclass
class Evaluation:
    returns: list[float]
    lengths: list[int]
    wall_s: float
    successes: list[bool] = field(default_factory=list)  # envs that report success (EnvSpec.reports_success)

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns)) if self.returns else float("nan")

    @property
    def mean_length(self) -> float:
        return float(np.mean(self.lengths)) if self.lengths else float("nan")

    @property
    def success_rate(self) -> float | None:
        return success_rate(self.successes)

    @property
    def steps_per_s(self) -> float:
        return sum(self.lengths) / max(self.wall_s, 1e-9)


def evaluate_policy(env_id: str, features: Callable[[np.ndarray], np.ndarray], learner, episodes: int,
                    seed: int) -> Evaluation:
    """Run `episodes` episodes of the deterministic policy on one fresh env, reset with `seed` first and
    continuing from its RNG after that. features: raw observations [N, obs_dim] (and, for envs with missions,
    their missions) -> raw feature vectors (a StateEncoder); the learner's normalizer statistics stay frozen and
    nothing is recorded or learned.
    """
    from bitrl_ros.envs import get_spec, make_env

    spec = get_spec(env_id)
    env = make_env(env_id, seed)
    with_mission = bool(spec.mission_words)
    returns, lengths, successes = [], [], []
    t0 = time.perf_counter()
    try:
        obs, info = env.reset(seed=seed)
        total, steps = 0.0, 0
        while len(returns) < episodes:
            batch = np.asarray(obs)[None]
            raw = features(batch, [info["mission"]]) if with_mission else features(batch)
            x = learner.normalize(raw, update=False)
            action = learner.act(x, deterministic=True, learn=False)[0]
            action = clip_action(action, env.action_space)[0] if hasattr(env.action_space, "low") else int(action[0])
            obs, reward, terminated, truncated, info = env.step(action)
            total, steps = total + float(reward), steps + 1
            if terminated or truncated:
                returns.append(total)
                lengths.append(steps)
                if spec.reports_success:
                    successes.append(bool(info.get("success", False)))
                total, steps = 0.0, 0
                obs, info = env.reset()
    finally:
        env.close()
    return Evaluation(returns, lengths, time.perf_counter() - t0, successes)
