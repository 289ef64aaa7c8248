"""State -> feature vector: validate, serialize to text, tokenize (with a token-to-field alignment), encode with
the frozen backbone, read out, and optionally append the raw observation.

``FeatureLayout`` is the one home of the feature layout (backbone, readout, widths, raw skip, serializer): it
builds the feature vector's shape for `bitrl train`, `ternary_encoder` and `policy_value` alike, tells the heads
which trainable readout (if any) they carry, and is recorded in every checkpoint so that a node, a resume or
`bitrl eval-bag` reads it instead of guessing from vector widths.

Readouts of the frozen backbone:

- ``mean`` / ``cls`` / ``last``: one pooled vector per state (the paper's recipe is ``mean``).
- ``fields``: one vector per observation field, the mean of the last-layer states of the tokens of that field's
  value (the alignment comes from the serializer's character spans), fields concatenated.
- ``fields_proj``: the ``fields`` vectors, each projected by a shared trainable linear map to ``proj_dim`` dims
  inside the heads (trained by PPO; the backbone is never back-propagated through).

The stages are separate so that the ROS graph can run them in separate nodes (`state_serializer` runs
`TextStage`, `ternary_encoder` runs `EmbedStage`) while `bitrl train` composes them in `StateEncoder`: one
implementation of each step for both paths.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from bitrl_ros.envs import EnvSpec
from bitrl_ros.errors import CheckpointError
from bitrl_ros.serialize import Serializer, validate_observation
from bitrl_ros.serialize.mission import bag_of_words
from bitrl_ros.settings import FIELD_READOUTS, READOUTS, TRAINABLE_READOUTS


@dataclass(frozen=True)
class FeatureLayout:
    """What the heads see: [embedding (embedding_dim) | raw observation (obs_dim, when raw_skip)]."""

    backbone: str            # backbone id ("mlp": no backbone, raw observation only)
    readout: str             # one of READOUTS; "none" for mlp
    hidden: int              # backbone width (0 for mlp)
    obs_dim: int             # observation fields
    raw_skip: bool           # raw observation appended (always true for mlp)
    serializer: dict | None  # Serializer.describe() of the text the backbone reads (None for mlp)
    proj_dim: int = 0        # fields_proj: trainable dims per field
    balance: bool = False    # scale the normalized backbone block to the raw observation's total variance
    readout_fields: int = 0  # per-field readouts: vectors per state (EnvSpec.readout_fields; 0 means obs_dim)
    mission_words: tuple[str, ...] = ()  # the raw observation's bag-of-words vocabulary for the mission

    @classmethod
    def build(cls, spec: EnvSpec, backbone_id: str, hidden: int, readout: str, raw_skip: bool,
              serializer: Serializer | None, proj_dim: int = 16, balance: bool = True) -> "FeatureLayout":
        words = tuple(spec.mission_words)
        if backbone_id == "mlp" or hidden == 0:
            return cls("mlp", "none", 0, spec.obs_dim, True, None, 0, False, len(spec.readout_fields), words)
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; expected one of {', '.join(READOUTS)}")
        return cls(backbone_id, readout, int(hidden), spec.obs_dim, bool(raw_skip),
                   None if serializer is None else serializer.describe(),
                   int(proj_dim) if readout in TRAINABLE_READOUTS else 0, bool(balance), len(spec.readout_fields),
                   words)

    def __post_init__(self):
        if not self.readout_fields:
            object.__setattr__(self, "readout_fields", self.obs_dim)
        object.__setattr__(self, "mission_words", tuple(self.mission_words))

    @property
    def per_field(self) -> bool:
        return self.readout in FIELD_READOUTS

    @property
    def embedding_dim(self) -> int:
        """Width of what the encoder stage publishes (EncodedState.embedding)."""
        return self.hidden * (self.readout_fields if self.per_field else 1)

    @property
    def raw_dim(self) -> int:
        """The raw observation: the values, then the mission's word counts (language-conditioned envs)."""
        return self.obs_dim + len(self.mission_words)

    @property
    def feature_dim(self) -> int:
        return self.embedding_dim + (self.raw_dim if self.raw_skip else 0)

    def input_scale(self) -> np.ndarray | None:
        """Per-feature factors applied after the running normalization (None: all ones).

        With Adam every weight moves by about the learning rate per step whatever its input, so the first layer's
        output moves in proportion to the number of active inputs: 384 or 17 x 384 unit-variance backbone dims
        make each PPO update tens of times larger than 4 raw numbers do (clip fractions of 0.35 instead of 0.05
        on CartPole), and, next to the raw observation, drown it. Balancing scales the backbone block to a total
        variance of obs_dim (per field: 1 per field, like one raw number), leaving the raw observation as is.
        """
        if not self.balance or not self.embedding_dim:
            return None
        scale = np.ones(self.feature_dim, dtype=np.float32)
        scale[: self.embedding_dim] = np.sqrt(self.raw_dim / self.embedding_dim)
        return scale

    def head_readout(self) -> dict | None:
        """The trainable readout the heads carry in front of their MLPs (None: the heads take the features)."""
        if self.readout not in TRAINABLE_READOUTS:
            return None
        return {"num_fields": self.readout_fields, "width": self.hidden, "proj_dim": self.proj_dim,
                "raw_dim": self.raw_dim if self.raw_skip else 0}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "feature layout") -> "FeatureLayout":
        names = {f.name for f in fields(cls)}
        if isinstance(d, dict):  # records written before language-conditioned envs existed
            d = {"readout_fields": 0, "mission_words": (), **d}
        if not isinstance(d, dict) or set(d) != names:
            raise CheckpointError(f"{where}: a feature layout needs exactly the keys {sorted(names)}, got "
                                  f"{sorted(d) if isinstance(d, dict) else type(d).__name__}")
        return cls(**d)

    def check_same(self, saved: "FeatureLayout", where: str) -> None:
        """Refuse heads trained on another layout, naming every difference."""
        diffs = [f"{f.name}: saved {getattr(saved, f.name)!r}, now {getattr(self, f.name)!r}"
                 for f in fields(self) if getattr(saved, f.name) != getattr(self, f.name)]
        if diffs:
            raise CheckpointError(f"{where}: these heads were trained on another feature layout ("
                                  + "; ".join(diffs) + "); use another checkpoint directory, start fresh, or "
                                  "set the saved values")


