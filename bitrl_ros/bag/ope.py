"""Offline policy evaluation on a recorded bag (`bitrl eval-bag`), ROS-free.

The bag holds, per (episode, step): the Observation (values, the reward of the transition that led to it, done
flags), the Action the behaviour policy took there (with its log-probability and value estimate) and, when the
encoder ran, the EncodedState embedding. From these and a checkpoint of the policy to evaluate (pi_e) we compute

- action agreement: pi_e's greedy action vs the recorded action (exact match for discrete actions; mean absolute
  difference and agreement within a tolerance for continuous ones);
- value error: pi_e's value head vs the discounted Monte-Carlo return of the recorded rewards from each step
  (RMSE and Pearson correlation; the value head is compared as it is, so when the checkpoint was trained with
  reward normalization its values are on the normalized-reward scale: `value_rmse_rescaled` multiplies them by
  the saved reward std as well);
- the behaviour policy's recorded return per episode (undiscounted and discounted);
- off-policy estimates of pi_e's (stochastic) discounted return: per-decision importance sampling (PDIS) and
  weighted, self-normalized per-decision IS (WPDIS), with ratios pi_e(a|s) / pi_b(a|s) from the recorded
  log-probabilities, and percentile bootstrap confidence intervals over episodes.

Conventions:
- the reward of step t is the `reward` of the observation at step t + 1 of the same episode;
- an episode ends at an observation with terminated or truncated; an episode still running when the bag ends
  counts as truncated (its last observation, with no reward after it, is not a decision);
- steps whose action has safe_action = true (watchdog / invalid input: not sampled from the policy, so the
  log-prob means nothing) and steps with no recorded action get ratio 1 (the action was not the policy's to
  choose) and are left out of the agreement and counted; their rewards still count;
- episodes whose first recorded step is not 0 (the bag started mid-episode) are left out of the return estimates
  (they do not start from the initial-state distribution) and counted;
- for WPDIS, an episode that ended keeps its last cumulative weight with reward 0 (absorbing state), so with all
  ratios equal to 1 WPDIS equals the mean discounted return, as PDIS does;
- Box actions are recorded clipped to the bounds while their log-prob is that of the unclipped sample: ratios
  of clipped actions are approximate; they are counted (`clipped_actions`).
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bitrl_ros.errors import BagError, CheckpointError

DEFAULT_TOLERANCE = 0.1  # continuous agreement: |greedy - recorded| <= tolerance in every dimension


# -- pure math ---------------------------------------------------------------------------------------------------
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


def _rmse(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.sqrt(np.mean((a - b) ** 2))) if len(a) else float("nan")


def _corr(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


# -- the evaluated policy ------------------------------------------------------------------------------------------
def action_space_from_description(desc: dict, where: str):
    import gymnasium as gym

    try:
        if desc["type"] == "Discrete":
            return gym.spaces.Discrete(int(desc["n"]), start=int(desc.get("start", 0)))
        if desc["type"] == "Box":
            shape = tuple(int(s) for s in desc["shape"])
            low = np.asarray(desc["low"], dtype=np.float64).reshape(shape)
            high = np.asarray(desc["high"], dtype=np.float64).reshape(shape)
            return gym.spaces.Box(low, high, shape, dtype=np.dtype(desc.get("dtype", "float32")))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: malformed action_space {desc!r} ({e})") from None
    raise CheckpointError(f"{where}: unsupported action_space type {desc.get('type')!r}")


class EvaluatedPolicy:
    """The heads of a checkpoint with the feature normalization it was trained with (frozen), for evaluation."""

    def __init__(self, checkpoint):
        import torch

        from bitrl_ros.rl.checkpoint import STATE_FILE, load_checkpoint, read_checkpoint_state
        from bitrl_ros.rl.config import PPOConfig
        from bitrl_ros.rl.normalize import ObservationNormalizer
        from bitrl_ros.rl.ppo import PPO

        self.path = Path(checkpoint)
        state_path = self.path / STATE_FILE
        state = read_checkpoint_state(self.path)
        self.state = state
        self.feature_dim = int(state["feature_dim"])
        self.action_space = action_space_from_description(state["action_space"], str(state_path))
        self.discrete = state["action_space"]["type"] == "Discrete"
        try:
            config = PPOConfig.from_dict(state.get("config") or {})
        except Exception as e:  # ConfigError / TypeError from a foreign config
            raise CheckpointError(f"{state_path}: unusable PPO config ({e})") from None
        # load_checkpoint restores the global RNGs of the training run; evaluation must not change the caller's.
        from bitrl_ros.features import FeatureLayout

        # The layout the heads were trained on (None: a checkpoint from before layouts were recorded).
        recorded = (state.get("extra") or {}).get("feature_layout")
        self.layout = None if recorded is None else FeatureLayout.from_dict(recorded, str(state_path))
        if self.layout is not None and self.layout.feature_dim != self.feature_dim:
            raise CheckpointError(f"{state_path}: feature_dim {self.feature_dim} differs from its recorded layout's "
                                  f"{self.layout.feature_dim}")
        saved = (torch.random.get_rng_state(), np.random.get_state(), random.getstate())
        try:
            self.ppo = PPO(self.feature_dim, self.action_space, config, seed=int(state.get("seed", 0)),
                           readout=None if self.layout is None else self.layout.head_readout())
            extra = load_checkpoint(self.path, self.ppo)
        finally:
            torch.random.set_rng_state(saved[0])
            np.random.set_state(saved[1])
            random.setstate(saved[2])
        self.extra = extra
        self.feature_norm = None
        if extra.get("feature_norm"):
            self.feature_norm = ObservationNormalizer((self.feature_dim,))
            try:
                self.feature_norm.load_state_dict(extra["feature_norm"])
            except (KeyError, ValueError, TypeError) as e:
                raise CheckpointError(f"{state_path}: malformed feature_norm state ({e})") from None
            self.feature_norm.frozen = True
        self.reward_std = None
        if extra.get("reward_norm"):
            rn = extra["reward_norm"]
            self.reward_std = float(math.sqrt(float(rn["rms"]["var"]) + float(rn.get("eps", 1e-8))))

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


# -- the recorded data ---------------------------------------------------------------------------------------------
@dataclass
class Decision:
    """One recorded state acted on, with the reward that followed it."""
    episode: int
    step: int
    values: np.ndarray
    embedding: np.ndarray | None
    reward: float
    action: object | None          # int for discrete, float32 array for continuous, None if not recorded
    log_prob: float
    value: float
    safe: bool


@dataclass
class Episode:
    episode: int
    decisions: list = field(default_factory=list)
    ended: str = "bag_end"          # "terminated" | "truncated" | "bag_end"
    starts_at_zero: bool = True
    gaps: int = 0                   # missing steps inside the episode


def _first_policy_actions(actions) -> dict:
    """(episode, step) -> action: the first non-safe action of a step (holds repeat it; a later watchdog action
    with the same header does not replace it), else the last safe one."""
    out = {}
    for a in actions:
        key = (a.episode, a.step)
        old = out.get(key)
        if old is None or (old.safe_action and not a.safe_action):
            out[key] = a
        elif old.safe_action and a.safe_action:
            out[key] = a
    return out


def _has_topic(bag_path, topic: str) -> bool:
    from bitrl_ros.bag.reader import open_bag

    with open_bag(bag_path) as bag:
        return bool(bag.select([topic]))


def bag_env_id(bag_path, topic: str = "observation") -> str:
    """The env id the bridge puts in Observation.header.frame_id ('' when absent)."""
    from bitrl_ros.bag.reader import open_bag

    with open_bag(bag_path) as bag:
        for _, _, msg in bag.messages([topic]):
            return str(msg.header.frame_id)
    return ""


def load_episodes(bag_path, discrete: bool, obs_topic: str = "observation", action_topic: str = "action",
                  encoded_topic: str = "encoded_state") -> list[Episode]:
    """Episodes of decisions from a bitrl bag (see the module docstring for the conventions)."""
    from bitrl_ros.bag.reader import iter_actions, iter_observations, read_encoded

    observations = list(iter_observations(bag_path, obs_topic))
    if not observations:
        raise BagError(f"bag {bag_path}: no messages on topic {obs_topic!r}")
    actions = _first_policy_actions(iter_actions(bag_path, action_topic))
    encoded = read_encoded(bag_path, encoded_topic) if _has_topic(bag_path, encoded_topic) else {}

    by_episode: dict[int, dict[int, object]] = {}
    for o in observations:
        by_episode.setdefault(o.episode, {})[o.step] = o  # a duplicate observation keeps the last copy
    episodes = []
    for ep in sorted(by_episode):
        steps = by_episode[ep]
        order = sorted(steps)
        e = Episode(episode=ep, starts_at_zero=order[0] == 0)
        for i, s in enumerate(order):
            o = steps[s]
            if o.terminated or o.truncated:
                e.ended = "terminated" if o.terminated else "truncated"
                break
            if i + 1 >= len(order):
                break  # bag end: no reward follows this state
            nxt = order[i + 1]
            e.gaps += nxt - s - 1
            a = actions.get((ep, s))
            enc = encoded.get((ep, s))
            action = None
            if a is not None:
                action = int(a.discrete) if discrete else np.asarray(a.continuous, dtype=np.float32)
            e.decisions.append(Decision(
                episode=ep, step=s, values=np.asarray(o.values, dtype=np.float32),
                embedding=None if enc is None else enc.embedding, reward=float(steps[nxt].reward),
                action=action, log_prob=float(a.log_prob) if a is not None else float("nan"),
                value=float(a.value) if a is not None else float("nan"),
                safe=bool(a.safe_action) if a is not None else False))
        episodes.append(e)
    return episodes


# -- features ------------------------------------------------------------------------------------------------------
def build_features(episodes: list[Episode], policy: EvaluatedPolicy, backbone: str | None, bag_path,
                   env_id: str | None = None) -> tuple[np.ndarray, str]:
    """Raw (unnormalized) feature rows of every decision, in order, and a description of where they came from."""
    decisions = [d for e in episodes for d in e.decisions]
    if not decisions:
        return np.zeros((0, policy.feature_dim), dtype=np.float32), "none"
    state_file = policy.path / "state.json"
    if policy.layout is not None:
        return _features_from_layout(decisions, policy, backbone, bag_path, env_id)
    # A checkpoint without a recorded layout: match the recorded widths (pooled readouts only).
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
        raise CheckpointError(f"{state_file}: feature_dim {fd} does not match the bag {bag_path} ({have}, "
                              f"observation length {obs_dim}); pass --backbone to recompute the features")
    from bitrl_ros.features import StateEncoder
    from bitrl_ros.serialize import get_serializer

    def build(spec, model):
        hidden = model.hidden_size
        if fd not in (hidden, hidden + obs_dim):
            raise CheckpointError(f"{state_file}: feature_dim {fd} fits neither backbone {backbone} ({hidden}) nor "
                                  f"{backbone} + raw observation ({hidden + obs_dim})")
        return StateEncoder(spec, get_serializer(spec.env_id), model, raw_skip=fd == hidden + obs_dim)

    feats, encoder = _recompute(values, policy, bag_path, env_id, backbone, build)
    return feats, f"recomputed with {backbone}" + (" + raw observation" if encoder.layout.raw_skip else "")


def _recompute(values, policy, bag_path, env_id, backbone: str, build):
    """(features, encoder): features recomputed from the recorded observations with `backbone`;
    build(spec, model) -> the StateEncoder."""
    from bitrl_ros.backbone import load_backbone
    from bitrl_ros.envs import get_spec

    env_id = env_id or policy.extra.get("env") or bag_env_id(bag_path)
    if not env_id:
        raise BagError(f"bag {bag_path}: observations name no env (header.frame_id is empty); cannot serialize "
                       f"states for backbone {backbone}")
    try:
        model = load_backbone(backbone)
    except ValueError as e:
        raise CheckpointError(f"{policy.path / 'state.json'}: backbone {backbone!r}: {e}") from None
    encoder = build(get_spec(env_id), model)
    rows = [encoder(values[i:i + 256]) for i in range(0, len(values), 256)]
    return np.concatenate(rows).astype(np.float32), encoder


def _features_from_layout(decisions, policy: EvaluatedPolicy, backbone: str | None, bag_path, env_id):
    """Features exactly as the checkpoint's recorded layout builds them: from the recorded embeddings when they
    have the layout's width, else recomputed with the recorded backbone, serializer and readout."""
    from bitrl_ros.features import StateEncoder, assemble_features

    layout, state_file = policy.layout, policy.path / "state.json"
    values = np.stack([d.values for d in decisions]).astype(np.float32)
    if values.shape[1] != layout.obs_dim:
        raise CheckpointError(f"{state_file}: the heads take {layout.obs_dim} observation fields, the bag {bag_path} "
                              f"records {values.shape[1]}")
    if layout.backbone == "mlp":
        return assemble_features(None, values, layout), f"raw observation ({layout.obs_dim})"
    if all(d.embedding is not None and len(d.embedding) == layout.embedding_dim for d in decisions):
        emb = np.stack([d.embedding for d in decisions]).astype(np.float32)
        return assemble_features(emb, values, layout), (
            f"recorded encoded_state embedding ({layout.readout}, {layout.embedding_dim})"
            + (f" + raw observation ({layout.obs_dim})" if layout.raw_skip else ""))
    if backbone is not None and backbone != layout.backbone:
        raise CheckpointError(f"{state_file}: the heads were trained on backbone {layout.backbone!r}; "
                              f"--backbone {backbone} cannot recompute their features")
    from bitrl_ros.serialize import Serializer

    def build(spec, model):
        encoder = StateEncoder(spec, Serializer.from_description(spec, layout.serializer), model, layout.readout,
                               layout.raw_skip, layout.proj_dim, layout.balance)
        encoder.layout.check_same(layout, str(state_file))
        return encoder

    feats, _ = _recompute(values, policy, bag_path, env_id, layout.backbone, build)
    return feats, f"recomputed with {layout.backbone} ({layout.readout})"


