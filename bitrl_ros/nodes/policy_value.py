"""policy_value: the actor-learner node. Joins `observation` (reward, done flags, raw values) with
`encoded_state` (backbone features) by (episode, step), acts with the policy head and learns online with PPO
through bitrl_ros.rl.learner.OnlineLearner; publishes `action` and `training_stats`.

Timing: in lockstep every joined state is acted on as it arrives (the bridge waits for the action of step k);
in realtime too, a fresh state is acted on as soon as it is joined and its action published at once (the
pipeline's latency is the only delay between observation and action) or, with action_release_ms > 0, at the
observation's stamp + action_release_ms (nodes/release.py: a fixed delay instead of a jittering one), while a
wall-clock timer at control_rate_hz keeps the command stream alive: when no fresh state arrived for 1.5 control
periods it repeats (holds) the last action, and after watchdog_periods it publishes the safe action until data
returns. PPO updates run in a niced child process
(`update_worker: process`, rl/update_worker.py) or a worker thread (`thread`), so acting never waits for learning;
in a child the update does not even share this node's interpreter lock.

A managed (lifecycle) node (nodes/managed.py): configure resumes the checkpoint when there is one (the heads are
built from the layout it records; otherwise from the first encoded state), activate starts acting, deactivate
publishes the safe action once and stops acting and learning (states arriving meanwhile are dropped), cleanup
writes the checkpoint and frees the heads and learner.
"""
from __future__ import annotations

from collections import OrderedDict
import json
import math
from pathlib import Path
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
import gymnasium as gym
import numpy as np
from rclpy.clock import Clock, ClockType

from bitrl_msgs.msg import Action, EncodedState, Observation, TrainingStats
from bitrl_msgs.srv import SaveCheckpoint
from bitrl_ros.envs import get_spec, make_env
from bitrl_ros.errors import BitrlError, ConfigError, InvalidObservation
from bitrl_ros.features import assemble_features, FeatureLayout, node_layout
from bitrl_ros.nodes.base import (declare_parameters, DIAGNOSTICS_QOS, PIPELINE_QOS, spin_node, STATS_QOS,
                                  torch_on_one_thread)
from bitrl_ros.nodes.convert import copy_header, ERROR, make_status, observation_to_array, OK, to_float32_list, WARN
from bitrl_ros.nodes.managed import ManagedNode
from bitrl_ros.nodes.release import ActionRelease
from bitrl_ros.nodes.stats import PolicyStats
from bitrl_ros.rl.actions import clip_action
from bitrl_ros.rl.checkpoint import read_checkpoint_state, STATE_FILE
from bitrl_ros.rl.config import PPOConfig
from bitrl_ros.rl.evaluation import RETURN_WINDOW
from bitrl_ros.rl.guard import InputGuard
from bitrl_ros.rl.learner import OnlineLearner
from bitrl_ros.serialize import validate_observation
from bitrl_ros.settings import FIELD_READOUTS, NODE_PPO

NODE_NAME = "policy_value"
HARDWARE_ID = "bitrl-agent"
JOIN_CAPACITY = 64            # (episode, step) keys waiting for their other half
RETURNS_KEPT = 10_000         # episode returns kept in checkpoints (the run summary needs no more)


def ppo_config_from_params(params: dict) -> PPOConfig:
    """Build the PPOConfig for one stream from the node's `ppo.*` parameters; cross-parameter errors name the
    parameter.
    """
    try:
        return PPOConfig(num_envs=1, **{k: params[f"ppo.{k}"] for k in NODE_PPO})
    except ConfigError as exc:
        raise ConfigError(f"{NODE_NAME}: invalid ppo.* parameters: {exc}") from None


def env_spaces(env_id: str) -> tuple[gym.Space, gym.Space]:
    """(observation space, action space) of the registered env."""
    env = make_env(env_id, seed=0)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


