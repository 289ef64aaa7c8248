"""The learning curve of a run (episode returns and their moving mean), as `bitrl train` and the policy_value
node write it; torch-free, so that the acting process can write it without importing torch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bitrl_ros.rl.evaluation import RETURN_WINDOW


def plot_learning_curve(episode_log, path: Path, title: str, target: float | None = None,
                        xlabel: str = "environment steps"):
    """episode_log: (x, return, length) per finished episode; x is the env step (or the episode number)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if episode_log:
        steps = np.array([s for s, _, _ in episode_log])
        rets = np.array([r for _, r, _ in episode_log])
        ax.plot(steps, rets, ".", alpha=0.25, markersize=3, label="episode return")
        k = min(RETURN_WINDOW, len(rets))
        smooth = np.convolve(rets, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, lw=2, label=f"mean of last {k}")
    if target is not None:
        ax.axhline(target, color="grey", ls="--", lw=1, label=f"solved ({target:g})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
