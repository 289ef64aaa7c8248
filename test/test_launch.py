"""The robot user's path for real: `ros2 launch` of the three launch files on a colcon workspace, one process per
node, real DDS on localhost.

Needs the upstream launch stack in the venv and a colcon workspace of both packages: `make test-launch` builds both
(from ../shared/vendor/ros2-launch) and runs this file with BITRL_REQUIRE_LAUNCH=1, where a missing stack fails
instead of skipping. On a user's machine with ROS 2 from apt, point BITRL_COLCON_WS at a built workspace.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
import re
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
from rclpy.node import Node
import yaml

ROOT = Path(__file__).resolve().parents[1]
WS = Path(os.environ.get("BITRL_COLCON_WS", ROOT / "build" / "colcon_ws"))
VENV_BIN = Path(sys.executable).parent
AGENT_PROCESSES = ("state_serializer", "ternary_encoder", "policy_value", "diagnostics_monitor")
MAX_STEPS = 400
ROLLOUT = 128

pytestmark = pytest.mark.slow


def _missing() -> str | None:
    if not (VENV_BIN / "ros2").is_file():
        return f"no `ros2` in {VENV_BIN} (the launch stack is absent: `make test-launch` installs it)"
    if not (WS / "install" / "setup.bash").is_file():
        return f"no colcon workspace at {WS} (`make test-launch` builds it; or set BITRL_COLCON_WS)"
    return None


@pytest.fixture(scope="module", autouse=True)
def launch_stack():
    reason = _missing()
    if reason and os.environ.get("BITRL_REQUIRE_LAUNCH") == "1":
        pytest.fail(f"BITRL_REQUIRE_LAUNCH=1 but {reason}")
    if reason:
        pytest.skip(reason)


def _write_config(path: Path, checkpoint_dir: Path, mode: str) -> Path:
    params = yaml.safe_load((ROOT / "config" / "agent.yaml").read_text())
    for node in params.values():
        node["ros__parameters"]["mode"] = mode
    pv = params["policy_value"]["ros__parameters"]
    pv["checkpoint_dir"] = str(checkpoint_dir)
    pv["ppo"]["num_steps"] = ROLLOUT
    path.write_text(yaml.safe_dump(params))
    return path


class Launch:
    """`ros2 launch bitrl_ros FILE ARGS...` in its own process group (as a terminal runs it), output to a file."""

    def __init__(self, tmp: Path, launch_file: str, args: dict, domain_id: int):
        self.log = tmp / f"{launch_file}.log"
        env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(domain_id),
                   ROS_LOG_DIR=str(tmp / "ros_log"), PYTHONUNBUFFERED="1", AMENT_PREFIX_PATH=str(VENV_BIN.parent),
                   PATH=f"{VENV_BIN}:{os.environ['PATH']}")
        argv = " ".join(f"{k}:={v}" for k, v in args.items())
        self._out = open(self.log, "w")
        self.proc = subprocess.Popen(
            ["bash", "-c", f"source {WS}/install/setup.bash && exec ros2 launch bitrl_ros {launch_file} {argv}"],
            cwd=tmp, env=env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text()

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text())
            if found:
                return found
            assert self.proc.poll() is None, f"the launch ended before {pattern!r}:\n{self.text()}"
            time.sleep(0.2)
        raise AssertionError(f"no {pattern!r} within {timeout:.0f} s:\n{self.text()}")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)  # a bound for a hung launch, not a timing check
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"the launch did not end within {timeout:.0f} s:\n{self.text()}") from None
        finally:
            self._out.close()


def assert_clean_exit(launch: Launch, rc: int, processes) -> str:
    """Exit code 0, every node `finished cleanly` (exit 0) without launch having to escalate to SIGTERM/SIGKILL
    (it does after 5 s), and no traceback.
    """
    text = launch.text()
    assert rc == 0, text
    for name in processes:
        assert re.search(rf"\[{name}-\d+\]: process has finished cleanly", text), f"{name}:\n{text}"
    assert "process has died" not in text, text
    assert "sending signal 'SIGTERM'" not in text and "sending signal 'SIGKILL'" not in text, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    return text


def assert_managed_nodes_activated(text: str) -> None:
    """The launch file drove both lifecycle nodes: unconfigured at start, then configure, then activate."""
    for name in ("ternary_encoder", "policy_value"):
        lines = [line for line in text.splitlines() if f"[{name}]:" in line]
        marks = [next((i for i, line in enumerate(lines) if mark in line), None)
                 for mark in ("unconfigured: waiting for configure", "configure: inactive", "activate: active")]
        assert None not in marks and marks == sorted(marks), f"{name}:\n" + "\n".join(lines)


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    """One lockstep `sim.launch.py max_steps:=400` with a bag recorded: it must end by itself."""
    tmp = tmp_path_factory.mktemp("sim_launch")
    ckpt = tmp / "run" / "checkpoint"
    config = _write_config(tmp / "agent.yaml", ckpt, "lockstep")
    launch = Launch(tmp, "sim.launch.py", {"config": config, "max_steps": MAX_STEPS, "record": tmp / "bag"}, 141)
    rc = launch.wait(300)
    return {"tmp": tmp, "config": config, "checkpoint": ckpt, "bag": tmp / "bag", "rc": rc, "launch": launch}


def test_sim_launch_ends_by_itself_at_max_steps_with_checkpoint_plot_and_bag(sim_run):
    from bitrl_ros.bag.reader import open_bag
    from bitrl_ros.rl.checkpoint import STATE_FILE

    text = assert_clean_exit(sim_run["launch"], sim_run["rc"], ("sim_bridge", "bag_recorder") + AGENT_PROCESSES)
    assert f"max_steps={MAX_STEPS} reached" in text
    assert_managed_nodes_activated(text)
    ckpt = sim_run["checkpoint"]
    assert (ckpt / STATE_FILE).is_file()
    assert (ckpt.parent / "learning_curve.png").stat().st_size > 1000
    summary = json.loads((ckpt.parent / "summary.json").read_text())
    # A rollout that fills while the previous update runs is dropped and counted, never waited for; the first
    # update may also wait for the update process's interpreter and torch to come up (rollouts of 128 here).
    assert summary["updates"] >= 1 and summary["episodes"] >= 1, summary
    assert summary["updates"] + summary["rollouts_dropped"] >= MAX_STEPS // ROLLOUT - 1, summary
    assert summary["global_step"] == MAX_STEPS, summary
    with open_bag(sim_run["bag"]) as bag:  # flushed at shutdown: no reindex needed
        topics = bag.topics
    episodes = summary["episodes"]
    # one observation per step, plus each episode's reset observation (the last reset is not published)
    assert topics["/observation"][1] >= MAX_STEPS, topics
    assert topics["/action"][1] >= MAX_STEPS - episodes, topics


def test_replay_launch_replays_the_recorded_bag_and_ends_by_itself(sim_run):
    from bitrl_ros.bag.reader import open_bag

    with open_bag(sim_run["bag"]) as bag:
        recorded = bag.topics["/observation"][1]
    tmp = sim_run["tmp"]
    launch = Launch(tmp, "replay.launch.py", {"config": sim_run["config"], "bag": sim_run["bag"], "rate": 0}, 142)
    text = assert_clean_exit(launch, launch.wait(300), ("bag_replay",) + AGENT_PROCESSES)
    found = re.search(r"bag finished: (\d+) observations replayed, (\d+) actions received", text)
    assert found, text
    replayed, actions = int(found.group(1)), int(found.group(2))
    assert replayed == recorded
    assert actions >= 0.9 * replayed, text  # stepped on the agent's actions (it acts on nearly every one)
    assert "resumed from" in text  # the agent evaluated the trained checkpoint, learn:=false
    assert re.search(r"learn=False", text), text


def test_sim_launch_composed_runs_the_four_agent_nodes_in_one_process(tmp_path):
    """composed:=true: sim_bridge and one `agent` process holding the four agent nodes (and policy_value's PPO
    update process beside it); the same run as one process per node, to the same end.
    """
    from bitrl_ros.rl.checkpoint import STATE_FILE

    ckpt = tmp_path / "run" / "checkpoint"
    config = _write_config(tmp_path / "agent.yaml", ckpt, "lockstep")
    launch = Launch(tmp_path, "sim.launch.py", {"config": config, "max_steps": MAX_STEPS, "composed": "true"}, 145)
    text = assert_clean_exit(launch, launch.wait(300), ("sim_bridge", "agent"))
    for name in AGENT_PROCESSES:
        assert not re.search(rf"\[{name}-\d+\]", text), f"{name} ran in a process of its own:\n{text}"
    for name in ("state_serializer", "ternary_encoder", "policy_value"):  # (diagnostics_monitor logs nothing)
        assert re.search(rf"\[agent-\d+\] \[INFO\] \[[\d.]+\] \[{name}\]", text), f"{name}:\n{text}"
    deadline = time.monotonic() + 30
    while _group_alive(launch.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)  # a bound for a hung process, not a timing check
    assert not _group_alive(launch.proc.pid), f"a process outlived the launch (the update process?):\n{text}"
    assert (ckpt / STATE_FILE).is_file()
    summary = json.loads((ckpt.parent / "summary.json").read_text())
    assert summary["global_step"] == MAX_STEPS and summary["updates"] >= 1, summary
    assert summary["updates"] + summary["rollouts_dropped"] >= MAX_STEPS // ROLLOUT - 1, summary


class RobotStandIn(Node):
    """Stands in for the robot driver: a real CartPole publishing `observation` at 40 Hz from a wall-clock timer,
    stepping with the newest `action`; records when each action arrives.
    """

    def __init__(self, **node_kwargs):
        from bitrl_msgs.msg import Action, Observation
        from bitrl_ros.nodes.base import PIPELINE_QOS

        super().__init__("robot_driver", **node_kwargs)
        self.env = gym.make("CartPole-v1")
        self.obs, _ = self.env.reset(seed=0)
        self.episode, self.step, self.action = 0, 0, 0
        self.arrivals: list[float] = []
        self.Observation = Observation
        self.pub = self.create_publisher(Observation, "observation", PIPELINE_QOS)
        self.create_subscription(Action, "action", self._on_action, PIPELINE_QOS)
        self.create_timer(1 / 40, self._tick)

    def _on_action(self, msg) -> None:
        self.arrivals.append(time.monotonic())
        self.action = int(msg.discrete)

    def _tick(self) -> None:
        reward, terminated, truncated = 0.0, False, False
        if self.step > 0 or self.episode > 0:
            self.obs, reward, terminated, truncated, _ = self.env.step(self.action)
        msg = self.Observation(episode=self.episode, step=self.step, values=[float(v) for v in self.obs],
                               reward=float(reward), terminated=bool(terminated), truncated=bool(truncated))
        msg.header.frame_id = "CartPole-v1"
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub.publish(msg)
        self.step += 1
        if terminated or truncated:
            self.episode, self.step = self.episode + 1, 0
            self.obs, _ = self.env.reset(seed=self.episode)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_agent_launch_acts_at_40_hz_for_a_robot_driver_and_shuts_down_cleanly(tmp_path, how):
    """Ctrl-C in a terminal sends SIGINT to the launch and its nodes alike; a service manager stopping the whole
    process group (systemd's default) sends SIGTERM to all of them. Either way every node exits after flushing:
    policy_value writes its checkpoint and summary. (Upstream launch answers SIGTERM by cancelling itself without
    waiting for its processes, so only the nodes' own handling is checked there.)
    """
    ckpt = tmp_path / "run" / "checkpoint"
    config = _write_config(tmp_path / "agent.yaml", ckpt, "realtime")
    domain = 143 if how == "ctrl-c" else 144
    launch = Launch(tmp_path, "agent.launch.py", {"config": config}, domain)
    from bitrl_ros.nodes.base import InProcessGraph

    graph = None
    try:
        launch.wait_for(r"\[policy_value\]: CartPole-v1", 120)
        launch.wait_for(r"\[ternary_encoder\]: backbone .* loaded", 120)
        graph = InProcessGraph(lambda ctx: RobotStandIn(context=ctx), domain_id=domain)
        robot = graph.node
        deadline = time.monotonic() + 120
        while len(robot.arrivals) < 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        arrivals = np.array(robot.arrivals)
    finally:
        if graph is not None:
            graph.close()
        os.killpg(launch.proc.pid, signal.SIGINT if how == "ctrl-c" else signal.SIGTERM)
    rc = launch.wait(60)
    deadline = time.monotonic() + 30
    while _group_alive(launch.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)  # a bound for a hung node, not a timing check
    assert not _group_alive(launch.proc.pid), f"nodes still running after {how}:\n{launch.text()}"
    if how == "ctrl-c":
        text = assert_clean_exit(launch, rc, AGENT_PROCESSES)
        assert "flushed: checkpoint" in text
        assert_managed_nodes_activated(text)
    else:
        text = launch.text()
        assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert len(arrivals) >= 200, text
    period_ms = 1000 * np.median(np.diff(arrivals[-150:]))
    assert 15 <= period_ms <= 40, f"median action period {period_ms:.1f} ms, not the 25 ms of 40 Hz"
    summary = json.loads((ckpt.parent / "summary.json").read_text())  # written at shutdown
    assert summary["global_step"] >= 150 and summary["checkpoint"] == str(ckpt), summary
