"""PPO on frozen-backbone features: two heads, two Adam optimizers, clipped surrogate + value MSE + entropy bonus."""

import copy

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from bitrl_ros.rl.adam import Adam
from bitrl_ros.rl.buffer import RolloutBuffer
from bitrl_ros.rl.config import PPOConfig
from bitrl_ros.rl.gae import compute_gae
from bitrl_ros.rl.heads import PolicyHead, ValueHead

ADAPT_FACTOR = 1.5  # adapt_kl's step, and how far it may take the rate from policy_lr either way:
ADAPT_RANGE = 10.0

__all__ = ["PPO", "PPOConfig", "policy_loss", "value_loss", "total_loss", "explained_variance"]


def policy_loss(new_log_probs, old_log_probs, advantages, clip_coef: float) -> torch.Tensor:
    """Clipped surrogate, as a loss to minimize: mean(max(-A * r, -A * clip(r, 1 - c, 1 + c)))."""
    ratio = (new_log_probs - old_log_probs).exp()
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
    return torch.max(unclipped, clipped).mean()


def value_loss(new_values, returns, old_values=None, clip_coef: float | None = None) -> torch.Tensor:
    """0.5 * MSE to the returns; with old_values and clip_coef, the pessimistic clipped variant."""
    unclipped = (new_values - returns) ** 2
    if old_values is None or clip_coef is None:
        return 0.5 * unclipped.mean()
    clipped_values = old_values + torch.clamp(new_values - old_values, -clip_coef, clip_coef)
    clipped = (clipped_values - returns) ** 2
    return 0.5 * torch.max(unclipped, clipped).mean()


def total_loss(pg_loss, v_loss, entropy, config: PPOConfig) -> torch.Tensor:
    """The entropy bonus is subtracted: minimizing the loss raises entropy, by ent_coef per nat."""
    return pg_loss - config.ent_coef * entropy + config.vf_coef * v_loss


def explained_variance(predicted: np.ndarray, target: np.ndarray) -> float:
    var = np.var(target)
    return float("nan") if var == 0 else float(1 - np.var(target - predicted) / var)


