"""OnlineLearner: the synchronous path `bitrl train` uses and the background path the policy_value node uses."""
import copy
import json
import os
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

from bitrl_ros.rl.learner import OnlineLearner
from bitrl_ros.rl.ppo import PPOConfig

SPACE = gym.spaces.Discrete(2)


def _config():
    return PPOConfig(num_envs=1, num_steps=128, minibatch_size=32, update_epochs=2)


def _bandit_stream(learner, steps, seed=0, wait=False):
    """A one-step contextual bandit: reward 1 when the action equals the sign of feature 0."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        raw = rng.normal(size=(1, 4)).astype(np.float32)
        x = learner.normalize(raw)
        if learner.update_if_ready(x) and wait:
            learner.wait()
        actions, _, _ = learner.act(x)
        reward = float(actions[0] == int(raw[0, 0] > 0))
        learner.record([reward], [True], [False])


def test_background_updates_match_synchronous_ones(tmp_path):
    sync = OnlineLearner(4, SPACE, _config(), seed=3, normalize_reward=False)
    bg = OnlineLearner(4, SPACE, _config(), seed=3, normalize_reward=False, updates="thread",
                       checkpoint_dir=tmp_path / "ckpt")
    _bandit_stream(sync, 3 * 128 + 1)
    _bandit_stream(bg, 3 * 128 + 1, wait=True)
    assert sync.ppo.num_updates == bg.ppo.num_updates == 3
    assert bg.policy_version == 3
    for a, b in zip(sync.ppo.policy.parameters(), bg.actor.policy.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (tmp_path / "ckpt" / "state.json").exists()


def test_updates_in_a_child_process_match_synchronous_ones(tmp_path):
    """The child updates the heads it was handed as an in-process PPO does, rollout for rollout; the parent acts
    with them in numpy.
    """
    from bitrl_ros.rl.checkpoint import heads_arrays, load_heads_arrays

    sync = OnlineLearner(4, SPACE, _config(), seed=3, normalize_reward=False)
    child = OnlineLearner(4, SPACE, _config(), seed=3, normalize_reward=False, updates="process",
                          checkpoint_dir=tmp_path / "ckpt")
    load_heads_arrays(sync.ppo, child._initial_heads)  # the process mode's own (numpy) starting heads
    rollouts = []
    submit = child._process.submit

    def capture(rollout, last_values, last_dones, *args, **kwargs):
        rollouts.append((copy.deepcopy(rollout), last_values.copy(), last_dones.copy()))
        return submit(rollout, last_values, last_dones, *args, **kwargs)

    child._process.submit = capture
    threads = torch.get_num_threads()
    try:
        for name, w in heads_arrays(sync.ppo).items():
            assert np.array_equal(child.actor.weights[name], w), name
        _bandit_stream(child, 3 * 128 + 1, wait=True)
        pid = child._process.pid
        assert pid != os.getpid() and child._process.alive()
        assert child.num_updates == 3 and child.policy_version == 3 and len(rollouts) == 3
        torch.set_num_threads(1)  # as the child: the same reductions, so the same bits
        for rollout, last_values, last_dones in rollouts:
            sync.ppo.update(rollout, last_values, last_dones)
        for name, w in heads_arrays(sync.ppo).items():
            assert np.array_equal(child.actor.weights[name], w), name
        assert (tmp_path / "ckpt" / "state.json").exists()  # written by the child
        assert json.loads((tmp_path / "ckpt" / "state.json").read_text())["num_updates"] == 3
        # A save from the parent is written by the child, Adam states included.
        saved = child.save(tmp_path / "saved")
        again = OnlineLearner(4, SPACE, _config(), seed=99, normalize_reward=False)
        again.load(saved)
        for a, b in zip(sync.ppo.policy_optimizer.state_dict()["state"].values(),
                        again.ppo.policy_optimizer.state_dict()["state"].values()):
            torch.testing.assert_close(a["exp_avg_sq"], b["exp_avg_sq"], rtol=0, atol=0)
    finally:
        torch.set_num_threads(threads)
        child.close()
    assert child._process is None
    with pytest.raises(ProcessLookupError):  # stopped and reaped
        os.kill(pid, 0)


def test_the_acting_process_of_the_process_mode_never_imports_torch(tmp_path):
    """Acting, learning (in the child), saving and loading, and acting only from that checkpoint: the parent
    process has no torch in it.
    """
    script = f"""
