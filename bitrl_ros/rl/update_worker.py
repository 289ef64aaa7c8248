"""PPO updates in a child process, so that the acting process's interpreter never runs one.

In one process a PPO update and the control loop share the interpreter lock: every few milliseconds of the update
an action waits (issue 14: action period p99 of 20 ms while learning). Here the learner's PPO is mirrored in a
child (`python -m bitrl_ros.rl.update_worker FD`, started with the interpreter of the parent, niced so that the
control loop wins the CPU), which runs the update, undoes an unhealthy one, writes the checkpoint and sends back the
new training state. The parent only hands over a full rollout (pickled in a sender thread) and loads the state that
comes back (in a reader thread).

Protocol: pickles framed by multiprocessing.connection over a socketpair. Parent -> child: ("init", ppo kwargs,
snapshot, torch threads, niceness), ("restore", snapshot), ("update", rollout, last values, last dones,
checkpoint dir, extra), ("stop",). Child -> parent: one UpdateResult per update.
"""
from __future__ import annotations

from dataclasses import dataclass
from multiprocessing.connection import Connection
import os
from pathlib import Path
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
from typing import Callable

from bitrl_ros.memory import limit_malloc_arenas

NICENESS = 10  # the update yields the CPU to the control loop (and to DDS) whenever both want it


@dataclass
class UpdateResult:
    stats: dict | None = None         # None: the update was undone (problem says why) or never ran
    problem: str | None = None
    checkpoint_error: str | None = None  # why the checkpoint could not be written; None: written (or none asked)
    snapshot: dict | None = None      # PPO.snapshot() after the update (heads, Adam states, generator, counter)
    worker_died: bool = False         # the child is gone (killed, out of memory): start a new one


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
        self._outbox.put((("init", {"feature_dim": ppo.feature_dim, "action_space": ppo.action_space,
                                    "config": ppo.config, "seed": ppo.seed, "readout": ppo.readout},
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
        """Queue one update; done() runs (in the sender thread) once the rollout is pickled, i.e. reusable.
        False: the child is already gone (nothing queued).
        """
        if self._dead.is_set():
            return False
        self._outbox.put((("update", rollout, last_values, last_dones,
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
                payload = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
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
                result = pickle.loads(self._conn.recv_bytes())
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

    from bitrl_ros.rl.learner import run_update
    from bitrl_ros.rl.ppo import PPO

    ppo = None
    while True:
        try:
            message = pickle.loads(conn.recv_bytes())
        except (OSError, EOFError):
            return  # the parent is gone
        kind = message[0]
        if kind == "init":
            _, kwargs, snapshot, threads, niceness = message
            os.nice(niceness)
            torch.set_num_threads(threads)
            ppo = PPO(**kwargs)
            ppo.restore(snapshot)
        elif kind == "restore":
            ppo.restore(message[1])
        elif kind == "update":
            _, rollout, last_values, last_dones, checkpoint_dir, extra = message
            result = run_update(ppo, rollout, last_values, last_dones, checkpoint_dir, extra)
            if result.stats is not None:
                result.snapshot = ppo.snapshot()
            conn.send_bytes(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
        elif kind == "stop":
            return


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
