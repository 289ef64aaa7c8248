"""The whole ROS graph on real DDS (localhost), a real CartPole and the real default backbone: lockstep training
through `bitrl run`'s runner, the realtime loop, the bridge in another process, resume after SIGKILL, and the
runner refusing an invalid parameter.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time
import uuid

import pytest

rclpy = pytest.importorskip("rclpy")

from bitrl_ros.backbone.engines.native import native_available  # noqa: E402
from bitrl_ros.errors import CheckpointError, ConfigError  # noqa: E402
from bitrl_ros.nodes.base import InProcessGraph  # noqa: E402
from bitrl_ros.runner import AGENT_NODES, build_nodes, resolve_params, run, RunOptions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "agent.yaml"


def _ns() -> str:
    return "t_graph_" + uuid.uuid4().hex[:8]


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", "73")
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _bitrl_run(*args) -> list[str]:
    return [sys.executable, "-m", "bitrl_ros.cli", "run", "--config", str(CONFIG), "--no-progress", *args]


@pytest.mark.slow
def test_lockstep_graph_trains_and_checkpoints(tmp_path):
    ckpt = tmp_path / "ckpt"
    summary = run(RunOptions(config=CONFIG, steps=200, namespace=_ns(), progress=False, overrides={
        "policy_value.ppo.num_steps": 128, "policy_value.ppo.update_epochs": 1,
        "policy_value.checkpoint_dir": str(ckpt)}))
    assert summary["steps"] == 200
    assert summary["updates"] >= 1
    assert (ckpt / "state.json").is_file()
    assert summary["fallbacks"] == 0 and summary["stale_actions"] == 0  # every step got its own action
    assert summary["episodes"] > 0 and summary["mean_return"] is not None
    assert summary["latency_ms_p50"] is not None


@pytest.mark.slow
@pytest.mark.skipif(not native_available()[0], reason="only the native engine encodes without torch")
def test_the_acting_process_never_imports_torch(tmp_path):
    """`bitrl run` with the default update_worker (process): learning, the update's checkpoint and the shutdown's
    flush (checkpoint, learning curve) happen without torch in the graph's process; only the update process has it.
    """
    script = f"""
import sys
from bitrl_ros.runner import run, RunOptions
summary = run(RunOptions(config={str(CONFIG)!r}, steps=200, namespace={_ns()!r}, progress=False, log=lambda *a: None,
                         overrides={{"policy_value.ppo.num_steps": 128, "policy_value.ppo.update_epochs": 1,
                                    "policy_value.checkpoint_dir": {str(tmp_path / "ckpt")!r}}}))
