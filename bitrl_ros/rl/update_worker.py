"""PPO updates in a child process, so that the acting process's interpreter never runs one.

In one process a PPO update and the control loop share the interpreter lock: every few milliseconds of the update
an action waits (issue 14: action period p99 of 20 ms while learning). Here the learner's PPO is mirrored in a
child (`python -m bitrl_ros.rl.update_worker FD`, started with the interpreter of the parent, niced so that the
control loop wins the CPU), which runs the update, undoes an unhealthy one, writes the checkpoint and sends back the
new training state. The parent only hands over a full rollout (encoded in a sender thread) and loads the state that
comes back (in a reader thread).

Protocol: messages framed by multiprocessing.connection over a socketpair, each encoded by encode() (JSON for the
structure, safetensors for the arrays and tensors; nothing is unpickled). Parent -> child: ("init", ppo kwargs,
snapshot, torch threads, niceness), ("restore", snapshot), ("update", rollout arrays, last values, last dones,
checkpoint dir, extra), ("stop",). Child -> parent: one UpdateResult (as a dict) per update.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
import json
from multiprocessing.connection import Connection
import os
from pathlib import Path
import queue
import signal
import socket
import subprocess
import sys
import threading
from typing import Callable

import numpy as np
from safetensors.numpy import load as load_arrays, save as save_arrays

from bitrl_ros.memory import limit_malloc_arenas

NICENESS = 10  # the update yields the CPU to the control loop (and to DDS) whenever both want it


@dataclass
class UpdateResult:
    stats: dict | None = None         # None: the update was undone (problem says why) or never ran
    problem: str | None = None
    checkpoint_error: str | None = None  # why the checkpoint could not be written; None: written (or none asked)
    snapshot: dict | None = None      # PPO.snapshot() after the update (heads, Adam states, generator, counter)
    worker_died: bool = False         # the child is gone (killed, out of memory): start a new one


def encode(message) -> bytes:
    """A message of dicts (any keys), lists, tuples, scalars, strings, numpy arrays and torch tensors as bytes:
    an 8-byte length, the structure as JSON, the arrays as safetensors.
    """
    import torch

    arrays: dict[str, np.ndarray] = {}

    def node(value):
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, (np.ndarray, torch.Tensor)):
            name = str(len(arrays))
            is_torch = isinstance(value, torch.Tensor)
            arrays[name] = np.ascontiguousarray(value.detach().cpu().numpy() if is_torch else value)
            return {"__array__": name, "torch": is_torch}
        if isinstance(value, dict):
            return {"__dict__": [[node(k), node(v)] for k, v in value.items()]}
        if isinstance(value, tuple):
            return {"__tuple__": [node(v) for v in value]}
        if isinstance(value, list):
            return [node(v) for v in value]
        raise TypeError(f"cannot encode {type(value).__name__} for the update process")

    structure = json.dumps(node(message)).encode()
    return len(structure).to_bytes(8, "little") + structure + save_arrays(arrays)


def decode(payload: bytes):
    """The inverse of encode()."""
    size = int.from_bytes(payload[:8], "little")
    structure = json.loads(payload[8:8 + size])
    arrays = load_arrays(payload[8 + size:])

    def value(n):
        if isinstance(n, list):
            return [value(v) for v in n]
        if not isinstance(n, dict):
            return n
        if "__array__" in n:
            array = arrays[n["__array__"]]
            if n["torch"]:
                import torch

                return torch.from_numpy(array.copy())
            return array
        if "__tuple__" in n:
            return tuple(value(v) for v in n["__tuple__"])
        return {_hashable(value(k)): value(v) for k, v in n["__dict__"]}

    return value(structure)


def _hashable(key):
    return tuple(key) if isinstance(key, list) else key


def _rollout_message(buffer) -> dict:
    return {"shape": [buffer.num_steps, buffer.num_envs, buffer.feature_dim], "action_shape": list(buffer.action_shape),
            "action_dtype": buffer.action_dtype.str, "step": buffer.step,
            "arrays": {name: getattr(buffer, name) for name in ROLLOUT_ARRAYS}}


def _rollout_from(message: dict):
    from bitrl_ros.rl.buffer import RolloutBuffer

    buffer = RolloutBuffer(*message["shape"], tuple(message["action_shape"]), np.dtype(message["action_dtype"]))
    for name, array in message["arrays"].items():
        setattr(buffer, name, array)
    buffer.step = message["step"]
    return buffer


ROLLOUT_ARRAYS = ("features", "actions", "log_probs", "values", "rewards", "terminated", "truncated",
                  "bootstrap_values")


def _package_path() -> str:
    return str(Path(__file__).resolve().parents[2])


class UpdateProcess:
    """The parent's handle on one child: submit() updates, results reach on_result in a reader thread."""

    def __init__(self, ppo, on_result: Callable[[UpdateResult], None], torch_threads: int = 1,
                 niceness: int = NICENESS):
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_path(), env.get("PYTHONPATH", "")) if p)
        try:
            self._proc = subprocess.Popen([sys.executable, "-m", "bitrl_ros.rl.update_worker",
                                           str(child_sock.fileno())], pass_fds=(child_sock.fileno(),), env=env)
        finally:
            child_sock.close()
        self._conn = Connection(parent_sock.detach())
        self._on_result = on_result
        self._outbox: queue.Queue = queue.Queue()
        self._closed = False
        self._dead = threading.Event()  # set by the reader when the child is gone, before it reports so
        from bitrl_ros.rl.checkpoint import describe_action_space

        self._outbox.put((("init", {"feature_dim": ppo.feature_dim,
                                    "action_space": describe_action_space(ppo.action_space),
                                    "config": ppo.config.to_dict(), "seed": ppo.seed, "readout": ppo.readout,
                                    "critic": ppo.critic, "commands": ppo.commands},
                           ppo.snapshot(), torch_threads, niceness), None))
        self._sender = threading.Thread(target=self._send_loop, name="ppo-update-send", daemon=True)
        self._reader = threading.Thread(target=self._read_loop, name="ppo-update-read", daemon=True)
        self._sender.start()
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc.poll() is None

    @property
    def dead(self) -> bool:
        """The child is gone and its result (worker_died) reported or about to be: start another."""
        return self._dead.is_set()

    def submit(self, rollout, last_values, last_dones, checkpoint_dir, extra: dict,
               done: Callable[[], None] | None = None) -> bool:
        """Queue one update; done() runs (in the sender thread) once the rollout is encoded (copied), i.e. reusable.
        False: the child is already gone (nothing queued).
        """
        if self._dead.is_set():
            return False
        self._outbox.put((("update", _rollout_message(rollout), last_values, last_dones,
                           None if checkpoint_dir is None else str(checkpoint_dir), extra), done))
        return True

    def restore(self, snapshot: dict) -> None:
        self._outbox.put((("restore", snapshot), None))

    def close(self, timeout: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._outbox.put((("stop",), None))
        self._sender.join(timeout)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._conn.close()

    def _send_loop(self) -> None:
        while True:
            item, done = self._outbox.get()
            try:
                payload = encode(item)
                if done is not None:
                    done()
                self._conn.send_bytes(payload)
            except (OSError, EOFError):
                return  # the child is gone; the reader reports it
            if item[0] == "stop":
                return

    def _read_loop(self) -> None:
        while True:
            try:
                result = UpdateResult(**decode(self._conn.recv_bytes()))
            except (OSError, EOFError):
                self._dead.set()
                if not self._closed:
                    code = self._proc.wait()
                    self._on_result(UpdateResult(problem=f"the PPO update process exited (code {code})",
                                                 worker_died=True))
                return
            self._on_result(result)


def _serve(conn: Connection) -> None:
    # Ctrl-C (and a service manager's SIGTERM) reach the whole process group: the parent stops us after its update
    # and checkpoint, and a parent that dies closes the socket, which ends us too.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    limit_malloc_arenas()
    import torch

    from bitrl_ros.rl.checkpoint import action_space_from_description
    from bitrl_ros.rl.learner import run_update
    from bitrl_ros.rl.ppo import PPO, PPOConfig

    ppo = None
    while True:
        try:
            message = decode(conn.recv_bytes())
        except (OSError, EOFError):
            return  # the parent is gone
        kind = message[0]
        if kind == "init":
            _, kwargs, snapshot, threads, niceness = message
            os.nice(niceness)
            torch.set_num_threads(threads)
            kwargs["action_space"] = action_space_from_description(kwargs["action_space"], "update process")
            kwargs["config"] = PPOConfig.from_dict(kwargs["config"])
            ppo = PPO(**kwargs)
            ppo.restore(snapshot)
        elif kind == "restore":
            ppo.restore(message[1])
        elif kind == "update":
            _, rollout, last_values, last_dones, checkpoint_dir, extra = message
            result = run_update(ppo, _rollout_from(rollout), last_values, last_dones, checkpoint_dir, extra)
            if result.stats is not None:
                result.snapshot = ppo.snapshot()
            conn.send_bytes(encode({f.name: getattr(result, f.name) for f in fields(result)}))
        elif kind == "stop":
            return


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
