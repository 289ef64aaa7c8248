"""State -> feature vector: validate, serialize to text, tokenize, encode with the frozen backbone, pool, and
optionally append the raw observation.

The two stages are separate so that the ROS graph can run them in separate nodes (`state_serializer` runs
`TextStage`, `ternary_encoder` runs `EmbedStage`) while `bitrl train` composes them in `StateEncoder`: one
implementation of each step for both paths.
"""
from __future__ import annotations

import numpy as np

from bitrl_ros.envs import EnvSpec
from bitrl_ros.serialize import Serializer, validate_observation


class TextStage:
    """Observations -> (validated observations, texts, token ids)."""

    def __init__(self, spec: EnvSpec, serializer: Serializer, tokenizer, max_tokens: int = 64):
        self.spec, self.serializer, self.tokenizer, self.max_tokens = spec, serializer, tokenizer, max_tokens

    def __call__(self, observations: np.ndarray):
        obs = validate_batch(observations, self.spec)
        texts = self.serializer.batch(obs, validated=True)  # validated once, just above
        return obs, texts, self.tokenizer.encode_batch(texts, self.max_tokens)


class EmbedStage:
    """Token ids (+ the validated observations, for the raw skip) -> float32 features [N, feature_dim]."""

    def __init__(self, backbone, obs_dim: int, pooling: str = "mean", raw_skip: bool = False):
        self.backbone, self.obs_dim, self.pooling = backbone, obs_dim, pooling
        self.raw_skip = raw_skip or backbone is None

    @property
    def feature_dim(self) -> int:
        dim = self.backbone.hidden_size if self.backbone is not None else 0
        return dim + (self.obs_dim if self.raw_skip else 0)

    def __call__(self, token_ids, obs: np.ndarray) -> np.ndarray:
        parts = []
        if self.backbone is not None:
            parts.append(self.backbone.encode_tokens(token_ids, pooling=self.pooling))
        if self.raw_skip:
            parts.append(np.asarray(obs, dtype=np.float32).reshape(len(obs), self.obs_dim))
        return np.concatenate(parts, axis=1).astype(np.float32, copy=False)


def validate_batch(observations, spec: EnvSpec) -> np.ndarray:
    """Every row checked (NaN/Inf/length, naming the field); float64 [N, obs_dim]."""
    return np.stack([validate_observation(o, spec) for o in np.asarray(observations)])


class StateEncoder:
    """Both stages in one call, for `bitrl train` and anything else that runs the pipeline in-process."""

    def __init__(self, spec: EnvSpec, serializer: Serializer | None, backbone, pooling: str = "mean",
                 raw_skip: bool = False):
        if backbone is not None and serializer is None:
            raise ValueError("a backbone needs a serializer")
        self.spec = spec
        self.backbone = backbone
        self.text = None if backbone is None else TextStage(spec, serializer, backbone.tokenizer,
                                                            backbone.max_tokens)
        self.embed = EmbedStage(backbone, spec.obs_dim, pooling, raw_skip)
        self.tokens_seen = 0
        self.states_seen = 0

    @property
    def feature_dim(self) -> int:
        return self.embed.feature_dim

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        """Encode a batch [N, obs_dim] of observations into float32 features [N, feature_dim]."""
        if self.text is None:
            obs, token_ids = validate_batch(observations, self.spec), None
        else:
            obs, _, token_ids = self.text(observations)
            self.tokens_seen += sum(len(t) for t in token_ids)
        self.states_seen += len(obs)
        return self.embed(token_ids, obs)

    def stats(self) -> dict:
        out = {"mean_tokens": self.tokens_seen / max(self.states_seen, 1) if self.backbone is not None else 0.0}
        if self.backbone is not None:
            out.update({f"cache_{k}": v for k, v in self.backbone.cache_stats().items()})
        return out
