"""The policy `bitrl eval-bag` evaluates: a checkpoint's heads with the feature normalization they were trained
with (frozen), the features they take, built from what a bag recorded, and the check that the bag's actions fit
their action space.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from bitrl_ros.bag.episodes import Decision, Episode
from bitrl_ros.errors import BagError, CheckpointError


class EvaluatedPolicy:
    """The heads of a checkpoint with the feature normalization it was trained with (frozen), for evaluation.

    Loading it leaves the process-wide torch / NumPy / `random` generators as they were.
    """

    def __init__(self, checkpoint):
        from bitrl_ros.features import FeatureLayout
        from bitrl_ros.rl.checkpoint import (STATE_FILE, action_space_from_description, load_checkpoint,
                                             read_checkpoint_state)
        from bitrl_ros.rl.config import PPOConfig
        from bitrl_ros.rl.ppo import PPO

        self.path = Path(checkpoint)
        self.state_file = self.path / STATE_FILE
        state = read_checkpoint_state(self.path)
        self.state = state
        self.feature_dim = int(state["feature_dim"])
        self.action_space = action_space_from_description(state["action_space"], str(self.state_file))
        self.discrete = state["action_space"]["type"] == "Discrete"
        try:
            config = PPOConfig.from_dict(state.get("config") or {})
        except Exception as e:  # ConfigError / TypeError from a foreign config
            raise CheckpointError(f"{self.state_file}: unusable PPO config ({e})") from None
        # The layout the heads were trained on (None: a checkpoint from before layouts were recorded).
        recorded = (state.get("extra") or {}).get("feature_layout")
        self.layout = None if recorded is None else FeatureLayout.from_dict(recorded, str(self.state_file))
        if self.layout is not None and self.layout.feature_dim != self.feature_dim:
            raise CheckpointError(f"{self.state_file}: feature_dim {self.feature_dim} differs from its recorded "
                                  f"layout's {self.layout.feature_dim}")
        self.ppo = PPO(self.feature_dim, self.action_space, config, seed=int(state.get("seed", 0)),
                       readout=None if self.layout is None else self.layout.head_readout(),
                       critic=None if self.layout is None else self.layout.critic_head(),
                       commands=None if self.layout is None else self.layout.command_scorer())
        self.extra = load_checkpoint(self.path, self.ppo)
        self.feature_norm = self._feature_norm(self.extra)
        self.reward_std = None
        if self.extra.get("reward_norm"):
            rn = self.extra["reward_norm"]
            self.reward_std = float(math.sqrt(float(rn["rms"]["var"]) + float(rn.get("eps", 1e-8))))

    def _feature_norm(self, extra: dict):
        """The frozen ObservationNormalizer of the features the checkpoint saved (None when it has none)."""
        from bitrl_ros.rl.normalize import ObservationNormalizer

        if not extra.get("feature_norm"):
            return None
        norm = ObservationNormalizer((self.feature_dim,))
        try:
            norm.load_state_dict(extra["feature_norm"])
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{self.state_file}: malformed feature_norm state ({e})") from None
        norm.frozen = True
        return norm

    def normalize(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, dtype=np.float32)
        if self.feature_norm is not None:
            features = self.feature_norm.normalize(features)
        scale = None if self.layout is None else self.layout.input_scale()
        return features if scale is None else features * scale

    def evaluate(self, features: np.ndarray, actions: np.ndarray, batch: int = 4096):
        """(log pi_e(a|s), greedy actions, values) for raw features [N, D] and recorded actions."""
        import torch

        x = self.normalize(features)
        log_probs, greedy, values = [], [], []
        with torch.no_grad():
            for i in range(0, len(x), batch):
                xb = torch.as_tensor(x[i:i + batch])
                ab = torch.as_tensor(np.asarray(actions[i:i + batch]))
                lp, _ = self.ppo.policy.evaluate(xb, ab)
                g, _ = self.ppo.policy.act(xb, deterministic=True)
                log_probs.append(lp.numpy().astype(np.float64))
                greedy.append(g.numpy())
                values.append(self.ppo.value_head(xb).numpy().astype(np.float64))
        if not len(x):
            shape = () if self.discrete else self.action_space.shape
            return np.zeros(0), np.zeros((0, *shape)), np.zeros(0)
        return np.concatenate(log_probs), np.concatenate(greedy), np.concatenate(values)


def check_actions(decisions: list[Decision], policy: EvaluatedPolicy, bag_path) -> None:
    """Raise CheckpointError naming the checkpoint and the bag unless every recorded action is in the policy's
    space.
    """
    space = policy.action_space
    for d in decisions:
        if d.action is None:
            continue
        if policy.discrete:
            if not (space.start <= d.action < space.start + space.n):
                raise CheckpointError(f"{policy.state_file}: action space {policy.state['action_space']} does not "
                                      f"fit the bag {bag_path}: episode {d.episode} step {d.step} has action "
                                      f"{d.action}")
        elif d.action.shape != space.shape:
            raise CheckpointError(f"{policy.state_file}: action space {policy.state['action_space']} does not fit "
                                  f"the bag {bag_path}: episode {d.episode} step {d.step} has a continuous action "
                                  f"of length {d.action.size} (a discrete-action bag has none)")


# -- features ------------------------------------------------------------------------------------------------------
def build_features(episodes: list[Episode], policy: EvaluatedPolicy, backbone: str | None, bag_path,
                   env_id: str | None = None, bag_env: str = "") -> tuple[np.ndarray, str]:
    """Raw (unnormalized) feature rows of every decision, in order, and a description of where they came from.

    env_id: the env whose serializer recomputes features with a backbone; by default the checkpoint's env,
    else bag_env (the env the bag's observations name, Recording.env_id). bag_path only names the bag in errors.
    """
    decisions = [d for e in episodes for d in e.decisions]
    if not decisions:
        return np.zeros((0, policy.feature_dim), dtype=np.float32), "none"
    env_id = env_id or policy.extra.get("env") or bag_env
    if policy.layout is not None:
        return _features_from_layout(decisions, policy, backbone, bag_path, env_id)
    return _features_by_width(decisions, policy, backbone, bag_path, env_id)


def _features_by_width(decisions, policy: EvaluatedPolicy, backbone: str | None, bag_path, env_id):
    """A checkpoint without a recorded layout: match the recorded widths (pooled readouts only)."""
    obs_dim = len(decisions[0].values)
    emb_lens = {len(d.embedding) for d in decisions if d.embedding is not None}
    all_embedded = all(d.embedding is not None for d in decisions)
    values = np.stack([d.values for d in decisions]).astype(np.float32)
    fd = policy.feature_dim
    if all_embedded and len(emb_lens) == 1:
        n = emb_lens.pop()
        if n > 0 and fd in (n, n + obs_dim):
            emb = np.stack([d.embedding for d in decisions]).astype(np.float32)
            if fd == n:
                return emb, f"recorded encoded_state embedding ({n})"
            return np.concatenate([emb, values], axis=1), f"recorded embedding ({n}) + raw observation ({obs_dim})"
    if fd == obs_dim and backbone in (None, "mlp"):
        return values, f"raw observation ({obs_dim})"
    if backbone is None or backbone == "mlp":
        have = f"embedding length {sorted(emb_lens) or 'none'}" + ("" if all_embedded else " (not on every step)")
        raise CheckpointError(f"{policy.state_file}: feature_dim {fd} does not match the bag {bag_path} ({have}, "
                              f"observation length {obs_dim}); pass --backbone to recompute the features")
    from bitrl_ros.features import StateEncoder
    from bitrl_ros.serialize import get_serializer

    def build(spec, model):
        hidden = model.hidden_size
        if fd not in (hidden, hidden + obs_dim):
            raise CheckpointError(f"{policy.state_file}: feature_dim {fd} fits neither backbone {backbone} "
                                  f"({hidden}) nor {backbone} + raw observation ({hidden + obs_dim})")
        return StateEncoder(spec, get_serializer(spec.env_id), model, raw_skip=fd == hidden + obs_dim)

    feats, encoder = _recompute(values, policy, bag_path, env_id, backbone, build)
    return feats, f"recomputed with {backbone}" + (" + raw observation" if encoder.layout.raw_skip else "")


def _recompute(values, policy: EvaluatedPolicy, bag_path, env_id, backbone: str, build, missions=None):
    """(features, encoder): features recomputed from the recorded observations (and missions) with `backbone`;
    build(spec, model) -> the StateEncoder.
    """
    from bitrl_ros.backbone import load_backbone
    from bitrl_ros.envs import get_spec

    if not env_id:
        raise BagError(f"bag {bag_path}: observations name no env (header.frame_id is empty); cannot serialize "
                       f"states for backbone {backbone}")
    try:
        model = load_backbone(backbone)
    except ValueError as e:
        raise CheckpointError(f"{policy.state_file}: backbone {backbone!r}: {e}") from None
    encoder = build(get_spec(env_id), model)
    rows = [encoder(values[i:i + 256], None if missions is None else missions[i:i + 256])
            for i in range(0, len(values), 256)]
    return np.concatenate(rows).astype(np.float32), encoder


def _features_from_layout(decisions, policy: EvaluatedPolicy, backbone: str | None, bag_path, env_id):
    """Features exactly as the checkpoint's recorded layout builds them: from the recorded embeddings when they
    have the layout's width, else recomputed with the recorded backbone, serializer and readout.
    """
    from bitrl_ros.features import StateEncoder, assemble_features

    layout, state_file = policy.layout, policy.state_file
    values = np.stack([d.values for d in decisions]).astype(np.float32)
    missions = [d.mission for d in decisions] if layout.mission_words else None
    if values.shape[1] != layout.obs_dim:
        raise CheckpointError(f"{state_file}: the heads take {layout.obs_dim} observation fields, the bag {bag_path} "
                              f"records {values.shape[1]}")
    if layout.backbone == "mlp":
        return assemble_features(None, values, layout, missions), f"raw observation ({layout.raw_dim})"
    if all(d.embedding is not None and len(d.embedding) == layout.encoded_dim for d in decisions):
        emb = np.stack([d.embedding for d in decisions]).astype(np.float32)
        return assemble_features(emb, values, layout, missions), (
            f"recorded encoded_state embedding ({layout.readout}, {layout.encoded_dim})"
            + (f" + raw observation ({layout.raw_dim})" if layout.raw_skip else ""))
    if backbone is not None and backbone != layout.backbone:
        raise CheckpointError(f"{state_file}: the heads were trained on backbone {layout.backbone!r}; "
                              f"--backbone {backbone} cannot recompute their features")
    from bitrl_ros.serialize import Serializer

    def build(spec, model):
        critic = None
        if layout.critic_backbone:
            from bitrl_ros.backbone import load_backbone

            critic = load_backbone(layout.critic_backbone)
        encoder = StateEncoder(spec, Serializer.from_description(spec, layout.serializer), model, layout.readout,
                               layout.raw_skip, layout.proj_dim, layout.balance, critic, layout.context)
        encoder.layout.check_same(layout, str(state_file))
        return encoder

    feats, _ = _recompute(values, policy, bag_path, env_id, layout.backbone, build, missions)
    critic = f" + critic {layout.critic_backbone}" if layout.critic_backbone else ""
    return feats, f"recomputed with {layout.backbone}{critic} ({layout.readout})"