import sys
import gymnasium as gym
import numpy as np
from bitrl_ros.rl.config import PPOConfig
from bitrl_ros.rl.learner import OnlineLearner
config = PPOConfig(num_envs=1, num_steps=64, minibatch_size=32, update_epochs=1)
learner = OnlineLearner(4, gym.spaces.Box(-1, 1, (2,), np.float32), config, updates="process",
                        checkpoint_dir={str(tmp_path / "ckpt")!r})
rng = np.random.default_rng(0)
for _ in range(2 * 64 + 1):
    x = learner.normalize(rng.normal(size=(1, 4)))
    if learner.update_if_ready(x):
        learner.wait(60)
    actions, _, _ = learner.act(x)
    learner.record([-float(np.abs(actions).sum())], [False], [True], final_features=x)
learner.load(learner.save({str(tmp_path / "saved")!r}))
learner.close()
assert learner.num_updates == 2, learner.num_updates
# Acting only (a node with learn: false): the heads read from the checkpoint, no update process.
actor = OnlineLearner(4, gym.spaces.Box(-1, 1, (2,), np.float32), config, updates="none")
actor.load({str(tmp_path / "saved")!r})
assert actor._process is None and actor.num_updates == 2
x = rng.normal(size=(5, 4)).astype(np.float32)
assert np.array_equal(actor.act(x, deterministic=True)[0], learner.act(x, deterministic=True)[0])
print("torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_the_update_process_messages_round_trip_without_pickle():
    from bitrl_ros.rl.update_worker import decode, encode

    message = ("update", {0: {"step": torch.tensor(3.0), "exp_avg": torch.arange(4.0)}, "lr": [3e-4, float("nan")]},
               np.array([True, False]), np.arange(6, dtype=np.int64).reshape(2, 3), None, np.float64(0.5))
    out = decode(encode(message))
    assert out[0] == "update" and isinstance(out, tuple) and set(out[1]) == {0, "lr"}
    assert torch.equal(out[1][0]["exp_avg"], torch.arange(4.0)) and out[1][0]["step"].item() == 3.0
    assert out[1]["lr"][0] == 3e-4 and np.isnan(out[1]["lr"][1])
    assert out[2].dtype == bool and out[2].tolist() == [True, False] and out[3].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert out[4] is None and out[5] == 0.5
    with pytest.raises(TypeError, match="cannot encode"):
        encode({"x": object()})


def test_a_dead_update_process_loses_at_most_its_update_and_the_next_one_starts_anew():
    import signal

    failures = []
    learner = OnlineLearner(4, SPACE, _config(), seed=0, normalize_reward=False, updates="process",
                            on_failure=lambda problem, stopped: failures.append(problem))
    try:
        _bandit_stream(learner, 128 + 1, wait=True)
        first = learner._process._proc
        first.kill()  # idle: nothing is lost, the next update starts a new child
        first.wait()
        _bandit_stream(learner, 128, seed=1, wait=True)
        assert learner.num_updates == 2 and not failures and learner._process.pid != first.pid
        second = learner._process._proc
        second.send_signal(signal.SIGSTOP)  # frozen before it can take the next rollout
        _bandit_stream(learner, 128, seed=2)
        assert learner.updating
        second.kill()
        learner.wait(30)
        assert not learner.updating and learner.failed_updates == 1 and "exited (code -9)" in failures[0]
        assert learner.num_updates == 2 and not learner.learning_stopped
        _bandit_stream(learner, 128 + 1, seed=3, wait=True)  # learning goes on from the last training state
        assert learner.num_updates == 3 and learner.consecutive_failures == 0 and learner.policy_version == 3
    finally:
        learner.close()


def test_actor_keeps_old_weights_until_the_update_finishes():
    bg = OnlineLearner(4, SPACE, _config(), seed=0, normalize_reward=False, updates="thread")
    before = [p.clone() for p in bg.actor.policy.parameters()]
    _bandit_stream(bg, 128)
    x = bg.normalize(np.zeros((1, 4), dtype=np.float32))
    assert bg.update_if_ready(x)
    deadline = time.monotonic() + 30
    while bg.updating and time.monotonic() < deadline:  # the update finishes; the actor swaps at its next act()
        time.sleep(0.01)
    assert not bg.updating
    assert all(torch.equal(a, b) for a, b in zip(before, bg.actor.policy.parameters()))
    bg.act(x)
    assert bg.policy_version == 1
    assert not all(torch.equal(a, b) for a, b in zip(before, bg.actor.policy.parameters()))


def test_rollout_filled_during_an_update_is_dropped_not_waited_for():
    bg = OnlineLearner(4, SPACE, _config(), seed=0, normalize_reward=False, updates="thread")
    release = __import__("threading").Event()
    original = bg.ppo.update

    def slow_update(*args, **kwargs):
        release.wait(30)
        return original(*args, **kwargs)

    bg.ppo.update = slow_update
    _bandit_stream(bg, 2 * 128 + 1)  # the first update blocks on `release` while the second rollout fills
    assert bg.rollouts_dropped == 1 and bg.updating
    release.set()
    bg.wait(30)
    assert bg.ppo.num_updates == 1 and bg.policy_version == 1


def test_learner_learns_the_bandit():
    learner = OnlineLearner(4, SPACE, _config(), seed=1, normalize_reward=False)
    _bandit_stream(learner, 20 * 128 + 1)
    x = learner.normalize(np.array([[2.0, 0, 0, 0], [-2.0, 0, 0, 0]], dtype=np.float32), update=False)
    actions, _, _ = learner.act(x, deterministic=True, learn=False)
    assert list(actions) == [1, 0]


def test_record_refuses_a_full_rollout_instead_of_dropping_it():
    learner = OnlineLearner(4, SPACE, PPOConfig(num_envs=1, num_steps=8, minibatch_size=8), seed=0)
    x = np.zeros((1, 4), dtype=np.float32)
    for _ in range(8):
        learner.act(x)
        learner.record([0.0], [False], [False])
    learner.act(x)  # the protocol says update_if_ready() comes first; skipping it must not lose the rollout
    with pytest.raises(RuntimeError, match="full rollout"):
        learner.record([0.0], [False], [False])
    assert learner.buffer.full and learner.rollouts_dropped == 0
    assert learner.update_if_ready(x) and learner.ppo.num_updates == 1


def test_evaluate_policy_runs_greedy_episodes_without_learning():
    from bitrl_ros.rl.evaluation import evaluate_policy

    env = gym.make("CartPole-v1")
    learner = OnlineLearner(4, env.action_space, _config(), seed=0)
    env.close()
    mean_before = learner.feature_norm.rms.mean.copy()
    a = evaluate_policy("CartPole-v1", lambda obs: obs, learner, 3, seed=5)
    b = evaluate_policy("CartPole-v1", lambda obs: obs, learner, 3, seed=5)
    assert len(a.returns) == 3 and a.returns == b.returns and a.lengths == b.lengths  # deterministic
    assert a.returns == [float(n) for n in a.lengths]  # CartPole pays 1 per step
    assert np.array_equal(learner.feature_norm.rms.mean, mean_before) and learner.buffer.step == 0


def _nan_gradients(learner):
    """Make every later backward pass give the policy's first layer NaN gradients (a poisoned update)."""
    first = next(learner.ppo.policy.parameters())
    return first.register_hook(lambda grad: grad * float("nan"))


def test_a_nan_update_is_undone_and_learning_goes_on(tmp_path):
    failures = []
    learner = OnlineLearner(4, SPACE, _config(), seed=0, normalize_reward=False, checkpoint_dir=tmp_path / "ckpt",
                            on_failure=lambda problem, stopped: failures.append((problem, stopped)))
    _bandit_stream(learner, 128 + 1)  # one good update
    good = {k: v.clone() for k, v in learner.ppo.policy.state_dict().items()}
    saved = (tmp_path / "ckpt" / "state.json").read_text()
    hook = _nan_gradients(learner)
    _bandit_stream(learner, 128, seed=1)  # the second update is poisoned
    hook.remove()
    assert learner.failed_updates == 1 and failures == [(learner.last_problem, False)]
    assert "non-finite" in learner.last_problem and learner.ppo.num_updates == 1
    assert all(torch.equal(good[k], v) for k, v in learner.ppo.policy.state_dict().items())
    assert learner.ppo.finite() and (tmp_path / "ckpt" / "state.json").read_text() == saved  # no bad checkpoint
    _bandit_stream(learner, 128, seed=2)  # learning goes on
    assert learner.ppo.num_updates == 2 and learner.consecutive_failures == 0 and not learner.learning_stopped


def test_repeated_failures_stop_learning_but_not_acting():
    from bitrl_ros.rl.learner import MAX_CONSECUTIVE_FAILURES

    learner = OnlineLearner(4, SPACE, _config(), seed=0, normalize_reward=False)
    initial = {k: v.clone() for k, v in learner.ppo.policy.state_dict().items()}
    _nan_gradients(learner)
    _bandit_stream(learner, 128 * (MAX_CONSECUTIVE_FAILURES + 2) + 1)
    assert learner.learning_stopped and learner.failed_updates == MAX_CONSECUTIVE_FAILURES
    assert learner.ppo.num_updates == 0
    assert all(torch.equal(initial[k], v) for k, v in learner.ppo.policy.state_dict().items())
    x = learner.normalize(np.ones((1, 4), dtype=np.float32), update=False)
    actions, _, values = learner.act(x, learn=False)  # still acting, on the last good weights
    assert actions.shape == (1,) and np.isfinite(values).all()


def test_a_full_disk_is_reported_once_learning_goes_on_and_writing_resumes(tmp_path, monkeypatch):
    import errno

    from safetensors import SafetensorError

    from bitrl_ros.rl import checkpoint

    events = []
    learner = OnlineLearner(4, SPACE, _config(), seed=0, normalize_reward=False, checkpoint_dir=tmp_path / "ckpt",
                            on_checkpoint=events.append)
    _bandit_stream(learner, 128 + 1)
    good = (tmp_path / "ckpt" / "state.json").read_text()
    real_save_file = checkpoint.save_file

    def disk_full(*args, **kwargs):  # what safetensors raises when the disk is full
        raise SafetensorError(f"I/O error: No space left on device (os error {errno.ENOSPC})")

    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    _bandit_stream(learner, 2 * 128, seed=1)
    assert learner.ppo.num_updates == 3 and learner.checkpoint_failures == 2  # learning went on in memory
    assert len(events) == 1 and "No space left on device" in events[0] and learner.checkpoint_error == events[0]
    assert (tmp_path / "ckpt" / "state.json").read_text() == good  # the last complete checkpoint, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # nothing half-written beside it
    monkeypatch.setattr(checkpoint, "save_file", real_save_file)
    _bandit_stream(learner, 128, seed=2)
    assert events[-1] is None and learner.checkpoint_error is None
    restored = OnlineLearner(4, SPACE, _config(), seed=5, normalize_reward=False)
    restored.load(tmp_path / "ckpt")
    assert restored.ppo.num_updates == 4


def test_an_unwritable_checkpoint_path_does_not_stop_learning(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the checkpoint's parent should be")
    events = []
    learner = OnlineLearner(4, SPACE, _config(), seed=0, normalize_reward=False,
                            checkpoint_dir=blocker / "ckpt", on_checkpoint=events.append)
    _bandit_stream(learner, 2 * 128 + 1)
    assert learner.ppo.num_updates == 2 and len(events) == 1 and str(blocker) in events[0]


@pytest.mark.parametrize("updates", ["inline", "thread"])
def test_nvfp4_acting_copy_is_the_round_trip_of_the_fp32_masters(updates):
    from bitrl_ros.backbone.precision import round_trip

    cfg = PPOConfig(num_envs=1, num_steps=128, minibatch_size=32, update_epochs=2, acting_precision="nvfp4")
    learner = OnlineLearner(4, SPACE, cfg, seed=3, normalize_reward=False, updates=updates)

    def check():
        assert learner.actor is not learner.ppo
        for (name, master), (_, acting) in zip(learner.ppo.policy.named_parameters(),
                                               learner.actor.policy.named_parameters()):
            if name.endswith(".weight"):
                assert np.array_equal(acting.detach().numpy(), round_trip(master.detach().numpy(), "nvfp4"))
                assert not torch.equal(acting, master)
            else:
                assert torch.equal(acting, master)   # biases stay fp32
        for master, acting in zip(learner.ppo.value_head.parameters(), learner.actor.value_head.parameters()):
            assert torch.equal(acting, master)       # only the policy acts in NVFP4
    check()
    _bandit_stream(learner, 2 * 128 + 1, wait=True)
    learner.act(learner.normalize(np.zeros((1, 4), dtype=np.float32)))  # takes in the newest weights
    assert learner.ppo.num_updates == 2 and learner.policy_version == 2
    check()
    learner.close()
