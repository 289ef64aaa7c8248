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

A per-field readout reads each field in the context of the whole state text (``context`` "state") or encodes
each field's tokens on their own (``context`` "field"; Backbone.encode_fields).

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
from bitrl_ros.settings import FIELD_CONTEXTS, FIELD_READOUTS, READOUTS, TRAINABLE_READOUTS


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
    critic_backbone: str = ""  # the hybrid critic's backbone ("": the value head reads the policy's features)
    critic_hidden: int = 0     # its width
    mission_segments: int = 1  # bags of words of the mission, one per segment (EnvSpec.mission_segments)
    command_slots: int = 0     # command-scoring policy: the last readout_fields are these command slots
    context: str = "state"     # per-field readouts: each field read within the state text, or on its own

    @classmethod
    def build(cls, spec: EnvSpec, backbone_id: str, hidden: int, readout: str, raw_skip: bool,
              serializer: Serializer | None, proj_dim: int = 16, balance: bool = True, critic_backbone: str = "",
              critic_hidden: int = 0, context: str = "state") -> "FeatureLayout":
        words = tuple(spec.mission_words)
        if backbone_id == "mlp" or hidden == 0:
            if critic_backbone:
                raise ValueError("a critic backbone needs a policy backbone (backbone mlp reads no text)")
            return cls("mlp", "none", 0, spec.obs_dim, True, None, 0, False, len(spec.readout_fields), words,
                       mission_segments=spec.mission_segments, command_slots=spec.command_slots)
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; expected one of {', '.join(READOUTS)}")
        if context not in FIELD_CONTEXTS:
            raise ValueError(f"unknown field context {context!r}; expected one of {', '.join(FIELD_CONTEXTS)}")
        if readout not in FIELD_READOUTS:
            context = "state"  # a pooled readout reads the whole text: the field context does not apply
        if bool(critic_backbone) != bool(critic_hidden):
            raise ValueError(f"critic backbone {critic_backbone!r} with width {critic_hidden}")
        if spec.command_slots and readout not in FIELD_READOUTS:
            raise ValueError(f"{spec.env_id} scores each command from its own vector: it needs a per-field readout "
                             f"({', '.join(FIELD_READOUTS)}), not {readout!r}")
        return cls(backbone_id, readout, int(hidden), spec.obs_dim, bool(raw_skip),
                   None if serializer is None else serializer.describe(),
                   int(proj_dim) if readout in TRAINABLE_READOUTS else 0, bool(balance), len(spec.readout_fields),
                   words, critic_backbone or "", int(critic_hidden), spec.mission_segments, spec.command_slots,
                   context)

    def __post_init__(self):
        if not self.readout_fields:
            object.__setattr__(self, "readout_fields", self.obs_dim)
        object.__setattr__(self, "mission_words", tuple(self.mission_words))

    @property
    def per_field(self) -> bool:
        return self.readout in FIELD_READOUTS

    @property
    def embedding_dim(self) -> int:
        """Width of the policy backbone's readout."""
        return self.hidden * (self.readout_fields if self.per_field else 1)

    @property
    def critic_embedding_dim(self) -> int:
        """Width of the critic backbone's readout (0: no separate critic)."""
        return self.critic_hidden * (self.readout_fields if self.per_field else 1)

    @property
    def encoded_dim(self) -> int:
        """Width of what the encoder stage publishes (EncodedState.embedding): the policy's readout, then the
        critic's.
        """
        return self.embedding_dim + self.critic_embedding_dim

    @property
    def raw_dim(self) -> int:
        """The raw observation: the values, then the mission's word counts (language-conditioned envs)."""
        return self.obs_dim + len(self.mission_words) * self.mission_segments

    @property
    def policy_dim(self) -> int:
        """The policy head's input: [policy readout | raw observation (raw_skip)]."""
        return self.embedding_dim + (self.raw_dim if self.raw_skip else 0)

    @property
    def feature_dim(self) -> int:
        """[policy input | critic input]: with a critic backbone the value head reads its own [critic readout |
        raw observation] after the policy's columns; without one both heads read the policy input.
        """
        return self.policy_dim + (self.critic_embedding_dim + (self.raw_dim if self.raw_skip else 0)
                                  if self.critic_backbone else 0)

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
        if self.critic_backbone:
            start = self.policy_dim
            scale[start: start + self.critic_embedding_dim] = np.sqrt(self.raw_dim / self.critic_embedding_dim)
        return scale

    def head_readout(self) -> dict | None:
        """The trainable readout the policy head carries in front of its MLP (and the value head, without a
        critic backbone); None: the heads take the features.
        """
        return self._readout(self.hidden)

    def critic_head(self) -> dict | None:
        """With a critic backbone, what PPO needs to split the heads: the policy reads the first policy_dim
        columns, the value head the rest through ``readout`` (None: plain). None without a critic backbone.
        """
        if not self.critic_backbone:
            return None
        return {"policy_dim": self.policy_dim, "readout": self._readout(self.critic_hidden)}

    def _readout(self, width: int) -> dict | None:
        if self.readout not in TRAINABLE_READOUTS:
            return None
        return {"num_fields": self.readout_fields, "width": width, "proj_dim": self.proj_dim,
                "raw_dim": self.raw_dim if self.raw_skip else 0}

    def command_scorer(self) -> dict | None:
        """Where the policy head finds the command slots in its input (after its readout): ``count`` blocks of
        ``width`` columns from ``start``; every other column describes the state. None: not a command env.

        A per-field readout puts the slots after the recipe and situation fields (proj_dim or hidden wide);
        the mlp baseline's raw observation puts them after the values and the first two bags of words.
        """
        if not self.command_slots:
            return None
        if self.backbone == "mlp":
            width = len(self.mission_words)
            start = self.obs_dim + width * (self.mission_segments - self.command_slots)
        else:
            width = self.proj_dim if self.readout in TRAINABLE_READOUTS else self.hidden
            start = width * (self.readout_fields - self.command_slots)
        return {"start": start, "width": width, "count": self.command_slots}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "feature layout") -> "FeatureLayout":
        names = {f.name for f in fields(cls)}
        if isinstance(d, dict):  # records written before language-conditioned envs / the hybrid critic existed
            d = {"readout_fields": 0, "mission_words": (), "critic_backbone": "", "critic_hidden": 0,
                 "mission_segments": 1, "command_slots": 0, "context": "state", **d}
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
    """Token ids and fields (+ the validated observations, for the raw skip) -> float32 [N, feature_dim].

    critic_backbone: the hybrid critic's second backbone (None: none), reading the same token ids (it must share
    the policy backbone's tokenizer).
    """

    def __init__(self, backbone, layout: FeatureLayout, critic_backbone=None):
        if bool(layout.critic_backbone) != (critic_backbone is not None):
            raise ValueError(f"layout critic backbone {layout.critic_backbone!r}, given {critic_backbone!r}")
        self.backbone, self.layout, self.critic_backbone = backbone, layout, critic_backbone

    @property
    def feature_dim(self) -> int:
        return self.layout.feature_dim

    def embed(self, token_ids, token_fields) -> np.ndarray:
        """The backbones' readouts alone, [N, encoded_dim]: the policy's, then the critic's (what ternary_encoder
        publishes).
        """
        parts = [self._readout(self.backbone, token_ids, token_fields)]
        if self.critic_backbone is not None:
            parts.append(self._readout(self.critic_backbone, token_ids, token_fields))
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    def _readout(self, backbone, token_ids, token_fields) -> np.ndarray:
        if self.layout.per_field:
            return backbone.encode_fields(token_ids, token_fields, self.layout.readout_fields, self.layout.context)
        return backbone.encode_tokens(token_ids, pooling=self.layout.readout)

    def __call__(self, token_ids, token_fields, obs: np.ndarray, missions=None) -> np.ndarray:
        parts = []
        if self.backbone is not None:
            parts.append(self.embed(token_ids, token_fields))
        return assemble_features(parts[0] if parts else None, obs, self.layout, missions)


