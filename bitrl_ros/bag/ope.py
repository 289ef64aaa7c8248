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

from dataclasses import dataclass
import json
import math
from pathlib import Path

import numpy as np

from bitrl_ros.bag.episodes import Decision, Episode, read_recording
from bitrl_ros.bag.estimators import bootstrap_ci, corr, discounted_returns, pdis, pdis_per_episode, rmse, wpdis
from bitrl_ros.bag.policy import build_features, check_actions, EvaluatedPolicy
from bitrl_ros.bag.reader import open_bag
from bitrl_ros.errors import BagError

DEFAULT_TOLERANCE = 0.1  # continuous agreement: |greedy - recorded| <= tolerance in every dimension


def evaluate_bag(bag_path, checkpoint, gamma: float = 0.99, bootstrap: int = 1000, backbone: str | None = None,
                 seed: int = 0, tolerance: float = DEFAULT_TOLERANCE, obs_topic: str = "observation",
                 action_topic: str = "action", encoded_topic: str = "encoded_state") -> dict:
    """All OPE metrics of checkpoint's policy on the bag, as a JSON-serializable dict (see the module docstring)."""
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    bag_path = Path(bag_path)
    policy = EvaluatedPolicy(checkpoint)
    with open_bag(bag_path) as bag:  # the only time the bag is opened: one pass reads everything
        recording = read_recording(bag, policy.discrete, obs_topic, action_topic, encoded_topic)
    decisions = recording.decisions
    if not decisions:
        raise BagError(f"bag {bag_path}: no decisions (no observation is followed by another of its episode)")
    check_actions(decisions, policy, bag_path)
    features, feature_source = build_features(recording.episodes, policy, backbone, bag_path,
                                              bag_env=recording.env_id)
    steps = evaluate_steps(policy, decisions, features)
    agreement, clipped = action_agreement(policy, steps, tolerance)
    returns = episode_returns(recording.episodes, steps, gamma)
    ope = ope_estimates(returns, steps, gamma, bootstrap, seed)
    behaviour_returns = [r["return"] for r in returns.evaluated_rows]
    return {
        "bag": str(bag_path),
        "checkpoint": str(policy.path),
        "gamma": gamma,
        "bootstrap": {"resamples": bootstrap, "seed": seed, "level": 0.95, "method": "percentile, episodes"},
        "features": feature_source,
        "action_space": policy.state["action_space"],
        "counts": _counts(recording.episodes, steps, clipped),
        "agreement": agreement,
        "value": value_statistics(steps, returns, decisions, policy.reward_std),
        "behaviour": {"mean_return": float(np.mean(behaviour_returns)) if behaviour_returns else float("nan"),
                      "mean_discounted_return": ope["behaviour_discounted_return"]},
        "ope": ope,
        "episodes": returns.rows,
        "scatter": {"value": steps.values.tolist(), "mc_return": returns.mc.tolist()},
    }


# -- the steps of evaluate_bag -------------------------------------------------------------------------------------
@dataclass
class StepEvaluation:
    """pi_e on every recorded decision (in order) and the importance ratios pi_e(a|s) / pi_b(a|s)."""

    actions: np.ndarray       # the recorded actions (the space's first action / zeros where none was recorded)
    greedy: np.ndarray        # pi_e's greedy actions
    values: np.ndarray        # pi_e's value head
    has_action: np.ndarray    # an action was recorded
    safe: np.ndarray          # ... and it was a safe (watchdog) action, not the policy's
    usable: np.ndarray        # a policy action with a finite behaviour log-prob: the ratio comes from the log-probs
    no_log_prob: np.ndarray   # a policy action without a finite behaviour log-prob
    log_ratio: np.ndarray     # 0 where not usable (ratio 1)
    ratios: np.ndarray


def recorded_actions(decisions: list[Decision], policy: EvaluatedPolicy) -> np.ndarray:
    """The recorded actions as the policy's batch, with a placeholder where a step has none."""
    space = policy.action_space
    if policy.discrete:
        return np.array([d.action if d.action is not None else space.start for d in decisions], dtype=np.int64)
    zero = np.zeros(space.shape, dtype=np.float32)
    return np.stack([d.action if d.action is not None else zero for d in decisions]).astype(np.float32)


