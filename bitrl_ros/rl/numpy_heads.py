"""The heads' forward pass in numpy, for acting in a process that never imports torch.

With `update_worker: process` the PPO heads and their optimizers live in the update process (rl/update_worker.py);
the acting process only evaluates the policy and value heads on a batch of one, for which torch's ~200 MB of
libraries and heap are dead weight on a 4 GB board (issue 14). NumpyActor reads the weights by the names of the
torch modules' state dicts (heads.PolicyHead / heads.ValueHead, "policy." / "value." prefixed, as in a checkpoint's
heads.safetensors) and computes what those modules compute, in float32: the same layers, the same activations, the
same log-probabilities (test/test_numpy_heads.py checks every head kind against torch). Sampling uses its own numpy
generator, seeded from the learner's seed.

initial_heads() draws the heads' starting weights as heads.py initialises them (orthogonal, the same gains, zero
biases; the names and shapes checked against torch's in the tests), from a numpy generator: the acting process
can act from its first state on, without waiting seconds for the update process to import torch, and hands these
weights to it. They are not torch's draws for the same seed, so a `process` run does not start from the heads an
`inline` run (`bitrl train`) with that seed starts from.
"""
from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
COMMAND_EMBED = COMMAND_HIDDEN = 64  # heads.CommandScorer's widths


def _linear(weights: dict, prefix: str, x: np.ndarray) -> np.ndarray:
    return x @ weights[f"{prefix}weight"].T + weights[f"{prefix}bias"]


def _mlp(weights: dict, prefix: str, x: np.ndarray) -> np.ndarray:
    """heads.mlp: Linear layers at the even indices of an nn.Sequential, tanh between them, none after the last."""
    index = 0
    while f"{prefix}{index + 2}.weight" in weights:
        x = np.tanh(_linear(weights, f"{prefix}{index}.", x))
        index += 2
    return _linear(weights, f"{prefix}{index}.", x)


def _readout(weights: dict, prefix: str, readout: dict | None, columns: tuple[int, int] | None, x: np.ndarray):
    """heads.readout_module: the head's columns, then its FieldProjection (or nothing)."""
    if columns is not None:
        x = x[..., columns[0]: columns[1]]
        prefix = f"{prefix}1."
    if readout is None:
        return x
    fields, width = readout["num_fields"], readout["width"]
    text = x[..., : fields * width].reshape(*x.shape[:-1], fields, width)
    z = _linear(weights, f"{prefix}proj.", text).reshape(*x.shape[:-1], -1)
    return np.concatenate([z, x[..., fields * width:]], axis=-1) if readout.get("raw_dim") else z


def _command_scores(weights: dict, prefix: str, commands: dict, x: np.ndarray) -> np.ndarray:
    """heads.CommandScorer."""
    start, width, count = commands["start"], commands["width"], commands["count"]
    stop = start + count * width
    slots = x[..., start: stop].reshape(*x.shape[:-1], count, width)
    state = np.tanh(_linear(weights, f"{prefix}state.0.", np.concatenate([x[..., :start], x[..., stop:]], axis=-1)))
    cmd = np.tanh(_linear(weights, f"{prefix}command.0.", slots))
    state = np.broadcast_to(state[..., None, :], cmd.shape)
    return _mlp(weights, f"{prefix}score.", np.concatenate([state, cmd, state * cmd], axis=-1))[..., 0]


def _orthogonal(rng: np.random.Generator, rows: int, cols: int, gain: float) -> np.ndarray:
    """A (semi-)orthogonal [rows, cols] matrix times gain, as torch.nn.init.orthogonal_ draws one (QR of a normal
    matrix, signs fixed by R's diagonal).
    """
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    return (gain * (q if rows >= cols else q.T)).astype(np.float32)


