"""The hybrid critic: the value head reads a second backbone's features (critic_backbone) while the policy reads
the ternary one; real backbones, real training runs.
"""
from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from bitrl_ros.backbone import load_backbone
from bitrl_ros.backbone.registry import Backbone
from bitrl_ros.config import load_train_config
from bitrl_ros.envs import get_spec
from bitrl_ros.errors import CheckpointError, ConfigError
from bitrl_ros.features import FeatureLayout, StateEncoder
from bitrl_ros.rl.ppo import PPO
from bitrl_ros.serialize import get_serializer

POLICY, CRITIC = "minilm-bitnet-distilled", "minilm-int8"
STATES = np.array([[0.01, -0.2, 0.03, 0.4], [1.5, 0.0, -0.1, -2.25]])


@pytest.fixture(scope="module")
def backbones():
    return load_backbone(POLICY, cache_mb=0), load_backbone(CRITIC, cache_mb=0)


def _encoder(policy, critic=None, raw_skip=False):
    return StateEncoder(get_spec("CartPole-v1"), get_serializer("CartPole-v1", "compact", None), policy,
                        "fields_proj", raw_skip, 16, True, critic)


def test_layout_puts_the_critic_input_after_the_policy_input(backbones):
    layout = _encoder(*backbones, raw_skip=True).layout
    assert (layout.critic_backbone, layout.critic_hidden) == (CRITIC, 384)
    assert layout.embedding_dim == layout.critic_embedding_dim == 4 * 384
    assert layout.encoded_dim == 2 * 4 * 384
    assert layout.policy_dim == 4 * 384 + 4 and layout.feature_dim == 2 * (4 * 384 + 4)
    readout = {"num_fields": 4, "width": 384, "proj_dim": 16, "raw_dim": 4}
    assert layout.critic_head() == {"policy_dim": 4 * 384 + 4, "readout": readout}
    scale = layout.input_scale()
    # Each backbone block balanced to the raw observation's total variance; the raw copies as they are.
    assert np.allclose(scale[: 4 * 384], np.sqrt(4 / (4 * 384))) and np.all(scale[4 * 384: 4 * 384 + 4] == 1)
    assert np.allclose(scale[4 * 384 + 4: -4], np.sqrt(4 / (4 * 384))) and np.all(scale[-4:] == 1)
    assert FeatureLayout.from_dict(layout.to_dict()) == layout


def test_layouts_recorded_before_the_critic_read_as_without_one(backbones):
    old = _encoder(backbones[0]).layout.to_dict()
    del old["critic_backbone"], old["critic_hidden"]
    layout = FeatureLayout.from_dict(old)
    assert layout.critic_head() is None and layout.feature_dim == layout.policy_dim == 4 * 384


def test_features_are_each_backbones_readout(backbones):
    policy, critic = backbones
    feats = _encoder(policy, critic, raw_skip=True)(STATES)
    alone = _encoder(policy, raw_skip=True)(STATES)
    critic_alone = _encoder(critic, raw_skip=True)(STATES)
    half = alone.shape[1]
    assert feats.shape == (2, 2 * half)
    assert np.array_equal(feats[:, :half], alone) and np.array_equal(feats[:, half:], critic_alone)
    assert not np.allclose(feats[:, : 4 * 384], feats[:, half: half + 4 * 384])


def test_each_head_reads_only_its_own_columns(backbones):
    layout = _encoder(*backbones).layout
    ppo = PPO(layout.feature_dim, gym.spaces.Discrete(2), readout=layout.head_readout(),
              critic=layout.critic_head())
    x = torch.randn(3, layout.feature_dim)
    moved_policy, moved_critic = x.clone(), x.clone()
    moved_policy[:, : layout.policy_dim] += 1.0
    moved_critic[:, layout.policy_dim:] += 1.0
    with torch.no_grad():
        logits = [ppo.policy.distribution(v).logits for v in (x, moved_policy, moved_critic)]
        values = [ppo.value_head(v) for v in (x, moved_policy, moved_critic)]
    assert torch.equal(values[0], values[1]) and not torch.equal(values[0], values[2])
    assert torch.equal(logits[0], logits[2]) and not torch.equal(logits[0], logits[1])


def test_another_tokenizer_is_refused(backbones, tmp_path):
    policy, critic = backbones
    tok = json.loads(policy.tokenizer.path.read_text())
    tok["model"]["vocab"]["[unused0]"], tok["model"]["vocab"]["[unused1]"] = 2, 1
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(tok))
    other = Backbone("other", critic.engine if critic.model is None else critic.model, path, cache_mb=0)
    with pytest.raises(ValueError, match="another tokenizer"):
        _encoder(policy, other)


@pytest.mark.parametrize("overrides, allowed", [({"critic_backbone": "mlp"}, "a model directory | null"),
                                                ({"critic_backbone": "minilm-int3"}, "minilm-int8"),
                                                ({"backbone": "mlp", "critic_backbone": CRITIC}, "backbone mlp")])
def test_config_refuses_a_bad_critic_backbone(overrides, allowed):
    with pytest.raises(ConfigError, match="train.critic_backbone") as err:
        load_train_config(None, overrides)
    assert allowed in str(err.value)


@pytest.mark.slow
def test_train_records_both_backbones_and_refuses_a_resume_with_another_critic(tmp_path):
    from bitrl_ros.train import Trainer

    run = tmp_path / "run"
    cfg = load_train_config(None, {"critic_backbone": CRITIC, "total_steps": 2048, "eval_episodes": 0,
                                   "ppo.num_envs": 2, "ppo.num_steps": 512, "ppo.minibatch_size": 256})
    result = Trainer(cfg, run_dir=run, progress=False, log=lambda *a: None).run()
    assert result.global_step >= 2048
    layout = json.loads((run / "checkpoint" / "state.json").read_text())["extra"]["feature_layout"]
    assert (layout["backbone"], layout["critic_backbone"], layout["critic_hidden"]) == (POLICY, CRITIC, 384)
    for other in ("minilm-fp16", None):
        cfg2 = load_train_config(None, {"critic_backbone": other, "total_steps": 4096, "eval_episodes": 0,
                                        "ppo.num_envs": 2, "ppo.num_steps": 512, "ppo.minibatch_size": 256})
        with pytest.raises(CheckpointError, match="critic_backbone: saved 'minilm-int8', now "):
            Trainer(cfg2, run_dir=run, resume=True, progress=False, log=lambda *a: None)
