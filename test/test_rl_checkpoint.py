import json
import os

import gymnasium as gym
import numpy as np
import pytest
import torch

from bitrl_ros.errors import CheckpointError
from bitrl_ros.rl import checkpoint as ckpt
from bitrl_ros.rl.checkpoint import load_checkpoint, save_checkpoint
from bitrl_ros.rl.normalize import ObservationNormalizer
from bitrl_ros.rl.ppo import PPO, PPOConfig

CFG = PPOConfig(num_envs=2, num_steps=16, minibatch_size=8, update_epochs=2, hidden_sizes=(16, 8))
FEATURES = 6


def fixed_buffer(ppo, seed):
    rng = np.random.default_rng(seed)
    buf = ppo.make_buffer()
    for t in range(CFG.num_steps):
        feats = rng.standard_normal((CFG.num_envs, FEATURES)).astype(np.float32)
        actions, log_probs, values = ppo.act(feats)
        buf.add(feats, actions, log_probs, values, rng.standard_normal(CFG.num_envs),
                [t % 5 == 4, False], [False, t % 7 == 6], bootstrap_values=values)
    return buf


def make_ppo(seed=0, feature_dim=FEATURES, space=None):
    return PPO(feature_dim, space or gym.spaces.Box(-1, 1, (2,)), CFG, seed=seed)


def _heads(ppo) -> dict:
    return {**{f"policy.{k}": v for k, v in ppo.policy.state_dict().items()},
            **{f"value.{k}": v for k, v in ppo.value_head.state_dict().items()}}


def _optimizer_tensors(ppo) -> dict:
    out = {}
    for name, opt in (("policy", ppo.policy_optimizer), ("value", ppo.value_optimizer)):
        for index, state in opt.state_dict()["state"].items():
            out.update({f"{name}.{index}.{k}": v for k, v in state.items() if torch.is_tensor(v)})
    return out


@pytest.fixture
def saved(tmp_path):
    ppo = make_ppo()
    ppo.update(fixed_buffer(ppo, 1), np.zeros(2))
    norm = ObservationNormalizer((FEATURES,))
    norm.update(np.random.default_rng(0).standard_normal((10, FEATURES)))
    path = save_checkpoint(tmp_path / "latest", ppo, {"global_step": 32, "obs_norm": norm.state_dict()})
    return ppo, path, norm


def test_resume_is_bit_identical(saved):
    original, path, norm = saved
    restored = make_ppo(seed=99)  # different init and RNG streams: everything must come from the checkpoint
    extra = load_checkpoint(path, restored)
    assert extra["global_step"] == 32
    clone = ObservationNormalizer((FEATURES,))
    clone.load_state_dict(extra["obs_norm"])
    np.testing.assert_array_equal(clone.rms.var, norm.rms.var)

    # Rollouts from each agent use their own (restored) action RNG, so the buffers match too.
    stats_a = original.update(fixed_buffer(original, 2), np.ones(2))
    stats_b = restored.update(fixed_buffer(restored, 2), np.ones(2))
    assert stats_a == stats_b
    heads_a, heads_b = _heads(original), _heads(restored)
    assert heads_a.keys() == heads_b.keys() and all(torch.equal(heads_a[k], heads_b[k]) for k in heads_a)
    opt_a, opt_b = _optimizer_tensors(original), _optimizer_tensors(restored)
    assert opt_a.keys() == opt_b.keys() and all(torch.equal(opt_a[k], opt_b[k]) for k in opt_a)
    assert torch.equal(original.shuffle_generator.get_state(), restored.shuffle_generator.get_state())
    assert original.num_updates == restored.num_updates == 2


