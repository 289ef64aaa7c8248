"""PPO updates in a child process, so that the acting process's interpreter never runs one, nor imports torch.

In one process a PPO update and the control loop share the interpreter lock: every few milliseconds of the update
an action waits (issue 14: action period p99 of 20 ms while learning). Here the learner's PPO lives in a child
(`python -m bitrl_ros.rl.update_worker FD`, started with the interpreter of the parent, niced so that the control
loop wins the CPU): it builds the heads and their optimizers, runs each update, undoes an unhealthy one, writes the
checkpoints and sends back the heads' new weights, which the parent acts with in numpy (rl/numpy_heads.py). The
parent never imports torch (about 200 MB on a 4 GB board, issue 14); it keeps the child's last training state as
opaque bytes, to start a new child from it if this one dies.

Protocol: messages framed by multiprocessing.connection over a socketpair, each encoded by encode_parts() as two
frames (JSON for the structure, safetensors for the arrays and tensors; nothing is unpickled). Parent -> child:
("init", PPO kwargs, state or None, starting heads, torch threads), ("load", id, checkpoint dir),
("save", id, checkpoint dir, extra), ("update", rollout arrays, last values, last dones, checkpoint dir, extra),
("stop",). Child -> parent: a reply {"kind": "state" | "saved", "id": ...} to each load and save, one
UpdateResult (as a dict, "kind": "update") per update. A training state is PPO.snapshot() encoded, carried as a
uint8 array.
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
    heads: dict | None = None         # the heads' weights after the update ('policy.<name>' -> array)
    state: np.ndarray | None = None   # the training state after it (PPO.snapshot() encoded, as uint8)
    num_updates: int = 0
    worker_died: bool = False         # the child is gone (killed, out of memory): start a new one


def encode_parts(message) -> tuple[bytes, bytes]:
    """A message of dicts (any keys), lists, tuples, scalars, strings, numpy arrays and torch tensors as two byte
    strings: the structure as JSON, the arrays as safetensors. torch is never imported here: a tensor can only come
    from a process that has it. Sent as two frames (send_message), a rollout is not copied once more to join them.
    """
    torch = sys.modules.get("torch")
    arrays: dict[str, np.ndarray] = {}

    def node(value):
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, np.generic):
            return value.item()
        is_torch = torch is not None and isinstance(value, torch.Tensor)
        if isinstance(value, np.ndarray) or is_torch:
            name = str(len(arrays))
            arrays[name] = np.ascontiguousarray(value.detach().cpu().numpy() if is_torch else value)
            return {"__array__": name, "torch": is_torch}
        if isinstance(value, dict):
            return {"__dict__": [[node(k), node(v)] for k, v in value.items()]}
        if isinstance(value, tuple):
            return {"__tuple__": [node(v) for v in value]}
        if isinstance(value, list):
            return [node(v) for v in value]
        raise TypeError(f"cannot encode {type(value).__name__} for the update process")

    return json.dumps(node(message)).encode(), save_arrays(arrays)


def encode(message) -> bytes:
    """encode_parts() as one byte string: an 8-byte length, the structure, the arrays."""
    structure, arrays = encode_parts(message)
    return len(structure).to_bytes(8, "little") + structure + arrays


def decode(payload: bytes):
    """The inverse of encode()."""
    size = int.from_bytes(payload[:8], "little")
    return decode_parts(payload[8:8 + size], payload[8 + size:])


def decode_parts(structure: bytes, arrays: bytes):
    """The inverse of encode_parts()."""
    structure = json.loads(structure)
    arrays = load_arrays(arrays)

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


def send_message(conn: Connection, message) -> None:
    for part in encode_parts(message):
        conn.send_bytes(part)


def recv_message(conn: Connection):
    return decode_parts(conn.recv_bytes(), conn.recv_bytes())


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


def ppo_spec(feature_dim: int, action_space, config, seed: int, readout=None, critic=None, commands=None) -> dict:
    """The PPO constructor's arguments as the init message carries them (JSON-able)."""
    from bitrl_ros.rl.checkpoint import describe_action_space

    return {"feature_dim": int(feature_dim), "action_space": describe_action_space(action_space),
            "config": config.to_dict(), "seed": int(seed), "readout": readout, "critic": critic, "commands": commands}