def assemble_features(embedding: np.ndarray | None, obs: np.ndarray, layout: FeatureLayout,
                      missions=None) -> np.ndarray:
    """[policy readout | raw observation (values, mission word counts)], then with a critic backbone [critic
    readout | raw observation], as the layout says; embedding: the encoder stage's [N, encoded_dim]. The one
    place that lays out the heads' input.
    """
    n = len(obs)
    emb = None
    if layout.encoded_dim:
        emb = np.asarray(embedding, dtype=np.float32).reshape(n, -1)
        if emb.shape[1] != layout.encoded_dim:
            critic = f", critic {layout.critic_backbone}" if layout.critic_backbone else ""
            raise ValueError(f"embedding of width {emb.shape[1]}, the feature layout ({layout.backbone}{critic}, "
                             f"readout {layout.readout}) expects {layout.encoded_dim}")
    raw = []
    if layout.raw_skip:
        raw.append(np.asarray(obs, dtype=np.float32).reshape(n, layout.obs_dim))
        if layout.mission_words:
            raw.append(bag_of_words([""] * n if missions is None else missions, layout.mission_words,
                                    layout.mission_segments))
    parts = ([emb[:, : layout.embedding_dim]] if layout.embedding_dim else []) + raw
    if layout.critic_backbone:
        parts += [emb[:, layout.embedding_dim:]] + raw
    return np.concatenate(parts, axis=1).astype(np.float32, copy=False)