class PPO:
    """Owns the heads, their optimizers and the RNGs PPO itself uses (action sampling, minibatch shuffling)."""

    def __init__(self, feature_dim: int, action_space: gym.Space, config: PPOConfig | None = None, seed: int = 0,
                 readout: dict | None = None, critic: dict | None = None, commands: dict | None = None):
        """readout: FeatureLayout.head_readout(), the trainable readout each head carries (None: plain MLPs).
        critic: FeatureLayout.critic_head() for a hybrid critic (the policy reads the first policy_dim columns,
        the value head the others through the critic's readout); None: both heads read every column.
        commands: FeatureLayout.command_scorer() for a command-scoring policy (None: the action space's own).
        """
        self.config = config if config is not None else PPOConfig()
        self.feature_dim = int(feature_dim)
        self.action_space = action_space
        self.seed = int(seed)
        self.readout = readout
        self.critic = critic
        self.commands = commands
        if critic is None:
            policy_cols = value_cols = None
            value_readout = readout
        else:
            policy_cols, value_cols = (0, critic["policy_dim"]), (critic["policy_dim"], self.feature_dim)
            value_readout = critic["readout"]
        # Initialise weights from `seed` alone, whatever the global torch RNG has seen before.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.policy = PolicyHead(self.feature_dim, action_space, self.config.hidden_sizes, readout, policy_cols,
                                     commands, self.config.init_log_std)
            self.value_head = ValueHead(self.feature_dim, self.config.hidden_sizes, value_readout, value_cols)
        # Our Adam (rl/adam.py): torch.optim's imports torch._dynamo on first use, +74 MB resident.
        self.policy_optimizer = Adam(self.policy.parameters(), lr=self.config.policy_lr, eps=self.config.adam_eps)
        self.value_optimizer = Adam(self.value_head.parameters(), lr=self.config.value_lr, eps=self.config.adam_eps)
        self.shuffle_generator = torch.Generator().manual_seed(self.seed)
        self.action_generator = torch.Generator().manual_seed(self.seed + 1)
        self.num_updates = 0
        self.policy_lr_scale = 1.0  # what adapt_kl has made of policy_lr so far (1 without it)

    def make_buffer(self) -> RolloutBuffer:
        return RolloutBuffer.for_space(self.config, self.feature_dim, self.action_space)

    @torch.no_grad()
    def act(self, features: np.ndarray, deterministic: bool = False):
        """Return (actions, log_probs, values) as numpy; Box actions are unclipped (see heads.clip_action)."""
        x = torch.as_tensor(np.asarray(features, dtype=np.float32))
        actions, log_probs = self.policy.act(x, deterministic, generator=self.action_generator)
        values = self.value_head(x)
        return actions.numpy(), log_probs.numpy(), values.numpy()

    @torch.no_grad()
    def value(self, features: np.ndarray) -> np.ndarray:
        return self.value_head(torch.as_tensor(np.asarray(features, dtype=np.float32))).numpy()

    def current_lrs(self) -> tuple[float, float]:
        cfg = self.config
        frac = 1.0
        if cfg.anneal_lr:
            frac = max(0.0, 1.0 - self.num_updates / (cfg.total_timesteps // cfg.batch_size))
        return frac * self.policy_lr_scale * cfg.policy_lr, frac * cfg.value_lr

    def adapt_policy_lr(self, approx_kl: float) -> None:
        """adapt_kl: the next update's policy rate from this one's mean approx-KL (off by default; what it does
        per task is in bench/README.md, "Adaptive policy learning rate").
        """
        target = self.config.adapt_kl
        if target is None or not np.isfinite(approx_kl):
            return
        if approx_kl > 2.0 * target:
            self.policy_lr_scale = max(self.policy_lr_scale / ADAPT_FACTOR, 1.0 / ADAPT_RANGE)
        elif approx_kl < 0.5 * target:
            self.policy_lr_scale = min(self.policy_lr_scale * ADAPT_FACTOR, ADAPT_RANGE)

    def snapshot(self) -> dict:
        """Everything an update changes (weights, Adam states, generators, the update counter), copied."""
        return copy.deepcopy({
            "policy": self.policy.state_dict(), "value": self.value_head.state_dict(),
            "policy_optimizer": self.policy_optimizer.state_dict(),
            "value_optimizer": self.value_optimizer.state_dict(),
            "shuffle_generator": self.shuffle_generator.get_state(), "num_updates": self.num_updates,
            "policy_lr_scale": self.policy_lr_scale})

    def restore(self, snapshot: dict) -> None:
        """Undo everything since snapshot() (e.g. an update that produced non-finite weights)."""
        self.policy.load_state_dict(snapshot["policy"])
        self.value_head.load_state_dict(snapshot["value"])
        self.policy_optimizer.load_state_dict(snapshot["policy_optimizer"])
        self.value_optimizer.load_state_dict(snapshot["value_optimizer"])
        self.shuffle_generator.set_state(snapshot["shuffle_generator"])
        self.num_updates = snapshot["num_updates"]
        self.policy_lr_scale = snapshot["policy_lr_scale"]

    def finite(self) -> bool:
        """Whether every weight of both heads is finite."""
        return all(bool(torch.isfinite(p).all()) for p in (*self.policy.parameters(), *self.value_head.parameters()))

    def update(self, buffer: RolloutBuffer, last_values: np.ndarray, last_dones: np.ndarray | None = None) -> dict:
        """Run update_epochs of minibatch PPO on a full buffer; return mean statistics as floats.

        last_values: V(features after the final step), [N]; last_dones: episode ended at the final step
        (defaults to buffer.dones[-1]). Each head's gradient is clipped to max_grad_norm separately.
        """
        cfg = self.config
        if last_dones is None:
            last_dones = buffer.dones[-1]
        advantages, returns = compute_gae(buffer.gae_rewards(cfg.gamma), buffer.values, buffer.dones,
                                          last_values, last_dones, cfg.gamma, cfg.gae_lambda)
        policy_lr, value_lr = self.current_lrs()
        for group in self.policy_optimizer.param_groups:
            group["lr"] = policy_lr
        for group in self.value_optimizer.param_groups:
            group["lr"] = value_lr

        total = buffer.num_steps * buffer.num_envs
        features = torch.as_tensor(buffer.features.reshape(total, -1))
        actions = torch.as_tensor(buffer.actions.reshape((total,) + buffer.action_shape))
        old_log_probs = torch.as_tensor(buffer.log_probs.reshape(total))
        old_values = torch.as_tensor(buffer.values.reshape(total))
        b_advantages = torch.as_tensor(advantages.reshape(total))
        b_returns = torch.as_tensor(returns.reshape(total))

        stats = {k: [] for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction",
                                 "grad_norm", "policy_grad_norm", "value_grad_norm")}
        for _ in range(cfg.update_epochs):
            for idx in buffer.minibatches(cfg.minibatch_size, self.shuffle_generator):
                new_log_probs, entropy = self.policy.evaluate(features[idx], actions[idx])
                new_values = self.value_head(features[idx])
                log_ratio = new_log_probs - old_log_probs[idx]
                with torch.no_grad():
                    # The low-variance estimator of KL(old || new) from CleanRL / Schulman's blog.
                    approx_kl = ((log_ratio.exp() - 1) - log_ratio).mean()
                    clip_fraction = ((log_ratio.exp() - 1).abs() > cfg.clip_coef).float().mean()

                mb_adv = b_advantages[idx]
                if cfg.norm_adv and len(idx) > 1:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                pg = policy_loss(new_log_probs, old_log_probs[idx], mb_adv, cfg.clip_coef)
                vl = value_loss(new_values, b_returns[idx], old_values[idx] if cfg.clip_vloss else None,
                                cfg.clip_coef if cfg.clip_vloss else None)
                ent = entropy.mean()
                loss = total_loss(pg, vl, ent, cfg)

                self.policy_optimizer.zero_grad()
                self.value_optimizer.zero_grad()
                loss.backward()
                p_norm = nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
                v_norm = nn.utils.clip_grad_norm_(self.value_head.parameters(), cfg.max_grad_norm)
                self.policy_optimizer.step()
                self.value_optimizer.step()

                stats["policy_loss"].append(pg.item())
                stats["value_loss"].append(vl.item())
                stats["entropy"].append(ent.item())
                stats["approx_kl"].append(approx_kl.item())
                stats["clip_fraction"].append(clip_fraction.item())
                stats["policy_grad_norm"].append(p_norm.item())
                stats["value_grad_norm"].append(v_norm.item())
                stats["grad_norm"].append(float(torch.sqrt(p_norm**2 + v_norm**2)))
            if cfg.target_kl is not None and stats["approx_kl"][-1] > cfg.target_kl:
                break

        self.num_updates += 1
        out = {k: float(np.mean(v)) for k, v in stats.items()}
        self.adapt_policy_lr(out["approx_kl"])
        out["explained_variance"] = explained_variance(buffer.values.reshape(total), returns.reshape(total))
        out["lr"] = policy_lr
        out["value_lr"] = value_lr
        out["num_updates"] = self.num_updates
        return out