class _Init:
    """Weights drawn in the order the heads are built, named as their state dicts name them."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng([seed, 0x1417])  # a stream of its own, apart from the action sampling
        self.heads: dict[str, np.ndarray] = {}

    def linear(self, prefix: str, in_dim: int, out_dim: int, gain: float, zero: bool = False) -> None:
        self.heads[f"{prefix}weight"] = (np.zeros((out_dim, in_dim), np.float32) if zero
                                         else _orthogonal(self.rng, out_dim, in_dim, gain))
        self.heads[f"{prefix}bias"] = np.zeros(out_dim, np.float32)

    def mlp(self, prefix: str, in_dim: int, out_dim: int, hidden, out_gain: float) -> None:
        """heads.mlp: sqrt(2) on the hidden layers, out_gain on the output layer."""
        index = 0
        for width in hidden:
            self.linear(f"{prefix}{index}.", in_dim, width, math.sqrt(2))
            in_dim, index = width, index + 2
        self.linear(f"{prefix}{index}.", in_dim, out_dim, out_gain)

    def readout(self, prefix: str, readout: dict | None, columns: tuple[int, int] | None, in_dim: int) -> int:
        """heads.readout_module's weights; returns the width the MLP after it reads."""
        if columns is not None:
            prefix, in_dim = f"{prefix}1.", columns[1] - columns[0]
        if readout is None:
            return in_dim
        raw = readout.get("raw_dim", 0)
        self.linear(f"{prefix}proj.", readout["width"], readout["proj_dim"], 1.0, zero=bool(raw))
        return readout["num_fields"] * readout["proj_dim"] + raw


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class NumpyActor:
    """Acts as PPO.act / PPO.value do, from the heads' weights (load()) and the same structure arguments as PPO."""

    def __init__(self, feature_dim: int, action_space: gym.Space, seed: int = 0, readout: dict | None = None,
                 critic: dict | None = None, commands: dict | None = None, hidden=(256, 128),
                 init_log_std: float = 0.0):
        self.feature_dim = int(feature_dim)
        self.init_log_std = float(init_log_std)
        self.hidden = tuple(hidden)
        self.num_actions = int(action_space.n) if isinstance(action_space, gym.spaces.Discrete) else None
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        if not self.discrete and not isinstance(action_space, gym.spaces.Box):
            raise TypeError(f"NumpyActor supports Discrete and Box action spaces, got {action_space}")
        self.start = int(action_space.start) if self.discrete else 0
        self.action_shape = () if self.discrete else tuple(action_space.shape)
        self.readout, self.commands = readout, commands
        if critic is None:
            self.policy_columns = self.value_columns = None
            self.value_readout = readout
        else:
            self.policy_columns = (0, critic["policy_dim"])
            self.value_columns = (critic["policy_dim"], self.feature_dim)
            self.value_readout = critic["readout"]
        self.rng = np.random.default_rng(seed + 1)  # PPO's action generator is seeded seed + 1 too
        self.weights: dict[str, np.ndarray] = {}

    def initial_heads(self, seed: int) -> dict[str, np.ndarray]:
        """Starting weights for both heads (see the module's docstring), heads_arrays' names."""
        init = _Init(seed)
        width = init.readout("policy.readout.", self.readout, self.policy_columns, self.feature_dim)
        if self.commands is not None:
            c = self.commands
            embed, hidden = c.get("embed", COMMAND_EMBED), c.get("hidden", COMMAND_HIDDEN)
            init.linear("policy.net.state.0.", width - c["count"] * c["width"], embed, math.sqrt(2))
            init.linear("policy.net.command.0.", c["width"], embed, math.sqrt(2))
            init.mlp("policy.net.score.", 3 * embed, 1, (hidden,), 0.01)
        else:
            out = self.num_actions if self.discrete else int(np.prod(self.action_shape))
            init.mlp("policy.net.", width, out, self.hidden, 0.01)
        if not self.discrete:
            init.heads["policy.log_std"] = np.full(self.action_shape, self.init_log_std, np.float32)
        width = init.readout("value.readout.", self.value_readout, self.value_columns, self.feature_dim)
        init.mlp("value.net.", width, 1, self.hidden, 1.0)
        return init.heads

    def load(self, heads: dict[str, np.ndarray]) -> None:
        """heads: 'policy.<name>' / 'value.<name>' -> array, as heads.safetensors names them."""
        self.weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in heads.items()}

    def finite(self) -> bool:
        return all(bool(np.isfinite(w).all()) for w in self.weights.values())

    def _policy_out(self, x: np.ndarray) -> np.ndarray:
        x = _readout(self.weights, "policy.readout.", self.readout, self.policy_columns, x)
        if self.commands is not None:
            return _command_scores(self.weights, "policy.net.", self.commands, x)
        return _mlp(self.weights, "policy.net.", x)

    def value(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float32)
        x = _readout(self.weights, "value.readout.", self.value_readout, self.value_columns, x)
        return _mlp(self.weights, "value.net.", x)[..., 0]

    def act(self, features: np.ndarray, deterministic: bool = False):
        """(actions, log_probs, values), as PPO.act: Box actions unclipped, the log_prob that of the sample."""
        x = np.asarray(features, dtype=np.float32)
        out = self._policy_out(x)
        if self.discrete:
            log_p = _log_softmax(out)
            if deterministic:
                index = log_p.argmax(axis=-1)
            else:
                cdf = np.cumsum(np.exp(log_p.astype(np.float64)), axis=-1)
                u = self.rng.random(cdf.shape[:-1]) * cdf[..., -1]
                index = np.minimum((cdf <= u[..., None]).sum(axis=-1), cdf.shape[-1] - 1)
            log_prob = np.take_along_axis(log_p, index[..., None], axis=-1)[..., 0]
            return (index + self.start).astype(np.int64), log_prob.astype(np.float32), self.value(x)
        mean = out.reshape(*out.shape[:-1], *self.action_shape)
        log_std = self.weights["policy.log_std"]
        std = np.exp(log_std)
        action = mean if deterministic else mean + std * self.rng.standard_normal(mean.shape).astype(np.float32)
        per_dim = -((action - mean) ** 2) / (2 * std ** 2) - log_std - HALF_LOG_2PI
        axes = tuple(range(-len(self.action_shape), 0))
        return action.astype(np.float32), per_dim.sum(axis=axes).astype(np.float32), self.value(x)
