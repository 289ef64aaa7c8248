"""State -> feature vector: validate, serialize to text, encode with the frozen backbone, pool, optional raw skip.

This is the one place the pipeline's first three stages are composed; `bitrl train` and the ROS nodes share it.
"""
from __future__ import annotations

import numpy as np

from bitrl_ros.envs import EnvSpec
from bitrl_ros.serialize import Serializer, validate_observation


class StateEncoder:
    def __init__(self, spec: EnvSpec, serializer: Serializer | None, backbone, pooling: str = "mean",
                 raw_skip: bool = False):
        if backbone is not None and serializer is None:
            raise ValueError("a backbone needs a serializer")
        self.spec = spec
        self.serializer = serializer
        self.backbone = backbone
        self.pooling = pooling
        self.raw_skip = raw_skip or backbone is None
        self.tokens_seen = 0
        self.states_seen = 0

    @property
    def feature_dim(self) -> int:
        dim = self.backbone.hidden_size if self.backbone is not None else 0
        return dim + (self.spec.obs_dim if self.raw_skip else 0)

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        """Encode a batch [N, obs_dim] of observations into float32 features [N, feature_dim]."""
        obs = np.stack([validate_observation(o, self.spec) for o in np.asarray(observations)])
        parts = []
        if self.backbone is not None:
            texts = self.serializer.batch(obs)
            token_ids = self.backbone.tokenize(texts)
            self.tokens_seen += sum(len(t) for t in token_ids)
            parts.append(self.backbone.encode_tokens(token_ids, pooling=self.pooling))
        if self.raw_skip:
            parts.append(obs.astype(np.float32))
        self.states_seen += len(obs)
        return np.concatenate(parts, axis=1).astype(np.float32, copy=False)

    def stats(self) -> dict:
        out = {"mean_tokens": self.tokens_seen / max(self.states_seen, 1) if self.backbone is not None else 0.0}
        if self.backbone is not None:
            out.update({f"cache_{k}": v for k, v in self.backbone.cache_stats().items()})
        return out
