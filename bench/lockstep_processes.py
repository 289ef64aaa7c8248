"""Lockstep over processes (issue 14 item 4): env steps/s of the graph under `ros2 launch` (one process per node,
DDS between them) against `bitrl run` (the same five nodes in one process), side by side in one run.

Both run `config/agent.yaml` in lockstep (CartPole-v1, shipped defaults, learning on, rollouts of 2048) for
--steps env steps. A listener node in this process counts the observations the bridge publishes; the rate is
taken between the --skip-th observation and the last one, so start-up (DDS discovery, model load) is left out and
PPO updates (which run beside acting, in the policy node's update process) are included. Three kinds, alternated
(run, launch, launch-composed, run, ...) so that the machine's load moves them alike; ratios are of the medians:
  run              `bitrl run`: the five nodes in one process
  launch           `ros2 launch bitrl_ros sim.launch.py`: one process per node
  launch-composed  the same with composed:=true: sim_bridge, and the four agent nodes in one `agent` process
Target: launch >= 80% of `bitrl run`.

    .venv/bin/python bench/lockstep_processes.py [--steps 4096] [--repeats 2]

Needs the colcon workspace of `make launch-setup`. Writes bench/results/lockstep_processes.json.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from rclpy.node import Node
import yaml

from bitrl_ros.nodes.base import InProcessGraph
from bitrl_ros.telemetry.board import cpu_model

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV_BIN = Path(sys.executable).parent
WS = ROOT / "build" / "colcon_ws"
TARGET = 0.8
KINDS = ("run", "launch", "launch-composed")


class ObservationCounter(Node):
    def __init__(self, topic: str, **node_kwargs):
        from bitrl_msgs.msg import Observation
        from bitrl_ros.nodes.base import PIPELINE_QOS

        super().__init__("lockstep_counter", **node_kwargs)
        self.lock = threading.Lock()
        self.arrivals: list[float] = []
        self.create_subscription(Observation, topic, self._on_obs, PIPELINE_QOS)

    def _on_obs(self, msg) -> None:
        with self.lock:
            self.arrivals.append(time.monotonic())


def one(kind: str, steps: int, skip: int, domain: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bitrl_lockstep_") as d:
        tmp = Path(d)
        params = yaml.safe_load((ROOT / "config" / "agent.yaml").read_text())
        params["policy_value"]["ros__parameters"]["checkpoint_dir"] = str(tmp / "checkpoint")
        params["policy_value"]["ros__parameters"]["resume"] = False
        config = tmp / "agent.yaml"
        config.write_text(yaml.safe_dump(params))
        env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(domain),
                   ROS_LOG_DIR=str(tmp / "ros_log"), AMENT_PREFIX_PATH=str(VENV_BIN.parent),
                   PATH=f"{VENV_BIN}:{os.environ['PATH']}")
        if kind == "run":
            cmd = [str(VENV_BIN / "bitrl"), "run", "--config", str(config), "--steps", str(steps), "--no-progress"]
        else:
            composed = " composed:=true" if kind == "launch-composed" else ""
            cmd = ["bash", "-c", f"source {WS}/install/setup.bash && exec ros2 launch bitrl_ros sim.launch.py "
                   f"config:={config} max_steps:={steps}{composed}"]
        graph = InProcessGraph(lambda ctx: ObservationCounter("/observation", context=ctx), executor="events",
                               domain_id=domain)
        log = tmp / "log"
        t0 = time.monotonic()
        try:
            with open(log, "w") as out:
                rc = subprocess.run(cmd, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    timeout=1800).returncode
            if rc != 0:
                raise RuntimeError(f"{kind} exited {rc}:\n{log.read_text()[-3000:]}")
        finally:
            with graph.node.lock:
                arrivals = np.array(graph.node.arrivals)
            graph.close()
    if arrivals.size <= skip + 1:
        raise RuntimeError(f"{kind}: the listener saw {arrivals.size} observations")
    window = arrivals[skip:]
    return {"kind": kind, "observations_seen": int(arrivals.size), "wall_s": round(time.monotonic() - t0, 1),
            "steps_per_s": float((window.size - 1) / (window[-1] - window[0]))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4096)
    ap.add_argument("--skip", type=int, default=200, help="observations left out at the start")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "lockstep_processes.json"))
    args = ap.parse_args()
    if not (WS / "install" / "setup.bash").exists():
        raise SystemExit(f"no colcon workspace at {WS}: run `make launch-setup` first")
    load = os.getloadavg()
    runs = []
    for i in range(args.repeats):
        for kind in KINDS:
            runs.append(one(kind, args.steps, args.skip, domain=70 + len(runs)))
            print(json.dumps(runs[-1]), flush=True)
    med = {k: float(np.median([r["steps_per_s"] for r in runs if r["kind"] == k])) for k in KINDS}
    ratio = med["launch"] / med["run"]
    ratio_composed = med["launch-composed"] / med["run"]
    result = {"cpu": cpu_model(), "load_avg_start": load, "load_avg_end": os.getloadavg(), "steps": args.steps,
              "skip": args.skip, "runs": runs, "median_steps_per_s": med, "ratio_launch_over_run": ratio,
              "ratio_composed_over_run": ratio_composed, "target": TARGET, "met": ratio >= TARGET,
              "met_composed": ratio_composed >= TARGET}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"CPU: {result['cpu']}\n\n| lockstep, {args.steps} steps | env steps/s (median of {args.repeats}) |\n"
          f"|---|---|\n| `bitrl run` (one process) | {med['run']:.0f} |\n| `ros2 launch sim.launch.py` (a process "
          f"per node) | {med['launch']:.0f} ({ratio:.2f}x run) |\n| `ros2 launch sim.launch.py composed:=true` "
          f"(bridge + agent process) | {med['launch-composed']:.0f} ({ratio_composed:.2f}x run) |\n\n"
          f"Target: >= {TARGET}x `bitrl run`.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