def evaluate_steps(policy: EvaluatedPolicy, decisions: list[Decision], features: np.ndarray) -> StepEvaluation:
    """pi_e's log-probabilities of the recorded actions, greedy actions and values, and the ratios: 1 for safe
    actions, steps without an action and steps without a finite behaviour log-prob.
    """
    acts = recorded_actions(decisions, policy)
    logp_e, greedy, values_e = policy.evaluate(features, acts)
    has_action = np.array([d.action is not None for d in decisions])
    safe = np.array([d.safe for d in decisions])
    usable = has_action & ~safe
    logp_b = np.array([d.log_prob for d in decisions], dtype=np.float64)
    no_log_prob = usable & ~np.isfinite(logp_b)
    usable &= ~no_log_prob
    log_ratio = np.where(usable, logp_e - np.where(usable, logp_b, 0.0), 0.0)
    return StepEvaluation(actions=acts, greedy=greedy, values=values_e, has_action=has_action, safe=safe,
                          usable=usable, no_log_prob=no_log_prob, log_ratio=log_ratio, ratios=np.exp(log_ratio))


def action_agreement(policy: EvaluatedPolicy, steps: StepEvaluation, tolerance: float) -> tuple[dict, int]:
    """(agreement of pi_e's greedy actions with the recorded ones on the steps the policy chose, the number of
    those steps whose continuous action lies on a bound of the space: clipped, so their ratios are approximate).
    """
    usable, acts = steps.usable, steps.actions
    agreement: dict = {"steps": int(usable.sum())}
    if policy.discrete:
        agreement["greedy_agreement"] = float(np.mean(steps.greedy[usable] == acts[usable])) if usable.any() else None
        return agreement, 0
    space = policy.action_space
    low, high = space.low.astype(np.float32), space.high.astype(np.float32)
    g = np.clip(steps.greedy, low, high)
    diff = np.abs(g - acts)[usable].reshape(int(usable.sum()), -1)
    agreement["mean_abs_diff"] = float(diff.mean()) if usable.any() else None
    agreement["tolerance"] = tolerance
    agreement["agreement_within_tolerance"] = (float(np.mean((diff <= tolerance).all(axis=1)))
                                               if usable.any() else None)
    at_bound = ((acts <= low) | (acts >= high)).reshape(len(acts), -1).any(axis=1)
    return agreement, int((at_bound & usable).sum())


@dataclass
class Returns:
    """The recorded returns: per-episode report rows and the discounted Monte-Carlo return of every decision."""

    rows: list[dict]          # one per episode; those evaluated by IS (starting at step 0) carry "pdis"
    is_episodes: list         # [(rewards, ratios)] of the evaluated episodes, for the IS estimators
    mc: np.ndarray            # discounted return from each decision, in decision order
    terminated: np.ndarray    # the decision's episode terminated (its MC return is not cut short)

    @property
    def evaluated_rows(self) -> list[dict]:
        return [r for r in self.rows if "pdis" in r]


def episode_returns(episodes: list[Episode], steps: StepEvaluation, gamma: float) -> Returns:
    """The recorded (discounted) returns of every episode, and PDIS of those starting at step 0."""
    rows, is_episodes, mc, terminated = [], [], [], []
    offset = 0
    for e in episodes:
        n = len(e.decisions)
        span = slice(offset, offset + n)
        rewards = np.array([d.reward for d in e.decisions], dtype=np.float64)
        mc.append(discounted_returns(rewards, gamma))
        terminated.append(np.full(n, e.ended == "terminated"))
        row = {"episode": e.episode, "steps": n, "ended": e.ended, "starts_at_zero": e.starts_at_zero,
               "gaps": e.gaps, "return": float(rewards.sum()),
               "discounted_return": float(mc[-1][0]) if n else 0.0,
               "safe_steps": int(steps.safe[span].sum()),
               "log_ratio_sum": float(steps.log_ratio[span].sum())}
        if e.starts_at_zero and n:
            row["pdis"] = pdis_per_episode(rewards, steps.ratios[span], gamma)
            is_episodes.append((rewards, steps.ratios[span]))
        rows.append(row)
        offset += n
    return Returns(rows=rows, is_episodes=is_episodes, mc=np.concatenate(mc), terminated=np.concatenate(terminated))


def _value_stats(pred: np.ndarray, mc: np.ndarray, mask: np.ndarray) -> dict:
    mask = mask & np.isfinite(pred)
    return {"steps": int(mask.sum()), "rmse": rmse(pred[mask], mc[mask]), "corr": corr(pred[mask], mc[mask]),
            "mean_value": float(np.mean(pred[mask])) if mask.any() else None,
            "mean_mc_return": float(np.mean(mc[mask])) if mask.any() else None}