# -- evaluation ----------------------------------------------------------------------------------------------------
def _check_actions(decisions, policy: EvaluatedPolicy, bag_path) -> None:
    state_file = policy.path / "state.json"
    space = policy.action_space
    for d in decisions:
        if d.action is None:
            continue
        if policy.discrete:
            if not (space.start <= d.action < space.start + space.n):
                raise CheckpointError(f"{state_file}: action space {policy.state['action_space']} does not fit "
                                      f"the bag {bag_path}: episode {d.episode} step {d.step} has action {d.action}")
        elif d.action.shape != space.shape:
            raise CheckpointError(f"{state_file}: action space {policy.state['action_space']} does not fit the bag "
                                  f"{bag_path}: episode {d.episode} step {d.step} has a continuous action of length "
                                  f"{d.action.size} (a discrete-action bag has none)")


def evaluate_bag(bag_path, checkpoint, gamma: float = 0.99, bootstrap: int = 1000, backbone: str | None = None,
                 seed: int = 0, tolerance: float = DEFAULT_TOLERANCE, obs_topic: str = "observation",
                 action_topic: str = "action", encoded_topic: str = "encoded_state") -> dict:
    """All OPE metrics of checkpoint's policy on the bag, as a JSON-serializable dict (see the module docstring)."""
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    bag_path = Path(bag_path)
    policy = EvaluatedPolicy(checkpoint)
    episodes = load_episodes(bag_path, policy.discrete, obs_topic, action_topic, encoded_topic)
    decisions = [d for e in episodes for d in e.decisions]
    if not decisions:
        raise BagError(f"bag {bag_path}: no decisions (no observation is followed by another of its episode)")
    _check_actions(decisions, policy, bag_path)
    features, feature_source = build_features(episodes, policy, backbone, bag_path)

    space = policy.action_space
    if policy.discrete:
        acts = np.array([d.action if d.action is not None else space.start for d in decisions], dtype=np.int64)
    else:
        zero = np.zeros(space.shape, dtype=np.float32)
        acts = np.stack([d.action if d.action is not None else zero for d in decisions]).astype(np.float32)
    logp_e, greedy, values_e = policy.evaluate(features, acts)

    has_action = np.array([d.action is not None for d in decisions])
    safe = np.array([d.safe for d in decisions])
    usable = has_action & ~safe
    logp_b = np.array([d.log_prob for d in decisions], dtype=np.float64)
    bad_b = usable & ~np.isfinite(logp_b)
    usable &= ~bad_b
    log_ratio = np.where(usable, logp_e - np.where(usable, logp_b, 0.0), 0.0)
    ratios = np.exp(log_ratio)

    # agreement, on the steps the policy chose
    agreement: dict = {"steps": int(usable.sum())}
    clipped = 0
    if policy.discrete:
        agreement["greedy_agreement"] = float(np.mean(greedy[usable] == acts[usable])) if usable.any() else None
    else:
        low, high = space.low.astype(np.float32), space.high.astype(np.float32)
        g = np.clip(greedy, low, high)
        diff = np.abs(g - acts)[usable].reshape(int(usable.sum()), -1)
        agreement["mean_abs_diff"] = float(diff.mean()) if usable.any() else None
        agreement["tolerance"] = tolerance
        agreement["agreement_within_tolerance"] = (float(np.mean((diff <= tolerance).all(axis=1)))
                                                   if usable.any() else None)
        at_bound = ((acts <= low) | (acts >= high)).reshape(len(acts), -1).any(axis=1)
        clipped = int((at_bound & usable).sum())

    # value error against discounted Monte-Carlo returns of the recorded rewards
    mc, per_episode, is_episodes, terminated_mask = [], [], [], []
    offset = 0
    for e in episodes:
        n = len(e.decisions)
        rewards = np.array([d.reward for d in e.decisions], dtype=np.float64)
        mc.append(discounted_returns(rewards, gamma))
        terminated_mask.append(np.full(n, e.ended == "terminated"))
        ep_ratios = ratios[offset:offset + n]
        row = {"episode": e.episode, "steps": n, "ended": e.ended, "starts_at_zero": e.starts_at_zero,
               "gaps": e.gaps, "return": float(rewards.sum()),
               "discounted_return": float(mc[-1][0]) if n else 0.0,
               "safe_steps": int(safe[offset:offset + n].sum()),
               "log_ratio_sum": float(log_ratio[offset:offset + n].sum())}
        if e.starts_at_zero and n:
            row["pdis"] = pdis_per_episode(rewards, ep_ratios, gamma)
            is_episodes.append((rewards, ep_ratios))
        per_episode.append(row)
        offset += n
    mc = np.concatenate(mc)
    terminated_mask = np.concatenate(terminated_mask)

    def value_stats(pred, mask):
        mask = mask & np.isfinite(pred)
        return {"steps": int(mask.sum()), "rmse": _rmse(pred[mask], mc[mask]), "corr": _corr(pred[mask], mc[mask]),
                "mean_value": float(np.mean(pred[mask])) if mask.any() else None,
                "mean_mc_return": float(np.mean(mc[mask])) if mask.any() else None}

    all_steps = np.ones(len(decisions), dtype=bool)
    value = {"evaluated": value_stats(values_e, all_steps),
             "evaluated_terminated_episodes": value_stats(values_e, terminated_mask),
             "recorded": value_stats(np.array([d.value for d in decisions]), has_action & ~safe),
             "reward_normalized_checkpoint": policy.reward_std is not None,
             "note": "raw value head output vs the discounted return of the recorded (raw) rewards; a checkpoint "
                     "trained with reward normalization predicts returns on the normalized scale"}
    if policy.reward_std is not None:
        value["reward_std"] = policy.reward_std
        value["rmse_rescaled"] = _rmse(values_e * policy.reward_std, mc)
        value["rmse_rescaled_terminated_episodes"] = (_rmse(values_e[terminated_mask] * policy.reward_std,
                                                            mc[terminated_mask]) if terminated_mask.any() else None)

    evaluated = [r for r in per_episode if "pdis" in r]
    returns = np.array([r["return"] for r in evaluated])
    disc = np.array([r["discounted_return"] for r in evaluated])
    ope = {
        "episodes": len(is_episodes),
        "pdis": pdis(is_episodes, gamma),
        "pdis_ci": bootstrap_ci(is_episodes, lambda eps: pdis(eps, gamma), bootstrap, seed),
        "wpdis": wpdis(is_episodes, gamma),
        "wpdis_ci": bootstrap_ci(is_episodes, lambda eps: wpdis(eps, gamma), bootstrap, seed),
        "behaviour_discounted_return": float(disc.mean()) if len(disc) else float("nan"),
        "behaviour_discounted_return_ci": bootstrap_ci([(r, None) for r in disc],
                                                       lambda eps: float(np.mean([r for r, _ in eps])),
                                                       bootstrap, seed),
        "ratio_mean": float(ratios[usable].mean()) if usable.any() else None,
        "ratio_min": float(ratios[usable].min()) if usable.any() else None,
        "ratio_max": float(ratios[usable].max()) if usable.any() else None,
        "max_abs_log_ratio": float(np.abs(log_ratio[usable]).max()) if usable.any() else None,
    }
    ends = [e.ended for e in episodes]
    return {
        "bag": str(bag_path),
        "checkpoint": str(policy.path),
        "gamma": gamma,
        "bootstrap": {"resamples": bootstrap, "seed": seed, "level": 0.95, "method": "percentile, episodes"},
        "features": feature_source,
        "action_space": policy.state["action_space"],
        "counts": {
            "episodes": len(episodes), "decisions": len(decisions),
            "terminated": ends.count("terminated"), "truncated": ends.count("truncated"),
            "cut_at_bag_end": ends.count("bag_end"),
            "starting_mid_episode_excluded": sum(not e.starts_at_zero for e in episodes),
            "safe_action_steps_skipped": int((has_action & safe).sum()),
            "steps_without_action": int((~has_action).sum()),
            "steps_without_behaviour_log_prob": int(bad_b.sum()),
            "missing_steps": sum(e.gaps for e in episodes),
            "clipped_actions": clipped,
        },
        "agreement": agreement,
        "value": value,
        "behaviour": {"mean_return": float(returns.mean()) if len(returns) else float("nan"),
                      "mean_discounted_return": ope["behaviour_discounted_return"]},
        "ope": ope,
        "episodes": per_episode,
        "scatter": {"value": values_e.tolist(), "mc_return": mc.tolist()},
    }


