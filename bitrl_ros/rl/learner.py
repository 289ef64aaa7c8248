"""Online PPO over one or more streams of transitions: the piece `bitrl train` and the policy_value node share.

Protocol, per stream and step (all arrays are [num_envs, ...]):

    x = learner.normalize(raw_features)           # running feature statistics, updated
    learner.update_if_ready(x)                    # the previous rollout is full: learn (sync or in background)
    actions, log_probs, values = learner.act(x)   # acting never waits for learning
    ... environment step ...
    learner.record(rewards, terminated, truncated, final_features=learner.normalize(final_raw, update=False))

`updates` says where an update runs: "inline" (in update_if_ready, `bitrl train`), "thread" (a worker thread
of this process) or "process" (a child process, rl/update_worker.py: the acting interpreter never runs an update,
so its lock never delays an action, and never imports torch: the child owns the PPO, the actor here evaluates the
heads in numpy, rl/numpy_heads.py; the policy_value node's default); or "none": acting only (a node with learn:
false), the numpy heads read from a checkpoint without torch, a full rollout dropped. With a thread or a process
the actor keeps acting with its own copy of the heads while the learner's PPO (heads + optimizers) is updated;
when the update finishes the new weights are published as one reference and the actor loads them at its next
act(): an update never delays an action. The full rollout is handed over by swapping buffers, not copied. A
rollout that fills up while the previous update is still running is dropped by update_if_ready() and counted
(rollouts_dropped), never waited for; record() refuses to add to a full rollout instead of dropping it. After
every update the checkpoint is replaced atomically.

An update that produces a non-finite statistic or weight, or an exploding one (update_problem), is undone: the
weights and optimizer states of before it are put back, no checkpoint is written and on_failure is told; after
MAX_CONSECUTIVE_FAILURES undone updates in a row learning stops and acting continues on the last good weights.
"""
from __future__ import annotations

import copy
from pathlib import Path
import threading
import time
from typing import Callable

import numpy as np

from bitrl_ros.errors import CheckpointError
from bitrl_ros.features import FeatureLayout
from bitrl_ros.rl.buffer import RolloutBuffer
from bitrl_ros.rl.checkpoint import (heads_arrays, load_checkpoint, load_heads_arrays, read_acting_heads,
                                     read_checkpoint_state, save_checkpoint)
from bitrl_ros.rl.config import PPOConfig
from bitrl_ros.rl.normalize import ObservationNormalizer, RewardNormalizer


# An update is undone when a statistic or a weight is not finite, or when it moved the policy further than PPO's
# clipping allows for any sane step (approx-KL, which stays around 0.01 here, above 1: an exploding update).
MAX_APPROX_KL = 1.0
MAX_CONSECUTIVE_FAILURES = 3  # then learning stops; acting goes on with the last good weights
CHECKED_STATS = ("policy_loss", "value_loss", "entropy", "approx_kl", "grad_norm")
UPDATE_MODES = ("inline", "thread", "process", "none")
LOAD_TIMEOUT_S = 120.0  # the update process's answer to a load (it may still be importing torch, on a loaded board)


def update_problem(stats: dict, ppo) -> str | None:
    """Why an update must be undone, or None when it is healthy."""
    for key in CHECKED_STATS:
        if not np.isfinite(stats.get(key, 0.0)):
            return f"non-finite {key} ({stats[key]})"
    if not ppo.finite():
        return "non-finite weights"
    if stats.get("approx_kl", 0.0) > MAX_APPROX_KL:
        return f"exploding update (approx_kl {stats['approx_kl']:.3g} > {MAX_APPROX_KL})"
    return None


def run_update(ppo, rollout, last_values, last_dones, checkpoint_dir, extra: dict):
    """One update of ppo, undone when unhealthy, then its checkpoint: the step every update mode runs (in this
    process or in rl/update_worker's child). Returns an UpdateResult (stats None: undone, problem says why).
    """
    from bitrl_ros.rl.update_worker import UpdateResult

    t0 = time.perf_counter()
    before = ppo.snapshot()
    stats = ppo.update(rollout, last_values, last_dones)
    problem = update_problem(stats, ppo)
    if problem is not None:
        ppo.restore(before)
        return UpdateResult(problem=problem)
    stats["update_ms"] = 1000 * (time.perf_counter() - t0)
    error = None
    if checkpoint_dir is not None:
        try:
            save_checkpoint(checkpoint_dir, ppo, dict(extra, policy_version=ppo.num_updates))
        except OSError as exc:  # a disk that refuses (full, read-only, gone): learning goes on in memory
            error = f"cannot write the checkpoint {checkpoint_dir}: {exc.strerror or exc}"
    return UpdateResult(stats=stats, checkpoint_error=error)


