"""Token counts of serialized real rollout states, per format (a reporting helper)."""

from __future__ import annotations

import numpy as np

from bitrl_ros.envs.registry import make_env
from bitrl_ros.serialize.serializer import FORMATS, get_serializer


def rollout_states(env_id: str, n_states: int = 200, seed: int = 0) -> np.ndarray:
    """``n_states`` observations visited by a uniform random policy, resetting at episode ends."""
    env = make_env(env_id, seed)
    obs, _ = env.reset(seed=seed)
    states = []
    while len(states) < n_states:
        states.append(obs)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return np.asarray(states, dtype=np.float64)


def count_tokens(tokenizer, text: str) -> int:
    """Tokens including [CLS]/[SEP], ignoring padding (a count capped by the tokenizer's truncation, if any)."""
    return int(sum(tokenizer.encode(text).attention_mask))


def _untruncated(tokenizer):
    # A copy, so the caller's tokenizer keeps its padding/truncation settings; the report wants true lengths.
    copy = type(tokenizer).from_str(tokenizer.to_str())
    copy.no_padding()
    copy.no_truncation()
    return copy


def token_report(env_id: str, tokenizer, n_states: int = 200, seed: int = 0) -> dict:
    """{fmt: {"mean": float, "max": int}} over random-policy rollout states of ``env_id``.

    ``tokenizer`` is a ``tokenizers.Tokenizer``; counts include [CLS]/[SEP] and are not capped by its truncation.
    """
    states = rollout_states(env_id, n_states, seed)
    tokenizer = _untruncated(tokenizer)
    report = {}
    for fmt in FORMATS:
        counts = [count_tokens(tokenizer, text) for text in get_serializer(env_id, fmt).batch(states)]
        report[fmt] = {"mean": float(np.mean(counts)), "max": int(max(counts))}
    return report
