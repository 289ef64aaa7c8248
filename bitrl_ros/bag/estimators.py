"""The off-policy estimators and statistics of `bitrl eval-bag` (pure maths on arrays, no bag, no torch).

episodes, for the IS estimators: [(rewards, ratios)] with equal lengths within a pair; ratios are
pi_e(a|s) / pi_b(a|s) per step. For WPDIS an episode that ended keeps its last cumulative weight with reward 0
(absorbing state), so with all ratios equal to 1 WPDIS equals the mean discounted return, as PDIS does.
"""
from __future__ import annotations

import numpy as np


def discounted_returns(rewards, gamma: float) -> np.ndarray:
    """G_t = r_t + gamma * G_{t+1} for every t (no bootstrap after the last reward)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    out = np.zeros_like(rewards)
    acc = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        acc = rewards[t] + gamma * acc
        out[t] = acc
    return out


def pdis_per_episode(rewards, ratios, gamma: float) -> float:
    """Per-decision IS estimate of one episode: sum_t gamma^t (prod_{k<=t} rho_k) r_t."""
    rewards = np.asarray(rewards, dtype=np.float64)
    weights = np.cumprod(np.asarray(ratios, dtype=np.float64))
    discounts = gamma ** np.arange(len(rewards))
    return float(np.sum(discounts * weights * rewards))


def _padded(episodes):
    """[E, T] rewards and cumulative weights; after an episode ends: reward 0, weight held (absorbing)."""
    horizon = max((len(r) for r, _ in episodes), default=0)
    rewards = np.zeros((len(episodes), horizon))
    weights = np.ones((len(episodes), horizon))
    for i, (r, rho) in enumerate(episodes):
        n = len(r)
        if n == 0:
            continue
        rewards[i, :n] = r
        w = np.cumprod(np.asarray(rho, dtype=np.float64))
        weights[i, :n] = w
        weights[i, n:] = w[-1]
    return rewards, weights


def pdis(episodes, gamma: float) -> float:
    """Mean of the per-episode PDIS estimates. episodes: [(rewards, ratios)], equal lengths within a pair."""
    if not episodes:
        return float("nan")
    return float(np.mean([pdis_per_episode(r, rho, gamma) for r, rho in episodes]))


def wpdis(episodes, gamma: float) -> float:
    """Weighted per-decision IS: sum_t gamma^t sum_i w_it r_it / sum_i w_it (w_it = prod_{k<=t} rho_ik)."""
    if not episodes:
        return float("nan")
    rewards, weights = _padded(episodes)
    if rewards.shape[1] == 0:
        return 0.0
    norm = weights.sum(axis=0)
    per_t = np.where(norm > 0, (weights * rewards).sum(axis=0) / np.where(norm > 0, norm, 1.0), 0.0)
    return float(np.sum(gamma ** np.arange(rewards.shape[1]) * per_t))


def bootstrap_ci(episodes, estimator, resamples: int = 1000, seed: int = 0, level: float = 0.95):
    """Percentile bootstrap interval of estimator(episodes) resampling whole episodes with replacement."""
    n = len(episodes)
    if n == 0 or resamples < 1:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    for b in range(resamples):
        idx = rng.integers(0, n, size=n)
        stats[b] = estimator([episodes[i] for i in idx])
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def rmse(a, b) -> float:
    """Root mean squared difference (nan when empty)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.sqrt(np.mean((a - b) ** 2))) if len(a) else float("nan")


def corr(a, b) -> float:
    """Pearson correlation (nan with fewer than two points or a constant side)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
