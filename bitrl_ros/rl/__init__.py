"""RL core from features onward: heads, rollout buffer, GAE, normalizers, PPO, checkpoints. ROS-free.

The names below load their module when first used (PEP 562): the torch-free parts (actions, evaluation windows,
normalizers) import without torch.
"""

from importlib import import_module

_EXPORTS = {
    "RolloutBuffer": "buffer", "load_checkpoint": "checkpoint", "read_checkpoint_state": "checkpoint",
    "save_checkpoint": "checkpoint", "PPOConfig": "config", "compute_gae": "gae", "clip_action": "actions",
    "mlp": "heads", "PolicyHead": "heads", "ValueHead": "heads", "ObservationNormalizer": "normalize",
    "RewardNormalizer": "normalize", "RunningMeanStd": "normalize", "policy_loss": "ppo", "PPO": "ppo",
    "total_loss": "ppo", "value_loss": "ppo", "seed_everything": "seeding",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