# -- output --------------------------------------------------------------------------------------------------------
def _json_safe(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return _json_safe(x.item())
    return x


def write_json(report: dict, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in report.items() if k != "scatter"}
    path.write_text(json.dumps(_json_safe(data), indent=1))
    return path


def plot_report(report: dict, path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    eps = [r for r in report["episodes"] if "pdis" in r]
    ax = axes[0]
    if eps:
        x = [r["episode"] for r in eps]
        ax.plot(x, [r["discounted_return"] for r in eps], "o", ms=4, label="recorded discounted return")
        ax.plot(x, [r["pdis"] for r in eps], "x", ms=5, label="PDIS (evaluated policy)")
        ax.plot(x, [r["return"] for r in eps], ".", ms=3, alpha=0.5, label="recorded return (undiscounted)")
    ax.set_xlabel("episode")
    ax.set_ylabel("return")
    ax.set_title("per-episode returns")
    ax.legend(fontsize=8)

    ax = axes[1]
    ope = report["ope"]
    names = ["behaviour", "PDIS", "WPDIS"]
    est = [ope["behaviour_discounted_return"], ope["pdis"], ope["wpdis"]]
    cis = [ope["behaviour_discounted_return_ci"], ope["pdis_ci"], ope["wpdis_ci"]]
    for i, (e, (lo, hi)) in enumerate(zip(est, cis)):
        if e is None or not np.isfinite(e):
            continue
        lo = e if lo is None or not np.isfinite(lo) else lo
        hi = e if hi is None or not np.isfinite(hi) else hi
        ax.errorbar([i], [e], yerr=[[max(e - lo, 0)], [max(hi - e, 0)]], fmt="o", capsize=6)
    ax.set_xticks(range(3), names)
    ax.set_ylabel(f"discounted return (gamma {report['gamma']})")
    ax.set_title("estimates with 95% bootstrap CI")

    ax = axes[2]
    sc = report.get("scatter", {})
    if sc.get("value"):
        ax.plot(sc["mc_return"], sc["value"], ".", ms=2, alpha=0.4)
        lo = min(min(sc["mc_return"]), min(sc["value"]))
        hi = max(max(sc["mc_return"]), max(sc["value"]))
        ax.plot([lo, hi], [lo, hi], color="grey", ls="--", lw=1)
    ax.set_xlabel("discounted Monte-Carlo return")
    ax.set_ylabel("value head (raw output)")
    ax.set_title("value vs MC return")
    fig.suptitle(f"{Path(report['bag']).name} / {Path(report['checkpoint']).name}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _fmt(x, spec=".3f"):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, spec)


def summary_rows(report: dict) -> list[tuple[str, str]]:
    c, a, v, o = report["counts"], report["agreement"], report["value"], report["ope"]
    ci = lambda pair: f"[{_fmt(pair[0])}, {_fmt(pair[1])}]"  # noqa: E731
    rows = [
        ("features", report["features"]),
        ("episodes (terminated / truncated / cut at bag end)",
         f"{c['episodes']} ({c['terminated']} / {c['truncated']} / {c['cut_at_bag_end']})"),
        ("decisions", str(c["decisions"])),
        ("safe-action steps skipped (ratio 1)", str(c["safe_action_steps_skipped"])),
    ]
    if c["steps_without_action"]:
        rows.append(("steps without a recorded action (ratio 1)", str(c["steps_without_action"])))
    if c["starting_mid_episode_excluded"]:
        rows.append(("episodes starting before the bag (excluded)", str(c["starting_mid_episode_excluded"])))
    if "greedy_agreement" in a:
        rows.append(("greedy action agreement", _fmt(a["greedy_agreement"], ".1%")))
    else:
        rows.append(("mean |greedy - recorded| action", _fmt(a["mean_abs_diff"], ".4f")))
        rows.append((f"agreement within {a['tolerance']}", _fmt(a["agreement_within_tolerance"], ".1%")))
        rows.append(("clipped actions (approximate ratios)", str(c["clipped_actions"])))
    scale = " (normalized-reward scale)" if v["reward_normalized_checkpoint"] else ""
    rows += [
        (f"value RMSE vs MC return, raw{scale}", _fmt(v["evaluated"]["rmse"])),
        ("value corr with MC return", _fmt(v["evaluated"]["corr"])),
    ]
    if "rmse_rescaled" in v:
        rows.append(("value RMSE, rescaled by reward std", _fmt(v["rmse_rescaled"])))
    rows += [
        ("recorded return per episode (mean)", _fmt(report["behaviour"]["mean_return"], ".2f")),
        (f"recorded discounted return (gamma {report['gamma']})",
         f"{_fmt(o['behaviour_discounted_return'])} {ci(o['behaviour_discounted_return_ci'])}"),
        ("PDIS estimate [95% CI]", f"{_fmt(o['pdis'])} {ci(o['pdis_ci'])}"),
        ("WPDIS estimate [95% CI]", f"{_fmt(o['wpdis'])} {ci(o['wpdis_ci'])}"),
        ("IS ratio mean / min / max", f"{_fmt(o['ratio_mean'])} / {_fmt(o['ratio_min'])} / {_fmt(o['ratio_max'])}"),
    ]
    return rows
