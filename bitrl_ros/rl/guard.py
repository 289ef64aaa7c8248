"""Bounds on what the sensors and the reward may say, so that a well-formed but absurd value (a glitching
sensor: 1e30 in a field, a reward of 1e38) costs no more than the step it is in.

An observation field is out of bounds beyond the env's own observation-space bound where that is finite, else
beyond `obs_bound_factor` times the field's fitted scale (the 99th percentile of |value| under a random policy,
serialize/field_scales.json); a reward beyond `reward_bound` in magnitude. What happens then (`policy`):

- reject: the value is not used. A glitched observation is replaced by the stream's last good one and a
  glitched reward by 0, so neither reaches the running normalizers, the rollout or the reported returns;
- clip: the value is clipped to its bound;
- off: values are used as they come (only non-finite values are refused, elsewhere).

Every value out of bounds is counted, whatever the policy.
"""
from __future__ import annotations

import numpy as np

from bitrl_ros.settings import GLITCH_POLICIES

UNBOUNDED = 1e30  # |space bound| at or above this counts as no bound (gymnasium writes inf or float32 max)


def observation_bounds(env_id: str, space, obs_bound_factor: float) -> np.ndarray:
    """Per-field bound on |value| (inf where neither the space nor a fitted scale gives one)."""
    from bitrl_ros.serialize.field_scales import load_field_scales

    low, high = np.asarray(space.low, dtype=np.float64), np.asarray(space.high, dtype=np.float64)
    bound = np.maximum(np.abs(low), np.abs(high))
    try:
        fitted = np.asarray(load_field_scales(env_id), dtype=np.float64) * obs_bound_factor
    except ValueError:  # no fitted scales for this env: only its space bounds it
        fitted = np.full_like(bound, np.inf)
    return np.where(bound < UNBOUNDED, bound, fitted)


class InputGuard:
    def __init__(self, obs_bound: np.ndarray, reward_bound: float, policy: str = "reject"):
        if policy not in GLITCH_POLICIES:
            raise ValueError(f"unknown glitch policy {policy!r}; expected one of {', '.join(GLITCH_POLICIES)}")
        self.obs_bound = np.asarray(obs_bound, dtype=np.float64)
        self.reward_bound = float(reward_bound)
        self.policy = policy
        self.bad_observations = 0   # observations with a field out of bounds
        self.bad_rewards = 0

    @classmethod
    def for_env(cls, env_id: str, space, reward_bound: float, policy: str, obs_bound_factor: float):
        return cls(observation_bounds(env_id, space, obs_bound_factor), reward_bound, policy)

    def observation_glitches(self, obs: np.ndarray) -> np.ndarray:
        """[N] bool: which rows of obs [N, D] have a field out of bounds (or not finite)."""
        obs = np.asarray(obs, dtype=np.float64)
        return ~np.all(np.isfinite(obs) & (np.abs(obs) <= self.obs_bound), axis=-1)

    def observations(self, obs: np.ndarray, last_good: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(the observations to use, [N] bool glitched) for obs [N, D]; last_good [N, D]: each stream's last
        accepted observation (reject needs it; a stream without one gets zeros).
        """
        bad = self.observation_glitches(obs)
        self.bad_observations += int(bad.sum())
        if not bad.any() or self.policy == "off":
            return obs, bad
        out = np.array(obs, dtype=np.float32, copy=True)
        if self.policy == "clip":
            out[bad] = np.clip(np.nan_to_num(out[bad], nan=0.0), -self.obs_bound, self.obs_bound)
        else:
            out[bad] = 0.0 if last_good is None else np.asarray(last_good, dtype=np.float32)[bad]
        return out, bad

    def rewards(self, rewards: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the rewards to use, [N] bool glitched)."""
        r = np.asarray(rewards, dtype=np.float64)
        bad = ~(np.isfinite(r) & (np.abs(r) <= self.reward_bound))
        self.bad_rewards += int(bad.sum())
        if not bad.any() or self.policy == "off":
            return r, bad
        out = r.copy()
        out[bad] = 0.0 if self.policy == "reject" else np.clip(np.nan_to_num(r[bad]), -self.reward_bound,
                                                               self.reward_bound)
        return out, bad

    def counts(self) -> dict:
        return {"glitched_observations": self.bad_observations, "glitched_rewards": self.bad_rewards}
