"""A node run as its own process (`ros2 run` / `ros2 launch`) ends on SIGINT and on SIGTERM with exit code 0,
no traceback, after its clean-up; also when a second signal follows the first (a terminal's Ctrl-C reaches
`ros2 launch` and its nodes, and launch then forwards its own SIGINT).
"""
import os
from pathlib import Path
import signal
import subprocess
import sys
import time
import uuid

import pytest

ROOT = Path(__file__).resolve().parents[1]

CASES = [("sim_bridge", signal.SIGTERM, 1), ("state_serializer", signal.SIGINT, 1), ("policy_value", signal.SIGTERM, 1),
         ("diagnostics_monitor", signal.SIGINT, 1), ("ternary_encoder", signal.SIGTERM, 1),
         ("policy_value", signal.SIGINT, 10), ("ternary_encoder", signal.SIGINT, 10)]


@pytest.mark.slow
@pytest.mark.parametrize("node,sig,times", CASES, ids=[f"{n}-{s.name}x{k}" for n, s, k in CASES])
def test_node_process_exits_cleanly_on_signal(tmp_path, node, sig, times):
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    log = tmp_path / "node.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", f"bitrl_ros.nodes.{node}", "--ros-args", "-r",
                                 f"__ns:=/sig_{uuid.uuid4().hex[:8]}", "-p", "backbone:=mlp"]
                                + (["-p", f"checkpoint_dir:={tmp_path / 'ckpt'}"] if node == "policy_value" else []),
                                env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while "[INFO]" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # until the node has started (its first log line)
        time.sleep(0.5)
        assert proc.poll() is None, log.read_text()
        for _ in range(times):  # repeated signals land in the clean-up, whenever it starts
            if proc.poll() is None:
                proc.send_signal(sig)
            time.sleep(0.03)
        rc = proc.wait(30)  # a bound for a hung process, not a timing check
    text = log.read_text()
    assert rc == 0 and "Traceback" not in text and "KeyboardInterrupt" not in text, text


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_bitrl_run_ends_on_signal_with_exit_code_0_after_flushing(tmp_path, sig):
    """`bitrl run` (the whole graph in one process) under a signal, sent three times as an impatient user or a
    supervisor would: exit code 0, no traceback, the summary printed, policy_value's outputs written.
    """
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    log, ckpt = tmp_path / "run.log", tmp_path / "run" / "checkpoint"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "bitrl"), "run", "--mode", "realtime",
                                 "--duration", "120", "--no-progress", "--namespace", f"sig_{uuid.uuid4().hex[:8]}",
                                 "--set", "backbone=mlp", "--set", f"policy_value.checkpoint_dir={ckpt}"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while "heads built" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)  # until the graph runs: the first state reached policy_value
        assert proc.poll() is None and "heads built" in log.read_text(), log.read_text()
        for _ in range(3):
            proc.send_signal(sig)
            time.sleep(0.1)
        rc = proc.wait(60)  # a bound for a hung process, not a timing check
    text = log.read_text()
    assert rc == 0 and "Traceback" not in text, text
    assert "achieved rate" in text  # the summary table
    assert (ckpt.parent / "summary.json").is_file() and (ckpt / "state.json").is_file(), text
