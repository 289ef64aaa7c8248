"""`bitrl train`: online PPO on frozen-backbone features in gymnasium Sync vector envs.

One rollout = num_envs x num_steps transitions; after each rollout PPO updates the two heads, a metrics row is
written and the checkpoint is replaced atomically. The backbone is frozen: features are computed once per state
(cached by token ids) and stored in the rollout buffer, so updates never touch the backbone.
"""
from __future__ import annotations

from collections import deque
import csv
from dataclasses import dataclass, field
import json
from pathlib import Path
import sys
import time

import numpy as np
import torch

from bitrl_ros.backbone import load_backbone
from bitrl_ros.backbone.noise import aqn_sigma
from bitrl_ros.config import RUN_CONFIG, TrainConfig
from bitrl_ros.envs import get_spec, make_vec_env
from bitrl_ros.features import StateEncoder
from bitrl_ros.rl.actions import clip_action
from bitrl_ros.rl.curve import plot_learning_curve
from bitrl_ros.rl.evaluation import evaluate_policy, Evaluation, RETURN_WINDOW, success_rate, SUCCESS_WINDOW
from bitrl_ros.rl.guard import InputGuard
from bitrl_ros.rl.learner import OnlineLearner
from bitrl_ros.rl.ppo import PPOConfig
from bitrl_ros.rl.seeding import seed_everything
from bitrl_ros.serialize import get_serializer

EVAL_SEED_OFFSET = 10_000  # greedy evaluation runs on env seeds training never resets with

METRIC_FIELDS = [
    "update", "global_step", "episodes", "mean_return", "steps_per_s", "policy_loss", "value_loss",
    "entropy", "approx_kl", "clip_fraction", "grad_norm", "explained_variance", "cache_hit_rate", "aqn_sigma",
    "policy_lr",
]


@dataclass
class TrainResult:
    run_dir: Path
    global_step: int
    episodes: int
    mean_return: float
    first_solved_step: int | None
    steps_per_s: float
    eval_mean_return: float | None
    cache_hit_rate: float | None
    mean_tokens: float
    wall_s: float
    episode_returns: list[float] = field(default_factory=list)
    failed_updates: int = 0  # PPO updates undone (non-finite or exploding; see rl.learner.update_problem)
    glitched_observations: int = 0  # observations / rewards out of the train.guard bounds (rl/guard.py)
    glitched_rewards: int = 0
    success_rate: float | None = None  # last SUCCESS_WINDOW episodes (envs with EnvSpec.reports_success)
    eval_success_rate: float | None = None

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["run_dir"] = str(self.run_dir)
        d.pop("episode_returns")
        return d


def build_state_encoder(cfg: TrainConfig) -> StateEncoder:
    """Backbone + serializer + readout as the config says; `mlp` gives raw observations."""
    backbone, critic = (None if bid is None else load_backbone(
        bid, cache_mb=cfg.features.cache_mb, max_tokens=cfg.features.max_tokens, engine=cfg.features.engine,
        threads=cfg.torch_threads) for bid in (cfg.backbone, cfg.critic_backbone))
    serializer = None if backbone is None else get_serializer(cfg.env, cfg.serializer.format,
                                                              cfg.serializer.precision, cfg.serializer.numbers)
    return StateEncoder(get_spec(cfg.env), serializer, backbone, cfg.features.readout, cfg.features.raw_skip,
                        cfg.features.proj_dim, cfg.features.balance, critic, cfg.features.context)


def missions_of(infos: dict, spec) -> list[str] | None:
    """The mission of each observation a vector env just returned (None for envs without missions)."""
    if not spec.mission_words:
        return None
    return [str(m) for m in infos["mission"]]


def _episode_infos(infos: dict):
    """(env index, return, length) for every episode that finished at this step."""
    ep = infos.get("episode")
    if ep is None:
        return []
    mask = infos.get("_episode", np.ones(len(ep["r"]), dtype=bool))
    return [(int(i), float(ep["r"][i]), int(ep["l"][i])) for i in np.flatnonzero(mask)]