def value_statistics(steps: StepEvaluation, returns: Returns, decisions: list[Decision],
                     reward_std: float | None) -> dict:
    """pi_e's and the recorded value estimates against the discounted Monte-Carlo returns of the recorded rewards."""
    mc, terminated, values_e = returns.mc, returns.terminated, steps.values
    value = {"evaluated": _value_stats(values_e, mc, np.ones(len(decisions), dtype=bool)),
             "evaluated_terminated_episodes": _value_stats(values_e, mc, terminated),
             "recorded": _value_stats(np.array([d.value for d in decisions]), mc, steps.has_action & ~steps.safe),
             "reward_normalized_checkpoint": reward_std is not None,
             "note": "raw value head output vs the discounted return of the recorded (raw) rewards; a checkpoint "
                     "trained with reward normalization predicts returns on the normalized scale"}
    if reward_std is not None:
        value["reward_std"] = reward_std
        value["rmse_rescaled"] = rmse(values_e * reward_std, mc)
        value["rmse_rescaled_terminated_episodes"] = (rmse(values_e[terminated] * reward_std, mc[terminated])
                                                      if terminated.any() else None)
    return value


def ope_estimates(returns: Returns, steps: StepEvaluation, gamma: float, bootstrap: int, seed: int) -> dict:
    """PDIS and WPDIS of pi_e's discounted return and the behaviour's, with bootstrap CIs; the ratio range."""
    is_episodes, usable = returns.is_episodes, steps.usable
    disc = np.array([r["discounted_return"] for r in returns.evaluated_rows])
    ratios = steps.ratios[usable]
    return {
        "episodes": len(is_episodes),
        "pdis": pdis(is_episodes, gamma),
        "pdis_ci": bootstrap_ci(is_episodes, lambda eps: pdis(eps, gamma), bootstrap, seed),
        "wpdis": wpdis(is_episodes, gamma),
        "wpdis_ci": bootstrap_ci(is_episodes, lambda eps: wpdis(eps, gamma), bootstrap, seed),
        "behaviour_discounted_return": float(disc.mean()) if len(disc) else float("nan"),
        "behaviour_discounted_return_ci": bootstrap_ci([(r, None) for r in disc],
                                                       lambda eps: float(np.mean([r for r, _ in eps])),
                                                       bootstrap, seed),
        "ratio_mean": float(ratios.mean()) if usable.any() else None,
        "ratio_min": float(ratios.min()) if usable.any() else None,
        "ratio_max": float(ratios.max()) if usable.any() else None,
        "max_abs_log_ratio": float(np.abs(steps.log_ratio[usable]).max()) if usable.any() else None,
    }


def _counts(episodes: list[Episode], steps: StepEvaluation, clipped: int) -> dict:
    ends = [e.ended for e in episodes]
    return {
        "episodes": len(episodes), "decisions": sum(len(e.decisions) for e in episodes),
        "terminated": ends.count("terminated"), "truncated": ends.count("truncated"),
        "cut_at_bag_end": ends.count("bag_end"),
        "starting_mid_episode_excluded": sum(not e.starts_at_zero for e in episodes),
        "safe_action_steps_skipped": int((steps.has_action & steps.safe).sum()),
        "steps_without_action": int((~steps.has_action).sum()),
        "steps_without_behaviour_log_prob": int(steps.no_log_prob.sum()),
        "missing_steps": sum(e.gaps for e in episodes),
        "clipped_actions": clipped,
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
    _plot_episode_returns(axes[0], report)
    _plot_estimates(axes[1], report)
    _plot_value_vs_return(axes[2], report)
    fig.suptitle(f"{Path(report['bag']).name} / {Path(report['checkpoint']).name}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_episode_returns(ax, report: dict) -> None:
    eps = [r for r in report["episodes"] if "pdis" in r]
    if eps:
        x = [r["episode"] for r in eps]
        ax.plot(x, [r["discounted_return"] for r in eps], "o", ms=4, label="recorded discounted return")
        ax.plot(x, [r["pdis"] for r in eps], "x", ms=5, label="PDIS (evaluated policy)")
        ax.plot(x, [r["return"] for r in eps], ".", ms=3, alpha=0.5, label="recorded return (undiscounted)")
    ax.set_xlabel("episode")
    ax.set_ylabel("return")
    ax.set_title("per-episode returns")
    ax.legend(fontsize=8)


def _plot_estimates(ax, report: dict) -> None:
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


def _plot_value_vs_return(ax, report: dict) -> None:
    sc = report.get("scatter", {})
    if sc.get("value"):
        ax.plot(sc["mc_return"], sc["value"], ".", ms=2, alpha=0.4)
        lo = min(min(sc["mc_return"]), min(sc["value"]))
        hi = max(max(sc["mc_return"]), max(sc["value"]))
        ax.plot([lo, hi], [lo, hi], color="grey", ls="--", lw=1)
    ax.set_xlabel("discounted Monte-Carlo return")
    ax.set_ylabel("value head (raw output)")
    ax.set_title("value vs MC return")


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