assert summary["updates"] >= 1, summary
print("torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=_env())
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert (tmp_path / "ckpt" / "state.json").is_file() and (tmp_path / "learning_curve.png").is_file()


@pytest.mark.slow
def test_lockstep_graph_with_the_trainable_per_field_readout_records_its_layout(tmp_path):
    ckpt = tmp_path / "ckpt"
    overrides = {"readout": "fields_proj", "numbers": "scaled", "raw_skip": True,
                 "policy_value.ppo.num_steps": 64, "policy_value.ppo.update_epochs": 1,
                 "policy_value.checkpoint_dir": str(ckpt)}
    summary = run(RunOptions(config=CONFIG, steps=100, namespace=_ns(), progress=False, overrides=overrides))
    assert summary["updates"] >= 1 and summary["fallbacks"] == 0
    layout = json.loads((ckpt / "state.json").read_text())["extra"]["feature_layout"]
    assert layout["readout"] == "fields_proj" and layout["raw_skip"] and layout["obs_dim"] == 4
    assert layout["serializer"]["numbers"] == "scaled" and layout["backbone"] == "minilm-bitnet-distilled"
    assert json.loads((ckpt / "state.json").read_text())["feature_dim"] == 4 * 384 + 4
    # Resuming the same checkpoint with another readout is refused, naming the difference.
    with pytest.raises(CheckpointError) as err:
        run(RunOptions(config=CONFIG, steps=10, namespace=_ns(), progress=False,
                       overrides={**overrides, "readout": "fields"}))
    assert "feature layout" in str(err.value) and "readout" in str(err.value)


@pytest.mark.slow
def test_realtime_loop_runs_near_40_hz(tmp_path):
    summary = run(RunOptions(config=CONFIG, mode="realtime", duration=4.0, namespace=_ns(), progress=False,
                             overrides={"policy_value.checkpoint_dir": str(tmp_path / "ckpt")}))
    assert summary["mode"] == "realtime"
    assert summary["steps"] > 80
    assert 35.0 <= summary["achieved_rate_hz"] <= 45.0, summary


@pytest.mark.slow
def test_bridge_in_another_process(tmp_path):
    ns = _ns()
    bridge = subprocess.Popen(
        [sys.executable, "-m", "bitrl_ros.nodes.sim_bridge", "--ros-args", "-r", f"__ns:=/{ns}",
         "-p", "env:=CartPole-v1", "-p", "mode:=lockstep", "-p", "max_steps:=60", "-p", "action_timeout_s:=5.0"],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    validated = resolve_params(RunOptions(config=CONFIG, overrides={
        "policy_value.checkpoint_dir": str(tmp_path / "ckpt")}))
    graph = None
    try:
        graph = InProcessGraph(lambda ctx: build_nodes(validated, ctx, ns, names=AGENT_NODES[:3]), "multi", 3)
        nodes = graph.nodes
        deadline = time.monotonic() + 60.0
        while bridge.poll() is None and time.monotonic() < deadline and graph.spinning:
            time.sleep(0.05)
        out = bridge.communicate(timeout=10)[0] if bridge.poll() is not None else ""
        assert bridge.returncode == 0, out
        assert "finished: 60 steps" in out and " 0 fallbacks" in out, out
        assert nodes["policy_value"].actions_published >= 60
        assert nodes["policy_value"].safe_actions == 0
    finally:
        if bridge.poll() is None:
            bridge.kill()
            bridge.wait(5)
        if graph is not None:
            graph.close()


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path):
    ckpt = tmp_path / "ckpt"
    common = ["--namespace", _ns(), "--set", "policy_value.ppo.num_steps=64",
              "--set", "policy_value.ppo.update_epochs=1", "--set", f"policy_value.checkpoint_dir={ckpt}"]
    first = subprocess.Popen(_bitrl_run(*common), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90.0
        while not (ckpt / "state.json").is_file() and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.1)
        assert (ckpt / "state.json").is_file(), "no checkpoint was written"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(5)
    saved = json.loads((ckpt / "state.json").read_text())
    out_json = tmp_path / "summary.json"
    second = subprocess.run(_bitrl_run(*common, "--steps", "100", "--json", str(out_json)), env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads(out_json.read_text())
    assert summary["resumed_updates"] >= 1, summary
    assert summary["updates"] >= summary["resumed_updates"]
    assert summary["steps"] == 100 and summary["fallbacks"] == 0
    assert "resumed from" in second.stdout + second.stderr
    assert saved  # the checkpoint the killed run left was complete and readable


def test_runner_refuses_invalid_parameter():
    with pytest.raises(ConfigError, match="ppo.gamma"):
        resolve_params(RunOptions(config=CONFIG, overrides={"policy_value.ppo.gamma": 2.0}))
    proc = subprocess.run(_bitrl_run("--set", "policy_value.ppo.gamma=2.0"), env=_env(), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "ppo.gamma" in proc.stderr and "2.0" in proc.stderr and "(0, 1]" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_set_without_node_applies_to_every_node_that_has_it():
    validated = resolve_params(RunOptions(config=CONFIG, overrides={"control_rate_hz": 20, "seed": 5},
                                          mode="realtime"))
    assert all(v["control_rate_hz"] == 20.0 and v["mode"] == "realtime" for v in validated.values())
    assert validated["sim_bridge"]["seed"] == 5 and validated["policy_value"]["seed"] == 5
    assert not any(v["use_sim_time"] for v in validated.values())
    lockstep = resolve_params(RunOptions(config=CONFIG))
    assert lockstep["policy_value"]["use_sim_time"] and not lockstep["sim_bridge"]["use_sim_time"]
    with pytest.raises(ConfigError, match="no node"):
        resolve_params(RunOptions(config=CONFIG, overrides={"not_a_parameter": 1}))