def test_the_adapted_policy_rate_resumes_and_old_checkpoints_read_as_unadapted(saved, tmp_path):
    ppo, _, _ = saved
    ppo.policy_lr_scale = 1.5 ** -3
    path = save_checkpoint(tmp_path / "adapted", ppo, {})
    restored = make_ppo(seed=5)
    load_checkpoint(path, restored)
    assert restored.policy_lr_scale == ppo.policy_lr_scale
    state = json.loads((path / ckpt.STATE_FILE).read_text())
    del state["policy_lr_scale"]
    (path / ckpt.STATE_FILE).write_text(json.dumps(state))
    load_checkpoint(path, restored)
    assert restored.policy_lr_scale == 1.0


def test_atomic_save_leaves_no_temp_dirs_and_survives_a_crash(saved, monkeypatch):
    ppo, path, _ = saved
    save_checkpoint(path, ppo, {"global_step": 64})  # overwrite an existing checkpoint
    assert sorted(os.listdir(path.parent)) == ["latest"]
    assert sorted(os.listdir(path)) == ["heads.safetensors", "optim.safetensors", "state.json"]

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", crash)
    with pytest.raises(OSError):
        save_checkpoint(path, ppo, {"global_step": 96})
    assert sorted(os.listdir(path.parent)) == ["latest"]
    assert load_checkpoint(path, make_ppo())["global_step"] == 64


def test_interrupted_rename_falls_back_to_previous(saved):
    ppo, path, _ = saved
    os.replace(path, path.parent / ".latest.previous")  # as if killed between the two renames
    assert load_checkpoint(path, make_ppo())["global_step"] == 32


@pytest.mark.parametrize("name,damage,problem", [
    ("heads.safetensors", lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "safetensors"),
    ("optim.safetensors", lambda p: p.write_bytes(b"\x00" * 3), "safetensors"),
    ("state.json", lambda p: p.write_text(p.read_text()[:-20]), "invalid JSON"),
    ("state.json", lambda p: p.unlink(), "missing"),
    ("optim.safetensors", lambda p: p.unlink(), "missing"),
])
def test_corrupt_or_missing_files_raise_checkpoint_error(saved, name, damage, problem):
    _, path, _ = saved
    damage(path / name)
    fresh = make_ppo(seed=5)
    before = {k: v.clone() for k, v in _heads(fresh).items()}
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, fresh)
    assert name in str(err.value) and problem in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in _heads(fresh).items())  # untouched


def test_mismatched_agent_raises_checkpoint_error(saved):
    _, path, _ = saved
    with pytest.raises(CheckpointError, match=r"state\.json: feature_dim 6 does not match this agent's 7"):
        load_checkpoint(path, make_ppo(feature_dim=7))
    with pytest.raises(CheckpointError, match="action space"):
        load_checkpoint(path, make_ppo(space=gym.spaces.Discrete(2)))
    with pytest.raises(CheckpointError, match="checkpoint directory is missing"):
        load_checkpoint(path.parent / "nowhere", make_ppo())


def test_state_json_is_plain_json_with_descriptive_fields(saved):
    _, path, _ = saved
    state = json.loads((path / "state.json").read_text())
    assert state["format_version"] == 1 and state["feature_dim"] == FEATURES
    assert state["action_space"]["type"] == "Box" and state["config"]["clip_coef"] == 0.1
    assert all(isinstance(x, int) for x in state["rng"]["shuffle_generator"])


def _global_rng_states():
    import random

    return torch.random.get_rng_state().clone(), np.random.get_state()[1].copy(), random.getstate()


def test_loading_leaves_the_process_generators_alone_unless_asked(saved):
    import random

    _, path, _ = saved
    torch.manual_seed(1234), np.random.seed(1234), random.seed(1234)
    before = _global_rng_states()
    load_checkpoint(path, make_ppo(seed=7))
    after = _global_rng_states()
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]) and before[2] == after[2]
    # The training run's own process (bitrl train --resume) asks for its generators back.
    load_checkpoint(path, make_ppo(seed=7), restore_global_rngs=True)
    restored = _global_rng_states()
    assert not torch.equal(before[0], restored[0]) and not np.array_equal(before[1], restored[1])
