"""Trainable policy and value heads that act on frozen-backbone feature vectors."""

import math

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from bitrl_ros.rl.numpy_heads import COMMAND_EMBED, COMMAND_HIDDEN


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


class FieldProjection(nn.Module):
    """The trainable readout: input [B, num_fields * width (+ raw_dim)] -> [B, num_fields * proj_dim (+ raw_dim)],
    one linear map shared by all fields (width -> proj_dim) and the raw observation passed through.

    With a raw observation the map starts at zero, so a hybrid agent starts out exactly as the raw-observation
    MLP (same input scale, nothing added) and lets the text in only as far as PPO finds it useful; text-only it
    starts orthogonal (unit gain).
    """

    def __init__(self, num_fields: int, width: int, proj_dim: int, raw_dim: int = 0):
        super().__init__()
        self.num_fields, self.width, self.proj_dim, self.raw_dim = num_fields, width, proj_dim, raw_dim
        self.proj = nn.Linear(width, proj_dim)
        if raw_dim:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)
        else:
            layer_init(self.proj, gain=1.0)

    @property
    def out_dim(self) -> int:
        return self.num_fields * self.proj_dim + self.raw_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        text = x[..., : self.num_fields * self.width].reshape(*x.shape[:-1], self.num_fields, self.width)
        z = self.proj(text).flatten(-2)
        return torch.cat([z, x[..., self.num_fields * self.width:]], dim=-1) if self.raw_dim else z


class Columns(nn.Module):
    """The columns [start, stop) of the features: a head's share of the feature vector (the hybrid critic's value
    head reads its own backbone's columns).
    """

    def __init__(self, start: int, stop: int):
        super().__init__()
        self.start, self.stop = int(start), int(stop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., self.start: self.stop]

    def extra_repr(self) -> str:
        return f"[{self.start}, {self.stop})"


def readout_module(readout: dict | None, in_dim: int, columns: tuple[int, int] | None = None) -> tuple[nn.Module, int]:
    """(module in front of a head's MLP, its output width): a FieldProjection, or the identity, reading the
    columns [start, stop) of the in_dim features (None: all of them).
    """
    if columns is not None:
        start, stop = columns
        if not 0 <= start < stop <= in_dim:
            raise ValueError(f"head columns [{start}, {stop}) outside the {in_dim} features")
        select, in_dim = Columns(start, stop), stop - start
    if readout is None:
        mod = nn.Identity()
    else:
        mod = FieldProjection(**readout)
        if mod.num_fields * mod.width + mod.raw_dim != in_dim:
            raise ValueError(f"readout {readout} expects {mod.num_fields * mod.width + mod.raw_dim} features, "
                             f"the head gets {in_dim}")
        in_dim = mod.out_dim
    return (mod if columns is None else nn.Sequential(select, mod)), in_dim


class CommandScorer(nn.Module):
    """Logits of a choice among command slots, one score per slot from (state, that slot's command): input
    [B, in_dim] whose columns [start, start + count * width) are count command vectors of width columns and
    the rest describe the state; output [B, count].

    The state and each command are mapped to ``embed`` dims (tanh), and one small MLP scores [state, command,
    state * command]: the same weights score every slot, so a command is judged by what it says, wherever it
    stands, and a command never seen in training still gets a score from its words.
    """

    def __init__(self, in_dim: int, start: int, width: int, count: int, embed: int = COMMAND_EMBED,
                 hidden: int = COMMAND_HIDDEN):
        super().__init__()
        if not (0 <= start and start + count * width <= in_dim and width > 0 and count > 0):
            raise ValueError(f"{count} command slots of {width} columns from {start} do not fit {in_dim} features")
        self.start, self.width, self.count = int(start), int(width), int(count)
        state_dim = in_dim - count * width
        self.state = nn.Sequential(layer_init(nn.Linear(state_dim, embed)), nn.Tanh())
        self.command = nn.Sequential(layer_init(nn.Linear(width, embed)), nn.Tanh())
        self.score = mlp(3 * embed, 1, (hidden,), out_gain=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stop = self.start + self.count * self.width
        commands = x[..., self.start: stop].reshape(*x.shape[:-1], self.count, self.width)
        s = self.state(torch.cat([x[..., : self.start], x[..., stop:]], dim=-1)).unsqueeze(-2)
        c = self.command(commands)
        s = s.expand_as(c)
        return self.score(torch.cat([s, c, s * c], dim=-1)).squeeze(-1)


class PolicyHead(nn.Module):
    """Categorical policy for Discrete spaces, diagonal Gaussian (state-independent log_std) for Box; with
    ``commands`` (FeatureLayout.command_scorer()) a categorical over command slots scored by a CommandScorer.
    """

    def __init__(self, in_dim: int, action_space: gym.Space, hidden=(256, 128), readout: dict | None = None,
                 columns: tuple[int, int] | None = None, commands: dict | None = None, init_log_std: float = 0.0):
        super().__init__()
        self.action_space = action_space
        self.readout, in_dim = readout_module(readout, in_dim, columns)
        if commands is not None:
            if not isinstance(action_space, gym.spaces.Discrete) or int(action_space.n) != commands["count"]:
                raise ValueError(f"{commands['count']} command slots need a Discrete({commands['count']}) action "
                                 f"space, got {action_space}")
            self.discrete = True
            self.start = int(action_space.start)
            self.net = CommandScorer(in_dim, **commands)
        elif isinstance(action_space, gym.spaces.Discrete):
            self.discrete = True
            self.start = int(action_space.start)
            self.net = mlp(in_dim, int(action_space.n), hidden, out_gain=0.01)
        elif isinstance(action_space, gym.spaces.Box):
            self.discrete = False
            self.action_shape = tuple(action_space.shape)
            self.net = mlp(in_dim, int(np.prod(self.action_shape)), hidden, out_gain=0.01)
            self.log_std = nn.Parameter(torch.full(self.action_shape, float(init_log_std)))
        else:
            raise TypeError(f"PolicyHead supports Discrete and Box action spaces, got {action_space}")

    def distribution(self, features: torch.Tensor) -> Distribution:
        out = self.net(self.readout(features))
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
    def __init__(self, in_dim: int, hidden=(256, 128), readout: dict | None = None,
                 columns: tuple[int, int] | None = None):
        super().__init__()
        self.readout, in_dim = readout_module(readout, in_dim, columns)
        self.net = mlp(in_dim, 1, hidden, out_gain=1.0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(self.readout(features)).squeeze(-1)