class TextStage:
    """Observations (+ their missions, for language-conditioned envs) -> (validated observations, texts, token
    ids, token fields).
    """

    def __init__(self, spec: EnvSpec, serializer: Serializer, tokenizer, max_tokens: int = 64):
        self.spec, self.serializer, self.tokenizer, self.max_tokens = spec, serializer, tokenizer, max_tokens

    def __call__(self, observations: np.ndarray, missions=None):
        obs = validate_batch(observations, self.spec)
        rendered = self.serializer.render_batch(obs, validated=True, missions=missions)  # validated just above
        texts = [text for text, _ in rendered]
        ids, token_fields = self.tokenizer.encode_aligned(texts, [spans for _, spans in rendered], self.max_tokens)
        return obs, texts, ids, token_fields


class EmbedStage:
    """Token ids and fields (+ the validated observations, for the raw skip) -> float32 [N, feature_dim]."""

    def __init__(self, backbone, layout: FeatureLayout):
        self.backbone, self.layout = backbone, layout

    @property
    def feature_dim(self) -> int:
        return self.layout.feature_dim

    def embed(self, token_ids, token_fields) -> np.ndarray:
        """The backbone's readout alone, [N, embedding_dim] (what ternary_encoder publishes)."""
        if self.layout.per_field:
            return self.backbone.encode_fields(token_ids, token_fields, self.layout.readout_fields)
        return self.backbone.encode_tokens(token_ids, pooling=self.layout.readout)

    def __call__(self, token_ids, token_fields, obs: np.ndarray, missions=None) -> np.ndarray:
        parts = []
        if self.backbone is not None:
            parts.append(self.embed(token_ids, token_fields))
        return assemble_features(parts[0] if parts else None, obs, self.layout, missions)


