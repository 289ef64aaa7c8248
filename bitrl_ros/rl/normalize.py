"""Running statistics for observation and reward normalization, with JSON-serializable state."""

import numpy as np


class RunningMeanStd:
    """Mean and variance of everything seen so far, merged batch by batch (Chan et al. parallel update), float64."""

    def __init__(self, shape=()):
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        self.count = 0.0

    def update(self, batch) -> None:
        batch = np.asarray(batch, dtype=np.float64).reshape((-1,) + self.mean.shape)
        n = batch.shape[0]
        if n == 0:
            return
        batch_mean, batch_var = batch.mean(axis=0), batch.var(axis=0)
        if self.count == 0:
            self.mean, self.var, self.count = batch_mean, batch_var, float(n)
            return
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        m2 = self.var * self.count + batch_var * n + delta**2 * (self.count * n / total)
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean = np.asarray(state["mean"], dtype=np.float64).reshape(self.mean.shape)
        self.var = np.asarray(state["var"], dtype=np.float64).reshape(self.var.shape)
        self.count = float(state["count"])


class ObservationNormalizer:
    """(x - mean) / sqrt(var + eps), clipped to [-clip, clip]. Set `frozen` for evaluation."""

    def __init__(self, shape, clip: float = 10.0, eps: float = 1e-8):
        self.rms = RunningMeanStd(shape)
        self.clip, self.eps = clip, eps
        self.frozen = False

    def update(self, batch) -> None:
        if not self.frozen:
            self.rms.update(batch)

    def normalize(self, x) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.rms.mean) / np.sqrt(self.rms.var + self.eps)
        return np.clip(z, -self.clip, self.clip).astype(np.float32)

    def __call__(self, batch) -> np.ndarray:
        """Update with the batch (unless frozen), then normalize it."""
        self.update(batch)
        return self.normalize(batch)

    def state_dict(self) -> dict:
        return {"rms": self.rms.state_dict(), "clip": self.clip, "eps": self.eps, "frozen": self.frozen}

    def load_state_dict(self, state: dict) -> None:
        self.rms.load_state_dict(state["rms"])
        self.clip, self.eps, self.frozen = float(state["clip"]), float(state["eps"]), bool(state["frozen"])


class RewardNormalizer:
    """Divides rewards by the std of the running discounted return (not its mean: that would shift the optimum)."""

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, eps: float = 1e-8):
        self.rms = RunningMeanStd(())
        self.returns = np.zeros(num_envs, dtype=np.float64)
        self.gamma, self.clip, self.eps = gamma, clip, eps
        self.frozen = False

    def __call__(self, rewards, dones) -> np.ndarray:
        """Scale one step of [N] rewards; `dones` (terminated | truncated) resets those envs' running return."""
        rewards = np.asarray(rewards, dtype=np.float64)
        if not self.frozen:
            self.returns = self.returns * self.gamma + rewards
            self.rms.update(self.returns)
            self.returns[np.asarray(dones, dtype=bool)] = 0.0
        scaled = rewards / np.sqrt(self.rms.var + self.eps)
        return np.clip(scaled, -self.clip, self.clip).astype(np.float32)

    def state_dict(self) -> dict:
        return {"rms": self.rms.state_dict(), "returns": self.returns.tolist(), "gamma": self.gamma,
                "clip": self.clip, "eps": self.eps, "frozen": self.frozen}

    def load_state_dict(self, state: dict) -> None:
        self.rms.load_state_dict(state["rms"])
        self.returns = np.asarray(state["returns"], dtype=np.float64).reshape(self.returns.shape)
        self.gamma, self.clip, self.eps = float(state["gamma"]), float(state["clip"]), float(state["eps"])
        self.frozen = bool(state["frozen"])
