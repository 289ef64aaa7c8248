"""The 40 Hz loop while PPO learns (issue 14 item 2): action period deviation and observation->action latency.

Each scenario runs the realtime graph as its own process group (CartPole-v1, the shipped defaults, rollouts of
2048, so an update lands about every 51 s) for --minutes, with a listener node in this process on the same DDS
domain, the way a robot's driver would consume the actions. The listener records
  - every action's arrival (monotonic) -> period deviation |period - 25 ms| of consecutive arrivals,
  - observation->action latency: the action's arrival (wall clock) minus the stamp its observation was published
    with (the bridge stamps realtime observations with wall time),
  - training_stats messages (PPO updates completed).
The first --warmup-s seconds are left out (start-up, first encoder calls). `bitrl run` scenarios also record the
run's own summary, measured in the bridge over its last 4,096 actions (no hop to the listener). Scenarios:
  run-process   `bitrl run --mode realtime`, PPO updates in a niced child process (the default now)
  run-thread    the same with policy_value.update_worker=thread (updates in a thread of the acting process: before)
  run-nolearn   policy_value.learn=false: the pipeline's own floor, nothing to disturb it
  launch-process `ros2 launch bitrl_ros sim.launch.py mode:=realtime` (one process per node; needs the colcon
                workspace of `make launch-setup`), updates in the child process
  launch-composed the same with composed:=true (sim_bridge + one `agent` process with the four agent nodes)
  run-release, launch-composed-release
                run-process and launch-composed with policy_value.action_release_ms = RELEASE_MS: each action
                published at its observation's stamp + 8 ms (nodes/release.py) instead of as soon as computed
Targets (issue 14): period deviation p99 <= 2 ms and latency p99 <= 10 ms with updates running.

    .venv/bin/python bench/control_loop.py [--minutes 10] [--scenarios run-process run-thread ...]

Writes bench/results/control_loop.json (merged per scenario, with the CPU model and load) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import signal
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
OUT = HERE / "results" / "control_loop.json"
PERIOD_S = 1 / 40
SCENARIOS = ("run-process", "run-thread", "run-nolearn", "launch-process", "launch-composed", "run-release",
             "launch-composed-release")
RELEASE_MS = 8.0  # above the obs->action p99 of run-process and launch-composed (6.7 and 5.4 ms)
TARGET_PERIOD_P99_MS, TARGET_LATENCY_P99_MS = 2.0, 10.0


class Listener(Node):
    def __init__(self, namespace: str, **node_kwargs):
        from bitrl_msgs.msg import Action, Observation, TrainingStats
        from bitrl_ros.nodes.base import PIPELINE_QOS, STATS_QOS

        super().__init__("control_loop_listener", **node_kwargs)
        self.lock = threading.Lock()
        self.arrivals: list[float] = []      # monotonic
        self.latencies_ms: list[float] = []  # per arrival; NaN: its observation was not seen
        self.update_times: list[float] = []  # monotonic arrival of each training_stats
        self.stamps: dict[tuple[int, int], float] = {}
        prefix = f"/{namespace}" if namespace else ""
        self.create_subscription(Observation, f"{prefix}/observation", self._on_obs, PIPELINE_QOS)
        self.create_subscription(Action, f"{prefix}/action", self._on_action, PIPELINE_QOS)
        self.create_subscription(TrainingStats, f"{prefix}/training_stats", self._on_stats, STATS_QOS)

    def _on_obs(self, msg) -> None:
        with self.lock:
            self.stamps[(msg.episode, msg.step)] = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            if len(self.stamps) > 4096:
                self.stamps.pop(next(iter(self.stamps)))

    def _on_action(self, msg) -> None:
        now_wall, now = time.time(), time.monotonic()
        with self.lock:
            self.arrivals.append(now)
            stamp = self.stamps.get((msg.episode, msg.step))
            self.latencies_ms.append(np.nan if stamp is None else 1000 * (now_wall - stamp))

    def _on_stats(self, msg) -> None:
        with self.lock:
            self.update_times.append(time.monotonic())


def _config(tmp: Path, overrides: dict) -> Path:
    params = yaml.safe_load((ROOT / "config" / "agent.yaml").read_text())
    for key, value in overrides.items():
        node, name = key.split(".", 1)
        params[node]["ros__parameters"][name] = value
    path = tmp / "agent.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def command(scenario: str, tmp: Path, seconds: float, namespace: str) -> list[str]:
    overrides = {"policy_value.checkpoint_dir": str(tmp / "checkpoint"), "policy_value.resume": False}
    if scenario == "run-thread":
        overrides["policy_value.update_worker"] = "thread"
    if scenario == "run-nolearn":
        overrides["policy_value.learn"] = False
    if scenario.endswith("-release"):
        overrides["policy_value.action_release_ms"] = RELEASE_MS
    config = _config(tmp, overrides)
    if scenario.startswith("run-"):
        return [str(VENV_BIN / "bitrl"), "run", "--config", str(config), "--mode", "realtime", "--duration",
                str(seconds + 20), "--no-progress", "--namespace", namespace, "--json", str(tmp / "summary.json")]
    if not (WS / "install" / "setup.bash").exists():
        raise SystemExit(f"no colcon workspace at {WS}: run `make launch-setup` first")
    steps = int((seconds + 20) * 40)
    composed = " composed:=true" if scenario.startswith("launch-composed") else ""
    return ["bash", "-c", f"source {WS}/install/setup.bash && exec ros2 launch bitrl_ros sim.launch.py "
            f"config:={config} mode:=realtime max_steps:={steps}{composed}"]


def percentiles(values, qs=(50, 99)) -> list[float | None]:
    arr = np.asarray(values, dtype=np.float64)
    return [float(np.percentile(arr, q)) if arr.size else None for q in qs]


def measure(scenario: str, minutes: float, warmup_s: float, domain: int) -> dict:
    seconds = warmup_s + 60 * minutes
    namespace = "" if scenario.startswith("launch") else "loop"
    with tempfile.TemporaryDirectory(prefix="bitrl_loop_") as d:
        tmp = Path(d)
        env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(domain),
                   ROS_LOG_DIR=str(tmp / "ros_log"), PYTHONUNBUFFERED="1", AMENT_PREFIX_PATH=str(VENV_BIN.parent),
                   PATH=f"{VENV_BIN}:{os.environ['PATH']}")
        cmd = command(scenario, tmp, seconds, namespace)
        graph = InProcessGraph(lambda ctx: Listener(namespace, context=ctx), executor="events", domain_id=domain)
        listener = graph.node
        log_path, summary_path = tmp / "graph.log", tmp / "summary.json"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                deadline = time.monotonic() + 300
                while not listener.arrivals and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.1)
                if not listener.arrivals:
                    raise RuntimeError(f"{scenario}: no action arrived:\n{log_path.read_text()[-3000:]}")
                t0 = time.monotonic()
                while time.monotonic() < t0 + seconds and proc.poll() is None:
                    time.sleep(1.0)
                    print(f"\r{scenario}: {time.monotonic() - t0:5.0f} / {seconds:.0f} s, "
                          f"{len(listener.update_times)} updates", end="", flush=True)
                print()
            finally:
                with listener.lock:
                    arrivals = np.array(listener.arrivals)
                    latencies = np.array(listener.latencies_ms)
                    updates = np.array(listener.update_times)
                graph.close()
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGINT)
                    try:
                        proc.wait(60)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
        # bitrl run's own figures, measured in the bridge (its last 4,096 actions, no DDS hop to this listener).
        bridge = json.loads(summary_path.read_text()) if scenario.startswith("run-") and summary_path.exists() else {}
    # Only what arrived after the warm-up and before the end of the measured window.
    keep = (arrivals >= t0 + warmup_s) & (arrivals <= t0 + seconds)
    window = arrivals[keep]
    deviation = np.abs(np.diff(window) - PERIOD_S) * 1000
    latency_window = latencies[keep]
    latency_window = latency_window[np.isfinite(latency_window)]
    dev50, dev99 = percentiles(deviation)
    lat50, lat99 = percentiles(latency_window)
    in_window = updates[(updates >= t0 + warmup_s) & (updates <= t0 + seconds)]
    return {"scenario": scenario, "command": " ".join(cmd), "minutes": minutes, "warmup_s": warmup_s,
            "actions": int(window.size), "rate_hz": float((window.size - 1) / (window[-1] - window[0])),
            "period_dev_ms_p50": dev50, "period_dev_ms_p99": dev99, "period_dev_ms_max": float(deviation.max()),
            "periods_over_2ms": float(np.mean(deviation > 2.0)),
            "latency_ms_p50": lat50, "latency_ms_p99": lat99, "latency_ms_max": float(latency_window.max()),
            "updates_in_window": int(in_window.size), "load_avg_end": os.getloadavg(),
            "bridge_last_4096": {k: bridge.get(k) for k in ("period_dev_ms_p50", "period_dev_ms_p99",
                                                            "period_dev_ms_max", "latency_ms_p50", "latency_ms_p99",
                                                            "updates")} if bridge else None}


def table(results: dict) -> str:
    lines = ["| scenario | minutes | PPO updates | rate | period deviation p50 / p99 / max | periods > 2 ms | "
             "obs->action p50 / p99 / max |", "|---|---|---|---|---|---|---|"]
    for name in SCENARIOS:
        r = results.get(name)
        if r is None:
            continue
        lines.append(f"| {name} | {r['minutes']:g} | {r['updates_in_window']} | {r['rate_hz']:.2f} Hz | "
                     f"{r['period_dev_ms_p50']:.2f} / {r['period_dev_ms_p99']:.2f} / {r['period_dev_ms_max']:.1f} ms"
                     f" | {100 * r['periods_over_2ms']:.1f}% | {r['latency_ms_p50']:.2f} / {r['latency_ms_p99']:.2f} / "
                     f"{r['latency_ms_max']:.1f} ms |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--warmup-s", type=float, default=30.0)
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    results["cpu"] = cpu_model()
    for i, scenario in enumerate(args.scenarios):
        load = os.getloadavg()
        r = measure(scenario, args.minutes, args.warmup_s, domain=84 + i)
        r["load_avg_start"] = load
        results[scenario] = r
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")  # each scenario as it comes
        print(json.dumps(r))
    print(f"CPU: {results['cpu']}\n\n{table(results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
