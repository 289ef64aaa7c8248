"""Adaptive quantization noise (AQN, from QeRL): Gaussian noise on the frozen encoder's normalization gains while
rollouts are collected, as an exploration aid.

The gains (LayerNorm weights of the BERT-style encoder: the embedding norm and both norms of every layer; RMSNorm
weights of the BitNet decoder) become ``gain + N(0, sigma^2)``, drawn once per rollout from a seeded generator.
Training is split into ``stages`` equal stages: the first has no noise, the others decay geometrically from
sigma_start (second stage) to sigma_end (last stage). Evaluation and deployment run the clean gains, and the
backbone's embedding cache keys every entry by the noise it was computed under, so that noisy and clean features
never mix.
"""
from __future__ import annotations

import numpy as np


def aqn_sigma(step: int, total_steps: int, stages: int, sigma_start: float, sigma_end: float) -> float:
    """The noise level at env step ``step`` of ``total_steps``: 0 in stage 0, then sigma_start * (sigma_end /
    sigma_start) ** ((k - 1) / (stages - 2)) in stage k = 1 .. stages - 1 (sigma_start alone when stages is 2).
    """
    if stages < 2:
        raise ValueError(f"AQN needs at least 2 stages (the first is noise-free), got {stages}")
    if not 0 < sigma_end <= sigma_start:
        raise ValueError(f"AQN needs 0 < sigma_end <= sigma_start, got {sigma_end} and {sigma_start}")
    stage = min(stages - 1, int(step * stages // max(total_steps, 1)))
    if stage == 0:
        return 0.0
    if stages == 2:
        return float(sigma_start)
    return float(sigma_start * (sigma_end / sigma_start) ** ((stage - 1) / (stages - 2)))


class NormNoise:
    """Perturbs and restores one engine's normalization gains (engine.norm_gain_keys / get_norm_gain /
    set_norm_gain); the clean gains are read once, at construction.
    """

    def __init__(self, engine):
        self.engine = engine
        self.clean = {key: np.array(engine.get_norm_gain(key), dtype=np.float32) for key in engine.norm_gain_keys()}
        if not self.clean:
            raise ValueError(f"the {engine.name} engine's model has no normalization gains to perturb")
        self.tag = None  # (sigma, seed) of the noise in place; None: clean

    def apply(self, sigma: float, seed: int) -> None:
        """Gains + N(0, sigma^2) from a generator seeded with ``seed`` (sigma 0: the clean gains)."""
        if sigma == 0:
            if self.tag is not None:
                for key, gain in self.clean.items():
                    self.engine.set_norm_gain(key, gain)
            self.tag = None
            return
        rng = np.random.default_rng(seed)
        for key, gain in self.clean.items():
            self.engine.set_norm_gain(key, (gain + rng.normal(0.0, sigma, gain.shape)).astype(np.float32))
        self.tag = (float(sigma), int(seed))
