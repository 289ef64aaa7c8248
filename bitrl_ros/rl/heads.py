"""Trainable policy and value heads that act on frozen-backbone feature vectors."""

import math

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal


def layer_init(layer: nn.Linear, gain: float = math.sqrt(2)) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def mlp(in_dim: int, out_dim: int, hidden=(256, 128), out_gain: float = 1.0) -> nn.Sequential:
    """Tanh MLP with orthogonal init: sqrt(2) gain on hidden layers, `out_gain` on the output layer."""
    layers = []
    last = in_dim
    for width in hidden:
        layers += [layer_init(nn.Linear(last, width)), nn.Tanh()]
        last = width
    layers.append(layer_init(nn.Linear(last, out_dim), gain=out_gain))
    return nn.Sequential(*layers)


def clip_action(action: np.ndarray, space: gym.Space) -> np.ndarray:
    """Clip a continuous action to the Box bounds before stepping the env; other spaces pass through."""
    if isinstance(space, gym.spaces.Box):
        return np.clip(action, space.low, space.high).astype(space.dtype, copy=False)
    return action


class PolicyHead(nn.Module):
    """Categorical policy for Discrete spaces, diagonal Gaussian (state-independent log_std) for Box."""

    def __init__(self, in_dim: int, action_space: gym.Space, hidden=(256, 128)):
        super().__init__()
        self.action_space = action_space
        if isinstance(action_space, gym.spaces.Discrete):
            self.discrete = True
            self.start = int(action_space.start)
            self.net = mlp(in_dim, int(action_space.n), hidden, out_gain=0.01)
        elif isinstance(action_space, gym.spaces.Box):
            self.discrete = False
            self.action_shape = tuple(action_space.shape)
            self.net = mlp(in_dim, int(np.prod(self.action_shape)), hidden, out_gain=0.01)
            self.log_std = nn.Parameter(torch.zeros(self.action_shape))
        else:
            raise TypeError(f"PolicyHead supports Discrete and Box action spaces, got {action_space}")

    def distribution(self, features: torch.Tensor) -> Distribution:
        out = self.net(features)
        if self.discrete:
            return Categorical(logits=out, validate_args=False)
        mean = out.view(*out.shape[:-1], *self.action_shape)
        # validate_args=False: the arguments come from our own heads; the checks cost more than the heads on CPU.
        return Independent(Normal(mean, self.log_std.exp().expand_as(mean), validate_args=False),
                           len(self.action_shape), validate_args=False)

    def act(self, features: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None):
        """Return (action, log_prob). Box actions are unclipped; the log_prob is that of the unclipped sample."""
        dist = self.distribution(features)
        if self.discrete:
            probs = dist.probs
            if deterministic:
                index = probs.argmax(dim=-1)
            else:
                # torch.distributions cannot sample from a private generator, so sample by hand.
                flat = probs.reshape(-1, probs.shape[-1])
                index = torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])
            return index + self.start, dist.log_prob(index)
        mean, std = dist.base_dist.loc, dist.base_dist.scale
        if deterministic:
            action = mean
        else:
            noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
            action = mean + std * noise
        return action, dist.log_prob(action)

    def evaluate(self, features: torch.Tensor, actions: torch.Tensor):
        """Return (log_prob, entropy) of the given actions under the current policy."""
        dist = self.distribution(features)
        if self.discrete:
            actions = actions.long() - self.start
        return dist.log_prob(actions), dist.entropy()


class ValueHead(nn.Module):
    def __init__(self, in_dim: int, hidden=(256, 128)):
        super().__init__()
        self.net = mlp(in_dim, 1, hidden, out_gain=1.0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)