def evaluate_run(run_dir: str | Path, env_id: str | None = None, episodes: int = 50,
                 seed: int | None = None) -> Evaluation:
    """The greedy policy of a finished run's checkpoint on `env_id` (default: the run's eval env), as
    Trainer.evaluate runs it after training (the same seed by default); e.g. on another split of the run's env.
    """
    from bitrl_ros.config import load_run_config
    from bitrl_ros.rl.checkpoint import action_space_from_description, read_checkpoint_state

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    torch.set_num_threads(cfg.torch_threads)
    env_id = env_id or cfg.eval_env or cfg.env
    if get_spec(env_id).field_names != get_spec(cfg.env).field_names:
        raise ValueError(f"{env_id} does not observe what {cfg.env} (the run's env) does")
    encoder = build_state_encoder(cfg)
    space = action_space_from_description(read_checkpoint_state(run_dir / "checkpoint")["action_space"],
                                          str(run_dir / "checkpoint"))
    learner = OnlineLearner(encoder.feature_dim, space, PPOConfig.from_dict(cfg.ppo), seed=cfg.seed,
                            normalize_features=cfg.normalize.features, normalize_reward=cfg.normalize.reward,
                            layout=encoder.layout)
    try:
        learner.load(run_dir / "checkpoint")
        seed = cfg.seed + EVAL_SEED_OFFSET if seed is None else seed
        return evaluate_policy(env_id, encoder, learner, episodes, seed)
    finally:
        learner.close()


