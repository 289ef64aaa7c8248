"""What a running node tells whoever runs it (`bitrl run`, `bitrl replay`, tests): one snapshot object per node
kind, taken with the node's stats(), instead of a reach into its attributes.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BridgeStats:
    env_id: str
    mode: str
    rate_hz: float
    max_steps: int
    total_steps: int
    episodes: int
    episode_returns: tuple[float, ...]
    action_periods_ms: tuple[float, ...]  # the recent window
    latencies_ms: tuple[float, ...]       # observation -> action, the recent window
    fallbacks: int
    stale_actions: int
    clipped_actions: int
    observations_published: int
    started_at: float | None              # perf_counter of the first observation
    achieved_rate_hz: float | None
    episode_successes: tuple[bool, ...] = ()  # envs that report success (EnvSpec.reports_success)


@dataclass(frozen=True)
class PolicyStats:
    episode_returns: tuple[float, ...]    # the whole history, restored episodes included
    updates: int
    resumed_updates: int
    safe_actions: int
    rollouts_dropped: int
    actions_published: int
    failed_updates: int                   # updates undone (non-finite or exploding)
    glitches: int                         # observations out of the glitch guard's bounds
    learning_stopped: bool


@dataclass(frozen=True)
class ReplayStats:
    replayed: int
    published: tuple[tuple[int, int], ...]  # (episode, step) in publishing order
    actions_received: int
    action_timeouts: int
    messages_per_s: float
    started_at: float | None
    ended_at: float | None
