"""RL core from features onward: heads, rollout buffer, GAE, normalizers, PPO, checkpoints. ROS-free."""

from bitrl_ros.rl.buffer import RolloutBuffer
from bitrl_ros.rl.checkpoint import load_checkpoint, read_checkpoint_state, save_checkpoint
from bitrl_ros.rl.config import PPOConfig
from bitrl_ros.rl.gae import compute_gae
from bitrl_ros.rl.heads import clip_action, mlp, PolicyHead, ValueHead
from bitrl_ros.rl.normalize import ObservationNormalizer, RewardNormalizer, RunningMeanStd
from bitrl_ros.rl.ppo import policy_loss, PPO, total_loss, value_loss
from bitrl_ros.rl.seeding import seed_everything

__all__ = [
    "PPO", "PPOConfig", "PolicyHead", "ValueHead", "RolloutBuffer", "RunningMeanStd", "ObservationNormalizer",
    "RewardNormalizer", "clip_action", "compute_gae", "load_checkpoint", "mlp", "policy_loss",
    "read_checkpoint_state", "save_checkpoint", "seed_everything", "total_loss", "value_loss",
]
