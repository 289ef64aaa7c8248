"""Atomic, pickle-free training checkpoints: heads.safetensors + optim.safetensors + state.json.

The module imports torch only where it handles a PPO's tensors: reading state.json (read_checkpoint_state) and
describing action spaces need no torch, so the torch-free acting process can use them.

A checkpoint is a directory. It is written complete into a temp sibling, then renamed into place; the previous
checkpoint is renamed aside first (a directory cannot be renamed over a non-empty one) and deleted last. If the
process dies between those two renames, load_checkpoint falls back to the aside copy, which is complete.
"""

import json
import os
from pathlib import Path
import random
import shutil
import tempfile

import gymnasium as gym
import numpy as np
from safetensors import SafetensorError

from bitrl_ros.errors import CheckpointError

FORMAT_VERSION = 1
HEADS_FILE, OPTIM_FILE, STATE_FILE = "heads.safetensors", "optim.safetensors", "state.json"


def describe_action_space(space: gym.Space) -> dict:
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": space.low.astype(np.float64).ravel().tolist(),
                "high": space.high.astype(np.float64).ravel().tolist()}
    raise TypeError(f"unsupported action space {space}")


def action_space_from_description(desc: dict, where: str) -> gym.Space:
    """The inverse of describe_action_space; CheckpointError naming `where` for a malformed description."""
    try:
        if desc["type"] == "Discrete":
            return gym.spaces.Discrete(int(desc["n"]), start=int(desc.get("start", 0)))
        if desc["type"] == "Box":
            shape = tuple(int(s) for s in desc["shape"])
            low = np.asarray(desc["low"], dtype=np.float64).reshape(shape)
            high = np.asarray(desc["high"], dtype=np.float64).reshape(shape)
            return gym.spaces.Box(low, high, shape, dtype=np.dtype(desc.get("dtype", "float32")))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: malformed action_space {desc!r} ({e})") from None
    raise CheckpointError(f"{where}: unsupported action_space type {desc.get('type')!r}")


def _heads_tensors(ppo) -> dict:
    """The heads' weights as 'policy.<name>' / 'value.<name>' -> tensor (copied), heads.safetensors' names."""
    tensors = {f"policy.{k}": v for k, v in ppo.policy.state_dict().items()}
    tensors.update({f"value.{k}": v for k, v in ppo.value_head.state_dict().items()})
    return {k: v.detach().contiguous().clone() for k, v in tensors.items()}


def heads_arrays(ppo) -> dict[str, np.ndarray]:
    """_heads_tensors as numpy arrays: what the torch-free actor (rl/numpy_heads.py) loads."""
    return {k: v.numpy() for k, v in _heads_tensors(ppo).items()}


def load_heads_arrays(ppo, heads: dict) -> None:
    """Load heads named as heads_arrays() names them (arrays or tensors) into ppo's (or an actor copy's) heads."""
    import torch

    with torch.no_grad():
        for prefix, module in (("policy.", ppo.policy), ("value.", ppo.value_head)):
            module.load_state_dict({k[len(prefix):]: torch.as_tensor(v) for k, v in heads.items()
                                    if k.startswith(prefix)})


def _optimizers(ppo) -> dict:
    return {"policy_optim": ppo.policy_optimizer, "value_optim": ppo.value_optimizer}


def _optim_tensors(ppo) -> dict:
    """Adam state as '<optimizer>.<param index>.<exp_avg|exp_avg_sq|step>' -> tensor."""
    import torch

    tensors = {}
    for name, opt in _optimizers(ppo).items():
        for index, slots in opt.state_dict()["state"].items():
            for slot, value in slots.items():
                tensors[f"{name}.{index}.{slot}"] = torch.as_tensor(value).detach().contiguous().clone()
    return tensors


def _rng_state(ppo) -> dict:
    import torch

    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "shuffle_generator": ppo.shuffle_generator.get_state().tolist(),
        "action_generator": ppo.action_generator.get_state().tolist(),
        "torch_global": torch.random.get_rng_state().tolist(),
        "numpy_global": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python_random": [py_state[0], list(py_state[1]), py_state[2]],
    }


def save_file(tensors: dict, filename: str) -> None:
    """safetensors.torch.save_file, imported when first used (it imports torch)."""
    from safetensors.torch import save_file as write

    write(tensors, filename)


def load_file(filename: str) -> dict:
    """safetensors.torch.load_file, imported when first used (it imports torch)."""
    from safetensors.torch import load_file as read

    return read(filename)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _aside_path(path: Path) -> Path:
    return path.parent / f".{path.name}.previous"