class OnlineLearner:
    def __init__(self, feature_dim: int, action_space, config: PPOConfig, seed: int = 0,
                 normalize_features: bool = True, normalize_reward: bool = True,
                 checkpoint_dir: str | Path | None = None, updates: str = "inline",
                 extra_state: Callable[[], dict] | None = None,
                 on_update: Callable[[dict], None] | None = None, layout=None,
                 on_failure: Callable[[str, bool], None] | None = None,
                 on_checkpoint: Callable[[str | None], None] | None = None, update_process=None):
        """layout: the FeatureLayout of the features (recorded in checkpoints, checked on load; it also says
        which trainable readout the heads carry). None: plain heads, nothing recorded (unit tests).
        on_failure(problem, stopped): called (in the updating thread) when an update was undone; stopped says
        that learning has stopped after MAX_CONSECUTIVE_FAILURES in a row.
        on_checkpoint(error): called when writing checkpoints starts failing (error: why, once per outage) and
        when it works again (None); learning goes on in memory meanwhile.
        update_process: an UpdateProcess made earlier (its child has imported torch meanwhile), for "process" mode;
        None: one is made now. In that mode the heads start from NumpyActor.initial_heads(seed), handed to it.
        """
        if updates not in UPDATE_MODES:
            raise ValueError(f"updates={updates!r} (allowed: {' | '.join(UPDATE_MODES)})")
        if layout is not None and layout.feature_dim != feature_dim:
            raise ValueError(f"feature_dim {feature_dim} differs from the layout's {layout.feature_dim}")
        self.config = config
        self.layout = layout
        self.feature_dim, self.action_space = int(feature_dim), action_space
        structure = {"readout": None if layout is None else layout.head_readout(),
                     "critic": None if layout is None else layout.critic_head(),
                     "commands": None if layout is None else layout.command_scorer()}
        self.readout = structure["readout"]
        self.input_scale = None if layout is None else layout.input_scale()
        self.updates = updates
        self.background = updates in ("thread", "process")
        self.nvfp4_acting = config.acting_precision == "nvfp4"
        # "process": the PPO lives in the child only (self.ppo is None) and the actor is a NumpyActor; its last
        # training state (self._state) starts a new child if this one dies. "none": the NumpyActor alone.
        # "thread": the actor owns separate torch heads; "inline": it is the learner's PPO itself (unless it acts
        # in NVFP4: then always a copy, its policy head quantized from the masters).
        self._process = None  # "process" mode: the UpdateProcess
        self._state = None
        self._num_updates = 0
        if updates in ("process", "none"):
            from bitrl_ros.rl.numpy_heads import NumpyActor
            from bitrl_ros.rl.update_worker import ppo_spec

            self.ppo = None
            self._spec = ppo_spec(feature_dim, action_space, config, seed, **structure)
            self.actor = NumpyActor(feature_dim, action_space, seed, hidden=config.hidden_sizes,
                                    init_log_std=config.init_log_std, **structure)
            self._initial_heads = self.actor.initial_heads(seed)  # acting starts now, not when the child is up
            self.actor.load(self._acting_heads(self._initial_heads))
        else:
            from bitrl_ros.rl.ppo import PPO

            self.ppo = PPO(feature_dim, action_space, config, seed=seed, **structure)
            self.actor = self._new_actor()
        self.feature_norm = ObservationNormalizer((feature_dim,)) if normalize_features else None
        self.reward_norm = RewardNormalizer(config.num_envs, config.gamma) if normalize_reward else None
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.extra_state = extra_state or (lambda: {})
        self.on_update = on_update
        self.on_failure = on_failure
        self.on_checkpoint = on_checkpoint
        self.checkpoint_error: str | None = None  # why the last checkpoint could not be written; None: it was
        self.checkpoint_failures = 0
        self.failed_updates = 0          # updates undone (non-finite or exploding), in total
        self.consecutive_failures = 0
        self.learning_stopped = False    # after MAX_CONSECUTIVE_FAILURES: act on the last good weights only
        self.last_problem: str | None = None
        self.buffer = RolloutBuffer.for_space(config, feature_dim, action_space)
        self._spare_buffer = None  # the background modes: the other rollout buffer, once its update is done
        self.policy_version = 0
        self.rollouts_dropped = 0
        self.last_stats: dict = {}
        self._pending = None  # (features, actions, log_probs, values) of the last act(), awaiting record()
        self._last_dones = np.zeros(config.num_envs, dtype=bool)
        self._new_weights = None
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._in_flight = threading.Event()  # "process" mode: an update was submitted and has not come back
        self._flight_lock = threading.Lock()  # a dead child's lost update is reported once, by whoever sees it
        if updates == "process":
            self._process = update_process
            self._update_process()

    # -- acting ------------------------------------------------------------------------------------------------
    def normalize(self, features: np.ndarray, update: bool = True) -> np.ndarray:
        features = np.asarray(features, dtype=np.float32)
        if self.feature_norm is not None:
            if update and not self.feature_norm.frozen:
                self.feature_norm.update(features)
            features = self.feature_norm.normalize(features).astype(np.float32)
        return features if self.input_scale is None else features * self.input_scale

    def act(self, features: np.ndarray, deterministic: bool = False, learn: bool = True):
        """Actions, log-probs and values for normalized features; remembers them for record() when learning."""
        self._swap_in_new_weights()
        actions, log_probs, values = self.actor.act(features, deterministic=deterministic)
        if learn:
            self._pending = (features, actions, log_probs, values)
        return actions, log_probs, values

    def value(self, features: np.ndarray) -> np.ndarray:
        self._swap_in_new_weights()
        return self.actor.value(features)

    def record(self, rewards, terminated, truncated, final_features: np.ndarray | None = None) -> None:
        """Complete the transitions started by the last act(). final_features: normalized features of the
        final observations (needed for truncated, not terminated, streams; rows elsewhere are ignored).
        """
        if self._pending is None:
            raise RuntimeError("record() without a preceding act()")
        if self.buffer.full:  # checked before anything (the reward normalizer included) changes
            raise RuntimeError("record() on a full rollout: call update_if_ready() before each act() (the "
                               "protocol in this module's docstring); no transition was dropped")
        features, actions, log_probs, values = self._pending
        self._pending = None
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        dones = terminated | truncated
        rewards = np.asarray(rewards, dtype=np.float64)
        if self.reward_norm is not None:
            rewards = self.reward_norm(rewards, dones)
        bootstrap = None
        if final_features is not None and (truncated & ~terminated).any():
            bootstrap = self.actor.value(final_features)
        self.buffer.add(features, actions, log_probs, values, rewards, terminated, truncated, bootstrap)
        self._last_dones = dones

    def discard_pending(self) -> None:
        """Forget the last act() (e.g. its action never reached the environment)."""
        self._pending = None

    # -- learning ----------------------------------------------------------------------------------------------
    @property
    def updating(self) -> bool:
        if self.updates == "process":
            return self._in_flight.is_set()
        return self._worker is not None and self._worker.is_alive()

    @property
    def num_updates(self) -> int:
        return self._num_updates if self.ppo is None else self.ppo.num_updates

    def update_if_ready(self, next_features: np.ndarray) -> bool:
        """Start an update when the rollout is full. next_features: normalized features after the last step."""
        if not self.buffer.full:
            return False
        if self.learning_stopped or self.updates == "none":
            self.buffer.reset()
            return False
        if self.updating:
            self.buffer.reset()
            self.rollouts_dropped += 1
            return False
        last_values = self.actor.value(next_features)
        last_dones = self._last_dones.copy()
        extra = self._extra()
        if not self.background:
            self._finish(run_update(self.ppo, self.buffer, last_values, last_dones, self.checkpoint_dir, extra))
            self.buffer.reset()
            return True
        rollout = self.buffer
        self.buffer = self._spare_buffer or RolloutBuffer.for_space(self.config, self.feature_dim, self.action_space)
        self._spare_buffer = None
        self.buffer.reset()
        if self.updates == "process":
            self._submit(rollout, last_values, last_dones, extra)
            return True
        self._worker = threading.Thread(target=self._run_in_thread, args=(rollout, last_values, last_dones, extra),
                                        name="ppo-update", daemon=True)
        self._worker.start()
        return True

    def _give_back(self, rollout) -> None:
        self._spare_buffer = rollout

    def _update_process(self):
        """The update process, started from the last training state; a new one if it died."""
        process = self._process
        if process is None or process.dead or not process.alive():
            from bitrl_ros.rl.update_worker import UpdateProcess

            process = self._process = UpdateProcess()
        if not process.started:
            process.start(self._spec, self._state, self._initial_heads, self._on_process_result)
        return process

    def _take_state(self, reply: dict) -> None:
        """The child's training state and heads (its answer to init or load, or an update's result)."""
        self._state, self._num_updates = reply["state"], int(reply["num_updates"])
        self.actor.load(self._acting_heads(reply["heads"]))

    def _submit(self, rollout, last_values, last_dones, extra) -> None:
        """Hand the rollout to the update process."""
        process = self._update_process()
        with self._flight_lock:
            self._in_flight.set()
            sent = process.submit(rollout, last_values, last_dones, self.checkpoint_dir, extra,
                                  done=lambda: self._give_back(rollout))
        if not sent:  # it died between the check above and now
            self._lost_update("the PPO update process had exited")

    def _run_in_thread(self, rollout, last_values, last_dones, extra) -> None:
        self._finish(run_update(self.ppo, rollout, last_values, last_dones, self.checkpoint_dir, extra))
        self._give_back(rollout)

    def _on_process_result(self, result) -> None:
        """The reader thread of the update process: load the child's training state, then report as any mode."""
        if result.worker_died:  # the next update starts a new child from this process's mirror
            self._lost_update(result.problem)
            return
        try:
            if result.stats is not None:
                self._state, self._num_updates = result.state, result.num_updates
            self._finish(result)
        finally:
            self._in_flight.clear()

    def _lost_update(self, problem: str) -> None:
        """The update process died: the update in flight, if any, is lost (reported once, like an undone one);
        one that died idle lost nothing.
        """
        with self._flight_lock:
            if self._in_flight.is_set():
                self._failed(problem)
                self._in_flight.clear()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the update process ("process" mode), after the update in flight, if any."""
        self.wait(timeout)
        if self._process is not None:
            self._process.close(timeout)
            self._process = None

    def wait(self, timeout: float | None = None) -> None:
        """Block until a background update (if any) has finished; for shutdown and tests, never in a loop."""
        if self._worker is not None:
            self._worker.join(timeout)
        if self.updates == "process":
            deadline = None if timeout is None else time.monotonic() + timeout
            while self._in_flight.is_set() and (deadline is None or time.monotonic() < deadline):
                time.sleep(0.005)
        self._swap_in_new_weights()

    def _finish(self, result) -> None:
        """Account for one update's result (run_update's, wherever it ran): new weights for the actor, the
        checkpoint's outcome, the callbacks; or an undone update.
        """
        if result.stats is None:
            self._failed(result.problem)
            return
        self.consecutive_failures = 0
        version = self.num_updates
        if self.background:
            heads = self._acting_heads(result.heads if self.ppo is None else heads_arrays(self.ppo))
            with self._lock:
                self._new_weights = (heads, version)
        else:
            if self.nvfp4_acting:
                load_heads_arrays(self.actor, self._acting_heads(heads_arrays(self.ppo)))
            self.policy_version = version
        if self.checkpoint_dir is not None:
            self._checkpoint_outcome(result.checkpoint_error)
        self.last_stats = result.stats
        if self.on_update is not None:
            self.on_update(result.stats)

    def _checkpoint_outcome(self, error: str | None) -> None:
        """A checkpoint that could not be written is reported once and retried at every update (save_checkpoint
        never leaves a half-written one: it renames complete ones into place); its return is reported too.
        """
        if error is not None:
            self.checkpoint_failures += 1
            first = self.checkpoint_error is None
            self.checkpoint_error = error
            if first and self.on_checkpoint is not None:
                self.on_checkpoint(error)
            return
        if self.checkpoint_error is not None:
            self.checkpoint_error = None
            if self.on_checkpoint is not None:
                self.on_checkpoint(None)

    def _failed(self, problem: str) -> None:
        """An update was undone (run_update put back the weights and optimizer states): no checkpoint, no new
        weights; learning stops after MAX_CONSECUTIVE_FAILURES in a row.
        """
        self.failed_updates += 1
        self.consecutive_failures += 1
        self.last_problem = problem
        if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            self.learning_stopped = True
        if self.on_failure is not None:
            self.on_failure(problem, self.learning_stopped)

    def _new_actor(self):
        """The torch actor of the inline and thread modes (a NumpyActor in process mode is made once)."""
        if not (self.background or self.nvfp4_acting):
            return self.ppo
        actor = copy.deepcopy(self.ppo)
        if self.nvfp4_acting:
            load_heads_arrays(actor, self._acting_heads(heads_arrays(self.ppo)))
        return actor

    def _acting_heads(self, heads: dict) -> dict:
        """The heads' weights the actor takes (heads_arrays' names): the masters', with every linear weight matrix
        of the policy as its NVFP4 round trip when acting in NVFP4 (biases and log_std stay fp32, as in
        weight-only NVFP4; the heads' only 2-D '.weight' parameters are their Linear layers').
        """
        if not self.nvfp4_acting:
            return heads
        from bitrl_ros.backbone.precision import round_trip

        return {k: round_trip(v.astype(np.float32), "nvfp4").astype(np.float32)
                if k.startswith("policy.") and k.endswith(".weight") and v.ndim == 2 else v for k, v in heads.items()}

    def _swap_in_new_weights(self) -> None:
        if self._new_weights is None:
            return
        with self._lock:
            heads, version = self._new_weights
            self._new_weights = None
        if self.ppo is None:
            self.actor.load(heads)
        else:
            load_heads_arrays(self.actor, heads)
        self.policy_version = version

    # -- checkpoints -------------------------------------------------------------------------------------------
    def _extra(self) -> dict:
        extra = dict(self.extra_state())
        extra["feature_layout"] = None if self.layout is None else self.layout.to_dict()
        extra["feature_norm"] = self.feature_norm.state_dict() if self.feature_norm else None
        extra["reward_norm"] = self.reward_norm.state_dict() if self.reward_norm else None
        return extra

    def save(self, checkpoint_dir: str | Path | None = None, timeout: float | None = None) -> Path:
        """Write a checkpoint now (atomically) to checkpoint_dir or the learner's own; a running background
        update is waited for first, so the saved heads, optimizers and counters belong together.
        """
        path = Path(checkpoint_dir) if checkpoint_dir else self.checkpoint_dir
        if path is None:
            raise ValueError("no checkpoint directory given and the learner has none")
        self.wait(timeout)
        if self.updating:
            raise TimeoutError("a PPO update is still running")
        extra = self._extra()
        extra["policy_version"] = self.num_updates
        if self.ppo is not None:
            return save_checkpoint(path, self.ppo, extra)
        if self.updates == "none":
            raise ValueError("this learner only acts (updates: none): it has no training state to save")
        try:
            reply = self._update_process().save(path, extra, timeout)  # the child owns the training state
        except RuntimeError as exc:  # it died during the save
            raise OSError(f"cannot write the checkpoint {path}: {exc}") from None
        if reply["error"] is not None:
            raise OSError(f"cannot write the checkpoint {path}: {reply['error']}")
        return Path(reply["path"])

    def load(self, checkpoint_dir: str | Path, restore_global_rngs: bool = False) -> dict:
        """Restore heads, optimizers, the heads' generators and normalizers; returns the caller's extra state.
        restore_global_rngs: see load_checkpoint (only the process that is the training run asks for it).
        """
        if self.layout is not None:
            saved = read_checkpoint_state(checkpoint_dir)["extra"].get("feature_layout")
            where = f"{checkpoint_dir}"
            if saved is None:
                raise CheckpointError(f"{where}: the checkpoint records no feature layout (written before layouts "
                                      "were recorded); it cannot be matched to these features: start fresh")
            self.layout.check_same(FeatureLayout.from_dict(saved, where), where)
        self.wait()
        if self.updates == "none":
            heads, state = read_acting_heads(checkpoint_dir, self.feature_dim, self.action_space, self._initial_heads)
            self.actor.load(self._acting_heads(heads))
            self._num_updates, extra = int(state["num_updates"]), state["extra"]
        elif self.ppo is None:  # the child loads it; its action generator is not restored here (NumpyActor's own)
            try:
                reply = self._update_process().load(checkpoint_dir, LOAD_TIMEOUT_S)
            except (RuntimeError, TimeoutError) as exc:
                raise CheckpointError(f"{checkpoint_dir}: not loaded: {exc}") from None
            if reply["error"] is not None:
                raise CheckpointError(reply["error"])
            self._take_state(reply)
            extra = reply["extra"]
        else:
            extra = load_checkpoint(checkpoint_dir, self.ppo, restore_global_rngs)
            self.actor = self._new_actor()
        if self.feature_norm is not None and extra.get("feature_norm"):
            self.feature_norm.load_state_dict(extra["feature_norm"])
        if self.reward_norm is not None and extra.get("reward_norm"):
            self.reward_norm.load_state_dict(extra["reward_norm"])
        self.policy_version = int(extra.get("policy_version", self.num_updates))
        return extra