class PolicyValueNode(ManagedNode):
    def __init__(self, **node_kwargs):
        super().__init__(NODE_NAME, **node_kwargs)
        self.params = p = declare_parameters(self, NODE_NAME)
        self.spec = get_spec(p["env"])
        self.ppo_config = ppo_config_from_params(p)
        observation_space, self.action_space = env_spaces(p["env"])
        self.guard = InputGuard.for_env(p["env"], observation_space, p["reward_bound"], p["glitch_policy"],
                                        p["obs_bound_factor"])
        self.discrete = isinstance(self.action_space, gym.spaces.Discrete)
        self.realtime = p["mode"] == "realtime"
        self.learn = p["learn"]
        self.learner: OnlineLearner | None = None
        self.feature_dim: int | None = None
        self.layout = None        # FeatureLayout, fixed by the first encoded state
        self.obs_dim = self.spec.obs_dim
        self.restored: dict = {}  # what resume brought back (updates, global_step, episodes), empty if nothing
        # The PPO update process is started now: its interpreter and torch (seconds) come up while the graph
        # does, and the first state, which builds the learner, does not wait for them.
        self._early_process = None
        if p["update_worker"] == "process" and self.learn:
            from bitrl_ros.rl.update_worker import UpdateProcess

            self._early_process = UpdateProcess()

        # Run statistics, read by the runner. Counters the worker thread reads are guarded by _lock.
        self._lock = threading.Lock()
        self.global_step = 0
        self.episode_returns: list[float] = []
        self.safe_actions = 0
        self.invalid_count = 0
        self.glitch_count = 0     # observations out of the guard's bounds (rejected, clipped or let through)
        self.clipped_count = 0
        self.held_count = 0
        self.watchdog_trips = 0
        self.actions_published = 0
        self._current_episode: int | None = None
        self._current_return = 0.0
        self._returns_reported = 0  # len(episode_returns) at the last TrainingStats
        self._last_stats_time = time.monotonic()
        self._last_stats_step = 0

        self._join: OrderedDict = OrderedDict()  # (episode, step) -> [Observation | None, EncodedState | None]
        self._handled: OrderedDict = OrderedDict()  # keys already acted on or rejected (late halves ignored)
        self._pending_key: tuple[int, int] | None = None  # state acted on, awaiting its reward
        self._last_action: Action | None = None
        self._last_input_diag = -math.inf
        self._closing = False
        self.outputs: dict[str, str] = {}  # what _flush wrote at shutdown: checkpoint, plot, summary -> path

        self.action_pub = self.create_publisher(Action, "action", PIPELINE_QOS)
        release_s = p["action_release_ms"] / 1000.0
        self._release = ActionRelease(release_s, self._publish_now) if self.realtime and release_s > 0 else None
        self.stats_pub = self.create_publisher(TrainingStats, "training_stats", STATS_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        self.create_subscription(Observation, "observation", self._on_observation, PIPELINE_QOS)
        self.create_subscription(EncodedState, "encoded_state", self._on_encoded, PIPELINE_QOS)
        self.create_service(SaveCheckpoint, "save_checkpoint", self._on_save_checkpoint)

        self.timer = None
        if self.realtime:
            self._period = 1.0 / p["control_rate_hz"]
            self._last_fresh = -math.inf  # monotonic time of the newest fresh state
            self._stale_ticks = 0
            self._trip_ticks = 0
            self._armed = False  # the watchdog starts with the first observation
            self._tripped = False
            self._ticks_per_diag = max(1, round(p["control_rate_hz"]))
            period = 1.0 / p["control_rate_hz"]
            self.timer = self.create_timer(period, self._on_tick, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(
            f"{p['env']} ({'discrete' if self.discrete else 'continuous'} actions), mode={p['mode']}, "
            f"learn={self.learn}, rollout={self.ppo_config.num_steps}, checkpoints in {p['checkpoint_dir']}")
        self.start(p["autostart"])

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def configure(self) -> None:
        """Resume now when there is a checkpoint (a bad one fails the transition), else wait for the first state."""
        if self.params["resume"] and self._checkpoint_exists():
            ckpt = self.params["checkpoint_dir"]
            saved = read_checkpoint_state(ckpt)["extra"].get("feature_layout")
            if saved is None:  # an old checkpoint: the first state's resume refuses it, with the explanation
                return
            layout = FeatureLayout.from_dict(saved, f"{ckpt}: feature layout")
            now = node_layout(self.params, layout.backbone, layout.hidden, layout.critic_hidden)
            now.check_same(layout, str(ckpt))
            self._make_learner(layout)
            self._resume()
            self._log_heads()

    def activate(self) -> None:
        if self.realtime:
            self._armed = self._tripped = False  # the watchdog waits for the first fresh state again
            self._stale_ticks = 0

    def deactivate(self) -> None:
        self._publish(self._safe_action(None))
        self._drop_pending()  # the state acted on will get no reward: not learned from

    def cleanup(self) -> None:
        if self.learner is not None:
            self.learner.wait(5.0)  # a running update finishes (and checkpoints) before its learner goes
            if self.learn and not self.learner.updating:
                self.learner.save(self.params["checkpoint_dir"], timeout=5.0)
            self.learner.close(5.0)
        with self._lock:
            self.learner = self.layout = self.feature_dim = None
            self.restored = {}
            self.global_step, self.episode_returns, self._returns_reported = 0, [], 0
            self._current_episode, self._current_return = None, 0.0
        self._join.clear()
        self._handled.clear()
        self._pending_key = self._last_action = None

    # -- statistics for the runner ------------------------------------------------------------------------------
    @property
    def episodes(self) -> int:
        return len(self.episode_returns)

    @property
    def updates(self) -> int:
        return self.learner.num_updates if self.learner is not None else self.restored.get("updates", 0)

    @property
    def rollouts_dropped(self) -> int:
        return self.learner.rollouts_dropped if self.learner is not None else 0

    def stats(self) -> PolicyStats:
        learner = self.learner
        with self._lock:
            returns = tuple(self.episode_returns)
        return PolicyStats(episode_returns=returns, updates=self.updates,
                           resumed_updates=self.restored.get("updates", 0), safe_actions=self.safe_actions,
                           rollouts_dropped=self.rollouts_dropped, actions_published=self.actions_published,
                           failed_updates=learner.failed_updates if learner is not None else 0,
                           glitches=self.glitch_count,
                           learning_stopped=learner is not None and learner.learning_stopped)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop acting, wait (bounded) for a running PPO update, then flush what this node owns (see _flush).
        Checkpoints are written atomically, so a save cut short leaves the previous one in place. Safe to call
        twice: the second call does nothing.
        """
        if self._closing:
            return
        self._closing = True
        if self.timer is not None:
            self.timer.cancel()
        if self._release is not None:
            self._release.close()
        if self.learner is not None:
            self.learner.wait(timeout)
            if self.learner.updating:
                self.get_logger().warning(f"a PPO update was still running after {timeout:.0f} s; not waiting")
                return
        if self.learn:
            self._flush()
        if self.learner is not None:
            self.learner.close(timeout)
        if self._early_process is not None:  # no state ever came
            self._early_process.close(timeout)
            self._early_process = None

    def _flush(self) -> None:
        """A learning run's outputs, next to its checkpoint: the checkpoint itself (the weights of the last
        update, the normalizers and episode returns up to now; the rollout in progress is lost), the learning
        curve and summary.json. A failure is logged, never raised: shutdown must go on.
        """
        from bitrl_ros.rl.curve import plot_learning_curve

        ckpt = Path(self.params["checkpoint_dir"])
        stats = self.stats()
        returns = list(stats.episode_returns)
        try:
            if self.learner is not None:
                self.learner.save(ckpt, timeout=5.0)
                self.outputs["checkpoint"] = str(ckpt)
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            if returns:
                plot = ckpt.parent / "learning_curve.png"
                plot_learning_curve([(i + 1, r, 0) for i, r in enumerate(returns)], plot,
                                    title=f"{self.params['env']} / {self.layout.backbone if self.layout else '-'}",
                                    target=self.spec.solved_return, xlabel="episode")
                self.outputs["plot"] = str(plot)
            summary = {"env": self.params["env"], "global_step": self.global_step, "episodes": len(returns),
                       "updates": stats.updates, "resumed_updates": stats.resumed_updates,
                       "mean_return": float(np.mean(returns[-RETURN_WINDOW:])) if returns else None,
                       "return_window": RETURN_WINDOW, "failed_updates": stats.failed_updates,
                       "learning_stopped": stats.learning_stopped, "glitches": stats.glitches,
                       "safe_actions": stats.safe_actions, "rollouts_dropped": stats.rollouts_dropped,
                       **self.outputs}
            path = ckpt.parent / "summary.json"
            path.write_text(json.dumps(summary, indent=2) + "\n")
            self.outputs["summary"] = str(path)
            self.get_logger().info(f"flushed: {', '.join(f'{k} {v}' for k, v in self.outputs.items())}")
        except (OSError, TimeoutError, ValueError) as exc:
            self.get_logger().error(f"could not write the run's outputs next to {ckpt}: {exc}")

    # -- inputs -------------------------------------------------------------------------------------------------
    def _on_observation(self, msg: Observation) -> None:
        if self._closing or not self.active:
            return
        key = (int(msg.episode), int(msg.step))
        if key in self._handled:
            return  # a duplicate
        glitch = self._glitch(msg)
        self._bookkeep(msg, count_reward=glitch is None or self.guard.policy != "reject")
        try:
            validate_observation(observation_to_array(msg), self.spec)
            if not math.isfinite(msg.reward):
                raise InvalidObservation(f"observation field 'reward' is {msg.reward}")
        except InvalidObservation as exc:
            # Handled now, not at the join: the serializer drops invalid observations, so no encoding follows.
            self._reject(msg, str(exc))
            return
        if glitch is not None and self.guard.policy == "reject":
            self._reject(msg, glitch)
            return
        self._add_half(key, 0, msg)

    def _glitch(self, msg: Observation) -> str | None:
        """Why the observation is a glitch (a finite value out of the guard's bounds), or None; under the clip
        policy msg is clipped in place. Non-finite values are left to validation.
        """
        values = np.asarray(msg.values, dtype=np.float64)
        if values.shape != (self.obs_dim,) or not np.isfinite(values).all() or not math.isfinite(msg.reward):
            return None
        bad_obs = bool(self.guard.observation_glitches(values[None])[0])
        bad_reward = abs(msg.reward) > self.guard.reward_bound
        if not (bad_obs or bad_reward):
            return None
        with self._lock:
            self.glitch_count += 1
        if bad_obs:
            i = int(np.flatnonzero(np.abs(values) > self.guard.obs_bound)[0])
            reason = (f"glitch: observation field '{self.spec.field_names[i]}' = {values[i]:.6g} is beyond its "
                      f"bound {self.guard.obs_bound[i]:.6g}")
        else:
            reason = f"glitch: reward {msg.reward:.6g} is beyond the bound {self.guard.reward_bound:g}"
        if self.guard.policy == "clip":
            obs, _ = self.guard.observations(values[None].astype(np.float32), None)
            msg.values = obs[0].astype(np.float32).tolist()
            msg.reward = float(self.guard.rewards(np.array([msg.reward]))[0][0])
        return reason

    def _on_encoded(self, msg: EncodedState) -> None:
        if self._closing or not self.active:
            return
        key = (int(msg.episode), int(msg.step))
        if key not in self._handled:
            self._add_half(key, 1, msg)

    def _add_half(self, key, index: int, msg) -> None:
        halves = self._join.setdefault(key, [None, None])
        halves[index] = msg
        if halves[0] is None or halves[1] is None:
            while len(self._join) > JOIN_CAPACITY:
                self._join.popitem(last=False)
            return
        del self._join[key]
        self._mark_handled(key)
        obs, enc = halves
        try:
            features = self._features(obs, enc)
        except InvalidObservation as exc:
            self._reject(obs, str(exc))
            return
        if self.realtime:
            self._act_on_fresh(("ok", obs, features))
        else:
            self._step(obs, features)

    def _mark_handled(self, key) -> None:
        self._handled[key] = True
        while len(self._handled) > JOIN_CAPACITY:
            self._handled.popitem(last=False)

    def _features(self, obs: Observation, enc: EncodedState) -> np.ndarray:
        embedding = np.asarray(enc.embedding, dtype=np.float32)
        if not np.isfinite(embedding).all():
            i = int(np.flatnonzero(~np.isfinite(embedding))[0])
            raise InvalidObservation(f"encoded_state field 'embedding' (index {i}) is {embedding[i]}")
        if self.layout is None:
            self._build_learner(embedding.size, enc.backbone_id)
        if enc.readout and self.layout.readout not in (enc.readout, "none"):
            raise InvalidObservation(f"encoded_state field 'readout' is {enc.readout!r}, the heads take the "
                                     f"{self.layout.readout!r} readout (set readout under /** for every node)")
        if enc.backbone_id and self.layout.embedding_dim and enc.backbone_id != self.layout.backbone:
            raise InvalidObservation(f"encoded_state field 'backbone_id' is {enc.backbone_id!r}, the heads (resumed "
                                     f"from {self.params['checkpoint_dir']}) take {self.layout.backbone!r}")
        if embedding.size != self.layout.encoded_dim:
            critic = f", critic {self.layout.critic_backbone}" if self.layout.critic_backbone else ""
            raise InvalidObservation(f"encoded_state field 'embedding' has length {embedding.size}, the feature "
                                     f"layout (backbone {self.layout.backbone}{critic}, readout "
                                     f"{self.layout.readout}) takes {self.layout.encoded_dim}")
        return assemble_features(embedding[None], observation_to_array(obs)[None], self.layout, [obs.mission])[0]

    def _bookkeep(self, msg: Observation, count_reward: bool = True) -> None:
        """Env steps and undiscounted episode returns, straight from the bridge's observations (a rejected
        glitch's reward does not count).
        """
        episode = int(msg.episode)
        with self._lock:
            if episode != self._current_episode:
                self._current_episode, self._current_return = episode, 0.0
            if msg.step > 0:
                self.global_step += 1
                if count_reward and math.isfinite(msg.reward):
                    self._current_return += float(msg.reward)
            if msg.terminated or msg.truncated:
                self.episode_returns.append(self._current_return)
                self._current_episode = None

    # -- the learner --------------------------------------------------------------------------------------------
    def _build_learner(self, embedding_size: int, backbone_id: str = "") -> None:
        """The heads for the first encoded state's layout: its width tells the backbone's (per field or pooled),
        the feature parameters tell the rest; a resumed checkpoint must record the same layout.
        """
        p = self.params
        vectors = len(self.spec.readout_fields) if (p.get("pooling") or p["readout"]) in FIELD_READOUTS else 1
        # With a critic backbone the embedding is [policy readout | critic readout], of equal widths (every
        # registry backbone is 384 wide; another pair's widths could not be told apart from the message).
        vectors *= 2 if p["critic_backbone"] else 1
        hidden = embedding_size // vectors
        if hidden * vectors != embedding_size:
            raise InvalidObservation(f"encoded_state field 'embedding' has length {embedding_size}, not a multiple "
                                     f"of the {vectors} vectors the {p['readout']} readout"
                                     f"{' of both backbones' if p['critic_backbone'] else ''} gives")
        self._make_learner(node_layout(p, (backbone_id or "unnamed") if embedding_size else "mlp", hidden,
                                       hidden if p["critic_backbone"] and embedding_size else 0))
        if p["resume"] and self._checkpoint_exists():
            self._resume()
        self._log_heads()

    def _make_learner(self, layout: FeatureLayout) -> None:
        p = self.params
        self.layout = layout
        self.feature_dim = layout.feature_dim
        self.learner = OnlineLearner(
            self.feature_dim, self.action_space, self.ppo_config, seed=p["seed"],
            normalize_features=p["normalize_features"], normalize_reward=p["normalize_reward"],
            checkpoint_dir=p["checkpoint_dir"] if self.learn else None,
            updates=p["update_worker"] if self.learn else "none",  # acting only: no update process, no torch
            extra_state=self._extra_state, on_update=self._on_update, layout=self.layout,
            on_failure=self._on_failed_update, on_checkpoint=self._on_checkpoint,
            update_process=self._early_process)
        self._early_process = None  # the learner's now

    def _checkpoint_exists(self) -> bool:
        ckpt = Path(self.params["checkpoint_dir"])
        aside = ckpt.parent / f".{ckpt.name}.previous"  # a save that died between its renames (see checkpoint.py)
        return (ckpt / STATE_FILE).is_file() or aside.is_dir()

    def _resume(self) -> None:
        ckpt = Path(self.params["checkpoint_dir"])
        try:
            extra = self.learner.load(ckpt)
        except BitrlError as exc:
            self.get_logger().fatal(str(exc))
            self.learner = self.layout = self.feature_dim = None
            raise
        with self._lock:
            self.global_step += int(extra.get("global_step", 0))
            self.episode_returns[:0] = [float(r) for r in extra.get("episode_returns", [])]
            self._returns_reported = len(self.episode_returns)
            self._last_stats_step = self.global_step
        self.restored = {"updates": self.learner.num_updates, "global_step": int(extra.get("global_step", 0)),
                         "episodes": int(extra.get("episodes", 0))}
        self.get_logger().info(f"resumed from {ckpt}: {self.restored['updates']} updates, global step "
                               f"{self.restored['global_step']}, {self.restored['episodes']} episodes")

    def _log_heads(self) -> None:
        readout = self.learner.readout
        critic = (f"; the value head reads critic {self.layout.critic_backbone} from column "
                  f"{self.layout.policy_dim}" if self.layout.critic_backbone else "")
        self.get_logger().info(f"heads built: {self.feature_dim} features ({self.layout.backbone}{critic}, readout "
                               f"{self.layout.readout}{', raw observation' if self.layout.raw_skip else ''}) -> "
                               f"{self.action_space}" + (f"; trainable readout {readout}" if readout else ""))

    def _extra_state(self) -> dict:
        with self._lock:
            return {"global_step": self.global_step, "episodes": len(self.episode_returns),
                    "episode_returns": self.episode_returns[-RETURNS_KEPT:]}

    def _on_update(self, stats: dict) -> None:
        """Runs in the learner's updating thread (its worker, or the update process's reader) after each update."""
        now = time.monotonic()
        with self._lock:
            fresh = self.episode_returns[self._returns_reported:] or self.episode_returns[-RETURN_WINDOW:]
            self._returns_reported = len(self.episode_returns)
            sps = (self.global_step - self._last_stats_step) / max(now - self._last_stats_time, 1e-9)
            self._last_stats_time, self._last_stats_step = now, self.global_step
            global_step, episodes = self.global_step, len(self.episode_returns)
        msg = TrainingStats(update=int(stats["num_updates"]), global_step=global_step, episodes=episodes)
        for field in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "grad_norm",
                      "explained_variance", "update_ms"):
            setattr(msg, field, float(stats[field]))
        msg.mean_return = float(np.mean(fresh)) if fresh else float("nan")
        msg.steps_per_second = float(sps)
        msg.header.stamp = self.get_clock().now().to_msg()
        try:
            self.stats_pub.publish(msg)
        except Exception as exc:  # the context may be shutting down under a late update
            if not self._closing:
                self.get_logger().warning(f"could not publish training_stats: {exc}")

    # -- acting -------------------------------------------------------------------------------------------------
    def _step(self, obs: Observation, features: np.ndarray) -> Action | None:
        """Record the transition that led to this state, then act on it (unless it is terminal)."""
        learner = self.learner
        key = (int(obs.episode), int(obs.step))
        terminal = obs.terminated or obs.truncated
        if self._pending_key is not None:
            if self.learn and self._pending_key == (key[0], key[1] - 1):
                final = learner.normalize(features[None], update=False) if obs.truncated else None
                learner.record([obs.reward], [obs.terminated], [obs.truncated], final_features=final)
            else:
                learner.discard_pending()  # a state went missing in between: the transition is unknown
            self._pending_key = None
        if terminal:
            return None  # the bridge resets without waiting for an action
        x = learner.normalize(features[None], update=self.learn)
        if self.learn:
            learner.update_if_ready(x)
        actions, log_probs, values = learner.act(x, deterministic=not self.learn, learn=self.learn)
        if self.learn:
            self._pending_key = key
        msg = copy_header(obs, Action())
        msg.log_prob, msg.value = float(log_probs[0]), float(values[0])
        msg.policy_version = int(learner.policy_version)
        self._fill_action(msg, actions[0])
        return self._publish(msg, answers_observation=True)

    def _fill_action(self, msg: Action, action) -> None:
        if self.discrete:
            msg.discrete = int(action)
            return
        raw = np.asarray(action, dtype=np.float32)
        clipped = clip_action(raw, self.action_space)
        if not np.array_equal(clipped, raw):
            self.clipped_count += 1
        msg.continuous = to_float32_list(clipped)

    def _safe_action(self, src) -> Action:
        if self.params["safe_action"] == "hold" and self._last_action is not None:
            last = self._last_action
            msg = Action(discrete=last.discrete, continuous=last.continuous)
        else:
            msg = Action()
            if self.discrete:
                msg.discrete = int(self.action_space.start)
            else:
                zero = np.zeros(self.action_space.shape, dtype=np.float32)
                msg.continuous = to_float32_list(clip_action(zero, self.action_space))
        if src is not None:
            copy_header(src, msg)
        elif self._last_action is not None:
            copy_header(self._last_action, msg)
        msg.safe_action = True
        msg.policy_version = int(self.learner.policy_version) if self.learner is not None else 0
        self.safe_actions += 1
        return msg

    def _publish(self, msg: Action, answers_observation: bool = False) -> Action:
        """Publish an action: at once, or (realtime, action_release_ms > 0, an action that answers an observation)
        at that observation's stamp + action_release_ms. Held, watchdog and shutdown actions always go at once.
        """
        if answers_observation and self._release is not None:
            self._release.submit(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, msg)
        else:
            self._publish_now(msg)
        return msg

    def _publish_now(self, msg: Action) -> None:
        if not msg.safe_action:
            self._last_action = msg  # what a hold repeats: the last action out, never one still waiting
        self.action_pub.publish(msg)
        with self._lock:
            self.actions_published += 1

    def _reject(self, obs: Observation, reason: str) -> None:
        """Invalid input: count, WARN (naming the field), drop the open transition, answer with the safe action."""
        self.invalid_count += 1
        self._mark_handled((int(obs.episode), int(obs.step)))
        self._join.pop((int(obs.episode), int(obs.step)), None)
        self.get_logger().warning(f"rejected episode {obs.episode} step {obs.step}: {reason}",
                                  throttle_duration_sec=1.0)
        now = time.monotonic()
        if now - self._last_input_diag >= 0.5:
            self._last_input_diag = now
            self._diagnose("input", WARN, reason, {"invalid inputs": self.invalid_count,
                                                   "episode": int(obs.episode), "step": int(obs.step)})
        self._drop_pending()
        if obs.terminated or obs.truncated:
            return
        if self.realtime:
            self._act_on_fresh(("invalid", obs))
        else:
            self._publish(self._safe_action(obs))

    def _drop_pending(self) -> None:
        if self.learner is not None:
            self.learner.discard_pending()
        self._pending_key = None

    def _on_failed_update(self, problem: str, stopped: bool) -> None:
        """Runs in the learner's updating thread when an update was undone (update_problem) or lost with its process."""
        learner = self.learner
        message = f"PPO update undone: {problem}; acting on the previous weights"
        if stopped:
            message += f"; learning stopped after {learner.consecutive_failures} failed updates in a row"
        self.get_logger().error(message)
        try:
            self._diagnose("learning", ERROR, message, {"failed updates": learner.failed_updates,
                                                        "learning stopped": learner.learning_stopped})
        except Exception as exc:  # the context may be shutting down under a late update
            if not self._closing:
                self.get_logger().warning(f"could not publish the learning status: {exc}")

    def _on_checkpoint(self, error: str | None) -> None:
        """Runs in the learner's updating thread when checkpoint writing starts failing (error) or works again."""
        learner = self.learner
        if error is not None:
            self.get_logger().error(error + "; learning goes on in memory, retrying at every update")
        else:
            self.get_logger().info("checkpoints are written again")
        try:
            self._diagnose("checkpoint", ERROR if error else OK, error or "written",
                           {"failed writes": learner.checkpoint_failures})
        except Exception as exc:  # the context may be shutting down under a late update
            if not self._closing:
                self.get_logger().warning(f"could not publish the checkpoint status: {exc}")

    def _diagnose(self, component: str, level: int, message: str, values: dict) -> None:
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [make_status(f"{NODE_NAME}: {component}", level, message, HARDWARE_ID, values)]
        self.diag_pub.publish(arr)

    # -- realtime -----------------------------------------------------------------------------------------------
    def _act_on_fresh(self, fresh) -> None:
        """Realtime: act on a newly joined (or rejected) state right away; the timer only fills gaps."""
        self._last_fresh = time.monotonic()
        self._armed = True
        self._stale_ticks = 0
        if self._tripped:
            self._tripped = False
            self.get_logger().info("observations are back; watchdog cleared")
            self._diagnose("watchdog", OK, "fresh observations", {"trips": self.watchdog_trips})
        if fresh[0] == "invalid":
            self._publish(self._safe_action(fresh[1]), answers_observation=True)
        else:
            self._step(fresh[1], fresh[2])

    def _on_tick(self) -> None:
        if self._closing or not self.active:
            return
        # Fed by arrivals within the last 1.5 periods: the actions already went out, nothing to fill in.
        stale_periods = (time.monotonic() - self._last_fresh) / self._period
        if stale_periods < 1.5 or not self._armed:
            return  # (not armed: nothing ever arrived, nothing to act on or to watch yet)
        self._stale_ticks = int(stale_periods)
        if self._stale_ticks < self.params["watchdog_periods"]:
            self._hold()
            return
        if not self._tripped:
            self._tripped = True
            self._trip_ticks = 0
            self.watchdog_trips += 1
            self._drop_pending()
            self.get_logger().error(f"watchdog: no fresh observation for {self._stale_ticks} control periods; "
                                    f"publishing the safe action ({self.params['safe_action']})")
        if self._trip_ticks % self._ticks_per_diag == 0:
            self._diagnose("watchdog", ERROR, f"no fresh observation for {self._stale_ticks} control periods",
                           {"stale periods": self._stale_ticks, "trips": self.watchdog_trips,
                            "safe action": self.params["safe_action"]})
        self._trip_ticks += 1
        self._publish(self._safe_action(None))

    def _hold(self) -> None:
        if self._last_action is not None:
            self.held_count += 1
            self._publish_now(self._last_action)

    # -- services -----------------------------------------------------------------------------------------------
    def _on_save_checkpoint(self, request, response):
        target = request.path or self.params["checkpoint_dir"]
        if self.learner is None:
            response.success, response.message = False, "no state received yet: the heads do not exist"
            return response
        try:
            response.path = str(self.learner.save(target, timeout=10.0))
            response.success = True
            self.get_logger().info(f"checkpoint written to {response.path}")
        except (OSError, TimeoutError, ValueError) as exc:
            response.success, response.message = False, f"{target}: {exc}"
            self.get_logger().error(f"save_checkpoint failed: {response.message}")
        return response


def main(args=None) -> int:
    torch_on_one_thread()
    return spin_node(PolicyValueNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
