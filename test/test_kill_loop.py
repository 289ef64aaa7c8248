"""Kills at any moment (bench/kill_loop.py with a smaller count): every restart with the README's resume command
finds a complete checkpoint that loads, and none goes back.
"""
import json
from pathlib import Path
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_sigkill_and_resume_loop(tmp_path):
    out = tmp_path / "kill_loop.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "kill_loop.py"), "--kills", "4", "--seed", "1",
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    steps = [e["checkpoint_step"] for e in result["events"]]
    assert result["kills"] == 4 and len(steps) == 4 and result["restarts_that_resumed"] >= 2
    assert all(s is not None and s % result["rollout_steps"] == 0 for s in steps[1:])
    known = [s for s in steps if s is not None]  # the first kill may come before the first checkpoint
    assert known == sorted(known) and known[-1] > 0  # never back; the run made progress across the kills


@pytest.mark.slow
def test_sigkill_loop_of_the_ros_graph_with_a_recording(tmp_path):
    out = tmp_path / "kill_loop_graph.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "kill_loop.py"), "--graph", "--kills", "2",
                           "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    updates = [e["checkpoint_updates"] for e in result["events"]]
    assert len(updates) == 2 and updates[0] >= 1 and updates[1] > updates[0]  # the second life resumed and learned
    assert all(e["bag_observations"] > 0 for e in result["events"])  # every bag opens, reindexed or not
