"""Generalized Advantage Estimation over a [T, N] rollout."""

import numpy as np


def compute_gae(rewards, values, dones, last_values, last_dones, gamma: float, lam: float):
    """Return (advantages, returns), float32 arrays of shape [T, N].

    rewards[t], values[t], dones[t]: the transition taken from the state at step t. dones[t] is True when the
    episode ended with that transition (terminated or truncated), so nothing is bootstrapped across it.
    last_values: V of the state after the final step, [N]; last_dones: whether the episode ended at the final
    step, [N] (equal to dones[-1] when the caller is consistent; the two are OR-ed).

    Truncation is not handled here: the caller adds gamma * V(final_obs) to the reward of a truncated step
    beforehand (see RolloutBuffer.gae_rewards), which is exactly the bootstrap the cut would otherwise drop.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    dones = np.asarray(dones, dtype=bool)
    num_steps = rewards.shape[0]

    next_values = np.empty_like(values)
    next_values[:-1] = values[1:]
    next_values[-1] = np.asarray(last_values, dtype=np.float64)
    ended = dones.copy()
    ended[-1] |= np.asarray(last_dones, dtype=bool)
    not_ended = 1.0 - ended

    advantages = np.zeros_like(rewards)
    carry = np.zeros(rewards.shape[1:], dtype=np.float64)
    for t in reversed(range(num_steps)):
        delta = rewards[t] + gamma * next_values[t] * not_ended[t] - values[t]
        carry = delta + gamma * lam * not_ended[t] * carry
        advantages[t] = carry
    returns = advantages + values
    return advantages.astype(np.float32), returns.astype(np.float32)