def check_same_tokenizer(backbone, critic_backbone) -> None:
    """The critic backbone reads the token ids the policy backbone's tokenizer made: refuse any other tokenizer."""
    if backbone is None:
        raise ValueError("a critic backbone needs a policy backbone (backbone mlp reads no text)")
    ours, theirs = backbone.tokenizer_digest(), critic_backbone.tokenizer_digest()
    if ours != theirs:
        raise ValueError(f"critic backbone {critic_backbone.id!r} has another tokenizer than backbone "
                         f"{backbone.id!r}: both read the same token ids, so they must share it")


def validate_batch(observations, spec: EnvSpec) -> np.ndarray:
    """Every row checked (NaN/Inf/length, naming the field); float64 [N, obs_dim]."""
    return np.stack([validate_observation(o, spec) for o in np.asarray(observations)])


class StateEncoder:
    """Both stages in one call, for `bitrl train`, offline evaluation and anything else that runs the pipeline
    in-process.
    """

    def __init__(self, spec: EnvSpec, serializer: Serializer | None, backbone, readout: str = "mean",
                 raw_skip: bool = False, proj_dim: int = 16, balance: bool = True, critic_backbone=None,
                 context: str = "state"):
        if backbone is not None and serializer is None:
            raise ValueError("a backbone needs a serializer")
        if critic_backbone is not None:
            check_same_tokenizer(backbone, critic_backbone)
        self.spec = spec
        self.backbone = backbone
        self.critic_backbone = critic_backbone
        self.layout = FeatureLayout.build(spec, "mlp" if backbone is None else backbone.id,
                                          0 if backbone is None else backbone.hidden_size, readout, raw_skip,
                                          serializer, proj_dim, balance,
                                          "" if critic_backbone is None else critic_backbone.id,
                                          0 if critic_backbone is None else critic_backbone.hidden_size, context)
        self.text = None if backbone is None else TextStage(spec, serializer, backbone.tokenizer,
                                                            backbone.max_tokens)
        self.embed = EmbedStage(backbone, self.layout, critic_backbone)
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

    def truncated_states(self) -> int:
        """States whose text was longer than the token budget so far (their ends were cut)."""
        return 0 if self.backbone is None else self.backbone.tokenizer.truncated_count

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


def node_layout(params: dict, backbone_id: str, hidden: int, critic_hidden: int = 0) -> FeatureLayout:
    """The feature layout the graph's nodes share, from their common feature parameters (params.FEATURES, and
    critic_backbone where the node has it); hidden is the backbone width (0: no backbone), critic_hidden the
    critic backbone's.
    """
    from bitrl_ros.envs import get_spec

    readout = params.get("pooling") or params["readout"]
    return FeatureLayout.build(get_spec(params["env"]), backbone_id, hidden, readout, params["raw_skip"],
                               None if hidden == 0 else node_serializer(params), params["proj_dim"],
                               params["balance"], params.get("critic_backbone", ""), critic_hidden, params["context"])
