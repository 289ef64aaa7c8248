"""One call that seeds every random number generator a training run touches."""

import random

import numpy as np
import torch


def seed_everything(seed: int, num_threads: int | None = None) -> None:
    """Seed Python's `random`, NumPy's global RNG and torch's CPU RNG.

    Runs are bit-reproducible only on a fixed thread count (reductions split differently across
    threads), so pass `num_threads=1` for reproducible training.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if num_threads is not None:
        torch.set_num_threads(num_threads)