class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: Path | None = None, resume: bool = False,
                 progress: bool = True, log=print, env_wrapper=None):
        """env_wrapper: applied to every training env (e.g. envs.faults.SensorGlitch); evaluation is clean."""
        self.cfg = cfg
        self.log = log
        self.progress = progress
        torch.set_num_threads(cfg.torch_threads)
        seed_everything(cfg.seed)
        self.ppo_cfg = PPOConfig.from_dict(cfg.ppo)
        self.envs = make_vec_env(cfg.env, self.ppo_cfg.num_envs, cfg.seed, wrapper=env_wrapper)
        self.guard = InputGuard.for_env(cfg.env, self.envs.single_observation_space, cfg.guard.reward_bound,
                                        cfg.guard.policy, cfg.guard.obs_bound_factor)
        self._returns = np.zeros(self.ppo_cfg.num_envs)  # each env's episode return so far, accepted rewards only
        self._last_good = None                             # each env's last accepted observation
        self.continuous = not hasattr(self.envs.single_action_space, "n")
        self.spec = get_spec(cfg.env)
        self.encoder = build_state_encoder(cfg)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_dir = Path(run_dir) if run_dir else Path(cfg.run_dir) / f"{cfg.env}-{cfg.backbone}-s{cfg.seed}-{stamp}"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.learner = OnlineLearner(
            self.encoder.feature_dim, self.envs.single_action_space, self.ppo_cfg, seed=cfg.seed,
            normalize_features=cfg.normalize.features, normalize_reward=cfg.normalize.reward,
            checkpoint_dir=self.run_dir / "checkpoint", extra_state=self._extra_state, on_update=self._on_update,
            layout=self.encoder.layout, on_failure=self._on_failed_update,
            on_checkpoint=lambda error: self.log(error + "; training goes on in memory, retrying at every update"
                                                 if error else "checkpoints are written again"))
        self.global_step = 0
        self.update_idx = 0
        self._sigma = 0.0      # AQN noise std of the current rollout
        self._missions = None  # the missions of the latest observations (language-conditioned envs)
        self.episode_log: list[tuple[int, float, int]] = []  # (global_step, return, length)
        self.episode_success: list[bool] = []  # per finished episode, for envs that report success
        self._metrics_writer = None
        self._bar = None
        self._t_start = time.perf_counter()
        self._step_start = 0
        if resume:
            self._resume()
        # A resume rewrites it too: the same settings, with its budget (total_steps) as extended.
        (self.run_dir / RUN_CONFIG).write_text(json.dumps(
            {"train": cfg.to_dict(), "ppo_resolved": self.ppo_cfg.to_dict()}, indent=2))

    # -- checkpoints -------------------------------------------------------------------------------------------
    def _extra_state(self) -> dict:
        return {
            "global_step": self.global_step,
            "update": self.update_idx + 1,
            "env": self.cfg.env,
            "backbone": self.cfg.backbone,
            "episode_log": self.episode_log,
            "episode_success": self.episode_success,
        }

    def _resume(self):
        extra = self.learner.load(self.run_dir / "checkpoint", restore_global_rngs=True)
        self.global_step = int(extra["global_step"])
        self.update_idx = int(extra["update"])
        self.episode_log = [tuple(e) for e in extra.get("episode_log", [])]
        self.episode_success = [bool(x) for x in extra.get("episode_success", [])]
        self.log(f"resumed {self.run_dir} at step {self.global_step} (update {self.update_idx})")

    # -- rollout -----------------------------------------------------------------------------------------------
    def _collect(self, obs, feats):
        """One rollout of num_steps vector-env steps; feats are the normalized features of obs."""
        learner = self.learner
        for _ in range(self.ppo_cfg.num_steps):
            actions, _, _ = learner.act(feats)
            env_actions = clip_action(actions, self.envs.single_action_space) if self.continuous else actions
            obs, rewards, terminated, truncated, infos = self.envs.step(env_actions)
            previous = self._last_good
            obs = self._accept(obs)
            missions = missions_of(infos, self.spec)
            rewards, _ = self.guard.rewards(rewards)
            self._returns += rewards
            final = None
            cut = np.flatnonzero(np.logical_and(truncated, np.logical_not(terminated)))
            if len(cut):
                # Truncation is not failure: the learner bootstraps from the state the time limit cut off.
                cut_obs, _ = self.guard.observations(np.stack([infos["final_obs"][i] for i in cut]), previous[cut])
                cut_missions = None if missions is None else [str(infos["final_info"]["mission"][i]) for i in cut]
                final = np.zeros_like(feats)
                final[cut] = learner.normalize(self.encoder(cut_obs, cut_missions), update=False)
            learner.record(rewards, terminated, truncated, final)
            for i, _, length in _episode_infos(infos):
                self.episode_log.append((self.global_step + i + 1, float(self._returns[i]), length))
                if self.spec.reports_success:
                    self.episode_success.append(bool(infos["final_info"]["success"][i]))
                self._returns[i] = 0.0
            self.global_step += self.ppo_cfg.num_envs
            self._missions = missions
            feats = learner.normalize(self.encoder(obs, missions))
        return obs, feats

    def _resample_noise(self, rollout: int) -> bool:
        """AQN (train.aqn): the noise of the rollout about to start, drawn anew from a seed of the run's seed and
        the rollout's index; whether the encoder's gains changed.
        """
        a = self.cfg.aqn
        if not a.enabled:
            return False
        backbone = self.encoder.backbone
        before = backbone.noise_tag
        self._sigma = aqn_sigma(self.global_step, self.cfg.total_steps, a.stages, a.sigma_start, a.sigma_end)
        backbone.set_norm_noise(self._sigma, seed=self.cfg.seed * 100_003 + self.global_step // rollout)
        return backbone.noise_tag != before

    def _accept(self, obs: np.ndarray) -> np.ndarray:
        """The observations the agent uses (train.guard: a glitched one is rejected or clipped), remembered."""
        obs, _ = self.guard.observations(obs, self._last_good)
        self._last_good = np.array(obs, dtype=np.float32, copy=True)
        return obs

    def _on_update(self, stats: dict):
        self.update_idx += 1
        sps = (self.global_step - self._step_start) / max(time.perf_counter() - self._t_start, 1e-9)
        enc = self.encoder.stats()
        self._metrics_writer.writerow({
            "update": self.update_idx, "global_step": self.global_step, "episodes": len(self.episode_log),
            "mean_return": self.mean_return(), "steps_per_s": sps,
            "cache_hit_rate": enc.get("cache_hit_rate", ""), "aqn_sigma": self._sigma,
            "policy_lr": stats.get("lr", ""), **{k: stats.get(k, "") for k in METRIC_FIELDS[5:12]},
        })
        self._metrics_file.flush()
        self._bar.update(self.global_step, len(self.episode_log), self.mean_return(), sps)

    def _on_failed_update(self, problem: str, stopped: bool) -> None:
        self.log(f"PPO update undone at step {self.global_step}: {problem}; the previous weights are kept"
                 + (f"; learning stopped after {self.learner.consecutive_failures} failed updates in a row"
                    if stopped else ""))

    def mean_return(self) -> float:
        recent = [r for _, r, _ in self.episode_log[-RETURN_WINDOW:]]
        return float(np.mean(recent)) if recent else float("nan")

    def first_solved_step(self) -> int | None:
        target = get_spec(self.cfg.env).solved_return
        if target is None:
            return None
        window = deque(maxlen=RETURN_WINDOW)
        for step, ret, _ in self.episode_log:
            window.append(ret)
            if len(window) == RETURN_WINDOW and np.mean(window) >= target:
                return step
        return None

    def run(self) -> TrainResult:
        cfg, ppo_cfg = self.cfg, self.ppo_cfg
        rollout = ppo_cfg.num_envs * ppo_cfg.num_steps
        num_updates = max(1, -(-cfg.total_steps // rollout))
        obs, infos = self.envs.reset(seed=cfg.seed + 1000 * self.update_idx)
        self._returns[:] = 0.0
        self._missions = missions_of(infos, self.spec)
        feats = self.learner.normalize(self.encoder(self._accept(obs), self._missions))
        if self.encoder.truncated_states():
            self.log(f"warning: {self.encoder.truncated_states()} of the first {len(obs)} states are longer than "
                     f"features.max_tokens={cfg.features.max_tokens} tokens and lose their ends (a per-field "
                     "readout then sees the cut fields as empty): raise features.max_tokens")
        metrics_path = self.run_dir / "metrics.csv"
        new_file = not metrics_path.exists() or self.update_idx == 0
        # A resumed run keeps its file's columns (a run written before a column existed stays aligned).
        fields = METRIC_FIELDS if new_file else metrics_path.read_text().split("\n", 1)[0].strip().split(",")
        self._metrics_file = metrics_path.open("w" if new_file else "a", newline="")
        self._metrics_writer = csv.DictWriter(self._metrics_file, fieldnames=fields, extrasaction="ignore")
        if new_file:
            self._metrics_writer.writeheader()
        self._bar = _Progress(num_updates * rollout, self.progress, self.log)
        self._bar.advance_to(self.global_step)
        self._t_start = t_start = time.perf_counter()
        self._step_start = step_start = self.global_step
        try:
            while self.update_idx < num_updates:
                if self._resample_noise(rollout):
                    # The rollout's first state under the rollout's own noise (already counted in the statistics).
                    feats = self.learner.normalize(self.encoder(obs, self._missions), update=False)
                obs, feats = self._collect(obs, feats)
                self.learner.update_if_ready(feats)
        finally:
            self._bar.close()
            self._metrics_file.close()
            if self.encoder.backbone is not None:
                self.encoder.backbone.set_norm_noise(0.0)  # evaluation and whatever follows run clean
        wall = time.perf_counter() - t_start
        self._write_episodes()
        evaluation = self.evaluate(cfg.eval_episodes) if cfg.eval_episodes else None
        enc = self.encoder.stats()
        result = TrainResult(
            run_dir=self.run_dir, global_step=self.global_step, episodes=len(self.episode_log),
            mean_return=self.mean_return(), first_solved_step=self.first_solved_step(),
            steps_per_s=(self.global_step - step_start) / max(wall, 1e-9),
            eval_mean_return=None if evaluation is None else evaluation.mean_return,
            cache_hit_rate=enc.get("cache_hit_rate"), mean_tokens=enc["mean_tokens"], wall_s=wall,
            episode_returns=[r for _, r, _ in self.episode_log], failed_updates=self.learner.failed_updates,
            success_rate=success_rate(self.episode_success[-SUCCESS_WINDOW:]) if self.spec.reports_success else None,
            eval_success_rate=None if evaluation is None else evaluation.success_rate,
            **self.guard.counts(),
        )
        (self.run_dir / "summary.json").write_text(json.dumps(result.to_dict(), indent=2))
        plot_learning_curve(self.episode_log, self.run_dir / "learning_curve.png",
                            title=f"{cfg.env} / {cfg.backbone}"
                            f"{' + critic ' + cfg.critic_backbone if cfg.critic_backbone else ''} / seed {cfg.seed}",
                            target=get_spec(cfg.env).solved_return)
        self.envs.close()
        return result

    def evaluate(self, episodes: int) -> Evaluation:
        """The deterministic policy over fresh episodes; statistics frozen, nothing learned."""
        seed = self.cfg.seed + EVAL_SEED_OFFSET
        return evaluate_policy(self.cfg.eval_env or self.cfg.env, self.encoder, self.learner, episodes, seed)

    def _write_episodes(self):
        with (self.run_dir / "episodes.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["global_step", "return", "length"])
            w.writerows(self.episode_log)


class _Progress:
    """A live rich progress bar on a terminal; a plain line per ~5% elsewhere (CI logs, pipes)."""

    def __init__(self, total: int, enabled: bool, log):
        self.total, self.enabled, self.log = total, enabled, log
        self.tty = sys.stdout.isatty()
        self._last_pct = -1
        self._bar = None
        if enabled and self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
            self._bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeRemainingColumn())
            self._task = self._bar.add_task("train", total=total, info="")
            self._bar.start()

    def advance_to(self, step: int):
        if self._bar:
            self._bar.update(self._task, completed=step)

    def update(self, step: int, episodes: int, mean_return: float, sps: float):
        info = f"episodes {episodes}  return {mean_return:7.1f}  {sps:6.0f} steps/s"
        if self._bar:
            self._bar.update(self._task, completed=min(step, self.total), info=info)
        elif self.enabled:
            pct = int(100 * step / self.total) // 5 * 5
            if pct != self._last_pct:
                self._last_pct = pct
                self.log(f"[train] {min(step, self.total)}/{self.total} ({pct}%)  {info}")

    def close(self):
        if self._bar:
            self._bar.stop()