def assemble_features(embedding: np.ndarray | None, obs: np.ndarray, layout: FeatureLayout,
                      missions=None) -> np.ndarray:
    """[embedding | raw observation (values, mission word counts)] as the layout says; the one place that lays
    out the heads' input.
    """
    n = len(obs)
    parts = []
    if layout.embedding_dim:
        emb = np.asarray(embedding, dtype=np.float32).reshape(n, -1)
        if emb.shape[1] != layout.embedding_dim:
            raise ValueError(f"embedding of width {emb.shape[1]}, the feature layout ({layout.backbone}, readout "
                             f"{layout.readout}) expects {layout.embedding_dim}")
        parts.append(emb)
    if layout.raw_skip:
        parts.append(np.asarray(obs, dtype=np.float32).reshape(n, layout.obs_dim))
        if layout.mission_words:
            parts.append(bag_of_words([""] * n if missions is None else missions, layout.mission_words))
    return np.concatenate(parts, axis=1).astype(np.float32, copy=False)


def validate_batch(observations, spec: EnvSpec) -> np.ndarray:
    """Every row checked (NaN/Inf/length, naming the field); float64 [N, obs_dim]."""
    return np.stack([validate_observation(o, spec) for o in np.asarray(observations)])


class StateEncoder:
    """Both stages in one call, for `bitrl train`, offline evaluation and anything else that runs the pipeline
    in-process.
    """

    def __init__(self, spec: EnvSpec, serializer: Serializer | None, backbone, readout: str = "mean",
                 raw_skip: bool = False, proj_dim: int = 16, balance: bool = True):
        if backbone is not None and serializer is None:
            raise ValueError("a backbone needs a serializer")
        self.spec = spec
        self.backbone = backbone
        self.layout = FeatureLayout.build(spec, "mlp" if backbone is None else backbone.id,
                                          0 if backbone is None else backbone.hidden_size, readout, raw_skip,
                                          serializer, proj_dim, balance)
        self.text = None if backbone is None else TextStage(spec, serializer, backbone.tokenizer,
                                                            backbone.max_tokens)
        self.embed = EmbedStage(backbone, self.layout)
        self.tokens_seen = 0
        self.states_seen = 0

    @property
    def feature_dim(self) -> int:
        return self.layout.feature_dim

    def __call__(self, observations: np.ndarray, missions=None) -> np.ndarray:
        """Encode a batch [N, obs_dim] of observations (and, for language-conditioned envs, their N missions)
        into float32 features [N, feature_dim].
        """
        if self.spec.mission_words and missions is None:
            raise ValueError(f"{self.spec.env_id} observations need their missions")
        if self.text is None:
            obs, token_ids, token_fields = validate_batch(observations, self.spec), None, None
        else:
            obs, _, token_ids, token_fields = self.text(observations, missions)
            self.tokens_seen += sum(len(t) for t in token_ids)
        self.states_seen += len(obs)
        return self.embed(token_ids, token_fields, obs, missions)

    def stats(self) -> dict:
        out = {"mean_tokens": self.tokens_seen / max(self.states_seen, 1) if self.backbone is not None else 0.0}
        if self.backbone is not None:
            out.update({f"cache_{k}": v for k, v in self.backbone.cache_stats().items()})
        return out


def node_serializer(params: dict) -> Serializer:
    """The serializer the graph's feature parameters (params.FEATURES) name."""
    from bitrl_ros.serialize import get_serializer

    precision = None if params["precision"] < 0 else params["precision"]
    return get_serializer(params["env"], params["format"], precision, params["numbers"])


def node_layout(params: dict, backbone_id: str, hidden: int) -> FeatureLayout:
    """The feature layout the graph's nodes share, from their common feature parameters (params.FEATURES);
    hidden is the backbone width (0: no backbone).
    """
    from bitrl_ros.envs import get_spec

    readout = params.get("pooling") or params["readout"]
    return FeatureLayout.build(get_spec(params["env"]), backbone_id, hidden, readout, params["raw_skip"],
                               None if hidden == 0 else node_serializer(params), params["proj_dim"],
                               params["balance"])