class UpdateProcess:
    """The parent's handle on one child. Made, it starts the child, which imports torch (seconds) while nothing
    waits for it; start() then builds its PPO; submit() queues updates, whose results reach on_result in a reader
    thread; load() and save() are requests answered in turn.
    """

    def __init__(self, torch_threads: int = 1, niceness: int = NICENESS):
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_path(), env.get("PYTHONPATH", "")) if p)
        try:
            self._proc = subprocess.Popen([sys.executable, "-m", "bitrl_ros.rl.update_worker",
                                           str(child_sock.fileno()), str(int(niceness))],
                                          pass_fds=(child_sock.fileno(),), env=env)
        finally:
            child_sock.close()
        self._conn = Connection(parent_sock.detach())
        self.torch_threads = int(torch_threads)
        self._on_result: Callable[[UpdateResult], None] | None = None
        self._outbox: queue.Queue = queue.Queue()
        self._closed = False
        self._dead = threading.Event()  # set by the reader when the child is gone, before it reports so
        self._replies: dict[int, dict] = {}
        self._replied = threading.Condition()
        self._next_id = 0
        self.started = False
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

    def start(self, spec: dict, state: np.ndarray | None, heads: dict, on_result: Callable[[UpdateResult], None]):
        """Build the child's PPO from spec (ppo_spec()) with the given heads' weights (heads_arrays' names) and
        fresh optimizers, or from a training state when given one. Not answered: nothing waits for it.
        """
        self._on_result = on_result
        self.started = True
        self._outbox.put((("init", spec, state, heads, self.torch_threads), None))

    def load(self, checkpoint_dir, timeout: float | None = None) -> dict:
        """The child loads a checkpoint: reply with 'error' (None: loaded), 'heads', 'state', 'num_updates', 'extra'."""
        return self.wait_reply(self._request("load", str(checkpoint_dir)), timeout)

    def save(self, checkpoint_dir, extra: dict, timeout: float | None = None) -> dict:
        """The child writes its training state as a checkpoint: reply with 'path' and 'error' (None: written)."""
        return self.wait_reply(self._request("save", str(checkpoint_dir), extra), timeout)

    def _request(self, kind: str, *args) -> int:
        with self._replied:
            self._next_id += 1
            request_id = self._next_id
        self._outbox.put(((kind, request_id, *args), None))
        return request_id

    def wait_reply(self, request_id: int, timeout: float | None = None) -> dict:
        """The child's reply to a request; RuntimeError when the child dies first, TimeoutError after timeout."""
        with self._replied:
            if not self._replied.wait_for(lambda: request_id in self._replies or self._dead.is_set(), timeout):
                raise TimeoutError(f"the PPO update process did not answer within {timeout:g} s")
            if request_id not in self._replies:
                raise RuntimeError(f"the PPO update process exited (code {self._proc.wait()})")
            return self._replies.pop(request_id)

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
                parts = encode_parts(item)
                if done is not None:
                    done()
                for part in parts:
                    self._conn.send_bytes(part)
            except (OSError, EOFError):
                return  # the child is gone; the reader reports it
            if item[0] == "stop":
                return

    def _read_loop(self) -> None:
        while True:
            try:
                message = recv_message(self._conn)
            except (OSError, EOFError):
                with self._replied:
                    self._dead.set()
                    self._replied.notify_all()
                if not self._closed and self._on_result is not None:
                    code = self._proc.wait()
                    self._on_result(UpdateResult(problem=f"the PPO update process exited (code {code})",
                                                 worker_died=True))
                return
            if message.pop("kind") == "update":
                self._on_result(UpdateResult(**message))
            else:
                with self._replied:
                    self._replies[message["id"]] = message
                    self._replied.notify_all()


def _state_reply(request_id: int, ppo, extra=None, error=None) -> dict:
    from bitrl_ros.rl.checkpoint import heads_arrays

    return {"kind": "state", "id": request_id, "error": error, "heads": heads_arrays(ppo),
            "state": _encoded_state(ppo), "num_updates": ppo.num_updates, "extra": extra}


def _encoded_state(ppo) -> np.ndarray:
    return np.frombuffer(encode(ppo.snapshot()), dtype=np.uint8)


def _serve(conn: Connection, niceness: int) -> None:
    # Ctrl-C (and a service manager's SIGTERM) reach the whole process group: the parent stops us after its update
    # and checkpoint, and a parent that dies closes the socket, which ends us too.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.nice(niceness)  # first: importing torch takes seconds of CPU while the graph starts up
    limit_malloc_arenas()
    import torch  # now, while the parent has not asked for anything yet

    from bitrl_ros.errors import CheckpointError
    from bitrl_ros.rl.checkpoint import (action_space_from_description, heads_arrays, load_checkpoint,
                                         load_heads_arrays, save_checkpoint)
    from bitrl_ros.rl.learner import run_update
    from bitrl_ros.rl.ppo import PPO, PPOConfig

    ppo = None
    while True:
        try:
            message = recv_message(conn)
        except (OSError, EOFError):
            return  # the parent is gone
        kind = message[0]
        reply = None
        if kind == "init":
            _, kwargs, state, heads, threads = message
            torch.set_num_threads(threads)
            kwargs["action_space"] = action_space_from_description(kwargs["action_space"], "update process")
            kwargs["config"] = PPOConfig.from_dict(kwargs["config"])
            ppo = PPO(**kwargs)
            if state is not None:
                ppo.restore(decode(state.tobytes()))
            else:
                load_heads_arrays(ppo, heads)
            continue
        elif kind == "load":
            _, request_id, checkpoint_dir = message
            try:
                reply = _state_reply(request_id, ppo, extra=load_checkpoint(checkpoint_dir, ppo))
            except CheckpointError as exc:
                reply = _state_reply(request_id, ppo, error=str(exc))
        elif kind == "save":
            _, request_id, checkpoint_dir, extra = message
            try:
                reply = {"kind": "saved", "id": request_id, "error": None,
                         "path": str(save_checkpoint(checkpoint_dir, ppo, extra))}
            except OSError as exc:
                reply = {"kind": "saved", "id": request_id, "path": None, "error": str(exc.strerror or exc)}
        elif kind == "update":
            _, rollout, last_values, last_dones, checkpoint_dir, extra = message
            result = run_update(ppo, _rollout_from(rollout), last_values, last_dones, checkpoint_dir, extra)
            if result.stats is not None:
                result.heads, result.state = heads_arrays(ppo), _encoded_state(ppo)
            result.num_updates = ppo.num_updates
            reply = dict({f.name: getattr(result, f.name) for f in fields(result)}, kind="update")
        elif kind == "stop":
            return
        send_message(conn, reply)


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])), int(sys.argv[2]))