def _write_tensors(tensors: dict, path: Path) -> None:
    """Safetensors' save_file, with its I/O failures (a full or read-only disk) raised as the OSError they are."""
    try:
        save_file(tensors, str(path))
    except SafetensorError as exc:
        raise OSError(f"{path.name}: {exc}") from exc


def save_checkpoint(path_dir, ppo, extra: dict | None = None) -> Path:
    """Write ppo's full training state plus `extra` (JSON-serializable: normalizers, step counters) to path_dir."""
    path = Path(path_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format_version": FORMAT_VERSION,
        "feature_dim": ppo.feature_dim,
        "action_space": describe_action_space(ppo.action_space),
        "config": ppo.config.to_dict(),
        "seed": ppo.seed,
        "num_updates": ppo.num_updates,
        "policy_lr_scale": ppo.policy_lr_scale,
        "optimizer_lrs": {name: [g["lr"] for g in opt.param_groups] for name, opt in _optimizers(ppo).items()},
        "rng": _rng_state(ppo),
        "extra": extra or {},
    }
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # what a save killed halfway left (one writer per dir)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the checkpoint should read like any other directory
        _write_tensors(_heads_tensors(ppo), tmp / HEADS_FILE)
        _write_tensors(_optim_tensors(ppo), tmp / OPTIM_FILE)
        with open(tmp / STATE_FILE, "w") as f:
            json.dump(state, f, indent=1)
        for name in (HEADS_FILE, OPTIM_FILE, STATE_FILE):
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        aside = _aside_path(path)
        if aside.exists():
            shutil.rmtree(aside)
        if path.exists():
            os.replace(path, aside)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _read_safetensors(path: Path, as_numpy: bool = False) -> dict:
    """The tensors of a safetensors file (torch tensors, or numpy arrays without importing torch)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file is missing")
    if as_numpy:
        from safetensors.numpy import load_file as read
    else:
        read = load_file
    try:
        return read(str(path))
    except Exception as e:  # safetensors raises several types for truncated / garbled files
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None


def _read_state(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: file is missing")
    try:
        with open(path) as f:
            state = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: invalid JSON ({e})") from None
    required = ("format_version", "feature_dim", "action_space", "num_updates", "optimizer_lrs", "rng", "extra")
    missing = [k for k in required if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: missing fields {missing}")
    if state["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {state['format_version']!r}, this build reads {FORMAT_VERSION}")
    return state


def _check_shapes(path: Path, loaded: dict, expected: dict) -> None:
    missing, unexpected = sorted(set(expected) - set(loaded)), sorted(set(loaded) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: tensor names differ from this agent's (missing {missing}, "
                              f"unexpected {unexpected})")
    for key, want in expected.items():
        if tuple(loaded[key].shape) != tuple(want.shape) or loaded[key].dtype != want.dtype:
            raise CheckpointError(f"{path}: tensor '{key}' is {loaded[key].dtype}{list(loaded[key].shape)}, "
                                  f"this agent needs {want.dtype}{list(want.shape)}")


def _optimizer_states(path: Path, tensors: dict, optimizers: dict) -> dict:
    """Regroup flat '<optimizer>.<index>.<slot>' tensors into per-optimizer Adam state, checking each shape."""
    params = {name: [p for g in opt.param_groups for p in g["params"]] for name, opt in optimizers.items()}
    states = {name: {} for name in optimizers}
    for key, value in tensors.items():
        parts = key.split(".")
        known = len(parts) == 3 and parts[0] in states and parts[1].isdigit()
        if not known or int(parts[1]) >= len(params[parts[0]]):
            raise CheckpointError(f"{path}: tensor '{key}' names no optimizer slot of this agent")
        states[parts[0]].setdefault(int(parts[1]), {})[parts[2]] = value
    for name, state in states.items():
        for index, slots in state.items():
            if set(slots) != {"exp_avg", "exp_avg_sq", "step"}:
                raise CheckpointError(f"{path}: {name} parameter {index} has slots {sorted(slots)}, "
                                      "expected exp_avg, exp_avg_sq, step")
            want = tuple(params[name][index].shape)
            for slot in ("exp_avg", "exp_avg_sq"):
                if tuple(slots[slot].shape) != want:
                    raise CheckpointError(f"{path}: '{name}.{index}.{slot}' has shape {list(slots[slot].shape)}, "
                                          f"this agent needs {list(want)}")
    return states


def _checked_state(path_dir, feature_dim: int, action_space) -> tuple[Path, dict]:
    """(the checkpoint's directory, its state.json), checked against the agent's feature width and action space."""
    path = Path(path_dir)
    if not path.exists() and _aside_path(path).is_dir():
        path = _aside_path(path)  # a save died between its two renames; this copy is complete
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint directory is missing")
    state_path = path / STATE_FILE
    state = _read_state(state_path)
    if state["feature_dim"] != feature_dim:
        raise CheckpointError(f"{state_path}: feature_dim {state['feature_dim']} does not match this agent's "
                              f"{feature_dim}")
    want_space = describe_action_space(action_space)
    if state["action_space"] != want_space:
        raise CheckpointError(f"{state_path}: action space {state['action_space']} does not match this agent's "
                              f"{want_space}")
    return path, state


def read_acting_heads(path_dir, feature_dim: int, action_space, expected: dict) -> tuple[dict, dict]:
    """(heads as numpy arrays, state.json) of a checkpoint, for an actor that only acts: torch is not imported,
    the optimizer states are not read. expected: the actor's own heads (names and shapes to match).
    """
    path, state = _checked_state(path_dir, feature_dim, action_space)
    heads_path = path / HEADS_FILE
    heads = _read_safetensors(heads_path, as_numpy=True)
    _check_shapes(heads_path, heads, expected)
    return heads, state


def load_checkpoint(path_dir, ppo, restore_global_rngs: bool = False) -> dict:
    """Restore ppo (weights, Adam state, update counter, its own generators) from path_dir and return the
    saved `extra`. restore_global_rngs: also set the process-wide torch / NumPy / `random` generators to the
    training run's (only for a process that is that run, as `bitrl train --resume`); by default they are left
    alone, so evaluating or resuming inside a larger process changes nothing else in it.

    Everything is read and checked before ppo is touched, so a failed load leaves it as it was.
    """
    import torch

    path, state = _checked_state(path_dir, ppo.feature_dim, ppo.action_space)
    state_path = path / STATE_FILE
    heads_path, optim_path = path / HEADS_FILE, path / OPTIM_FILE
    heads = _read_safetensors(heads_path)
    _check_shapes(heads_path, heads, _heads_tensors(ppo))
    optim_states = _optimizer_states(optim_path, _read_safetensors(optim_path), _optimizers(ppo))
    try:
        rng = state["rng"]
        generators = {k: torch.tensor(rng[k], dtype=torch.uint8)
                      for k in ("shuffle_generator", "action_generator", "torch_global")}
        np_state = (rng["numpy_global"][0], np.asarray(rng["numpy_global"][1], dtype=np.uint32),
                    *rng["numpy_global"][2:])
        py_state = (rng["python_random"][0], tuple(rng["python_random"][1]), rng["python_random"][2])
        lrs = {name: [float(lr) for lr in state["optimizer_lrs"][name]] for name in _optimizers(ppo)}
        num_updates = int(state["num_updates"])
        policy_lr_scale = float(state.get("policy_lr_scale", 1.0))  # 1: a checkpoint from before adapt_kl
        if not (np.isfinite(policy_lr_scale) and policy_lr_scale > 0):
            raise ValueError(f"policy_lr_scale {policy_lr_scale!r} is not a positive number")
        # Dry runs on scratch RNGs, so that a bad state fails here and not halfway through applying.
        for t in generators.values():
            torch.Generator().set_state(t)
        np.random.RandomState().set_state(np_state)
        random.Random().setstate(py_state)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
        raise CheckpointError(f"{state_path}: malformed RNG / optimizer fields ({type(e).__name__}: {e})") from None

    # All checks passed: apply.
    load_heads_arrays(ppo, heads)
    for name, opt in _optimizers(ppo).items():
        sd = opt.state_dict()
        sd["state"] = optim_states[name]
        for group, lr in zip(sd["param_groups"], lrs[name]):
            group["lr"] = lr
        opt.load_state_dict(sd)
    ppo.shuffle_generator.set_state(generators["shuffle_generator"])
    ppo.action_generator.set_state(generators["action_generator"])
    if restore_global_rngs:
        torch.random.set_rng_state(generators["torch_global"])
        np.random.set_state(np_state)
        random.setstate(py_state)
    ppo.num_updates = num_updates
    ppo.policy_lr_scale = policy_lr_scale
    return state["extra"]


def read_checkpoint_state(path_dir) -> dict:
    """The parsed state.json (config, counters, extra), e.g. to rebuild a PPOConfig before loading."""
    path = Path(path_dir)
    if not path.exists() and _aside_path(path).is_dir():
        path = _aside_path(path)
    return _read_state(path / STATE_FILE)
