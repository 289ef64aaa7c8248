"""Soak: the realtime graph with learning, for an hour, as a robot runs it.

`bitrl run --mode realtime` (CartPole-v1, shipped default backbone and readout, PPO learning online, rollouts of
2048) runs as its own process for --minutes. This script listens beside it, as another process on the same DDS
domain, and records every minute:
  - RSS of the `bitrl run` process (VmRSS from /proc),
  - the achieved action rate (actions received in the minute / 60 s) and the action period deviation p50/p99
    (|period - 25 ms| of consecutive action arrivals, so DDS delivery to a second process is included),
  - the graph's own figures from /diagnostics (diagnostics_monitor, 5 s windows): lowest rate and highest
    period deviation p99 in the minute,
  - PPO updates so far (training_stats messages).
Targets (issue 16): RSS growth <= 5% after the first 5 minutes, rate >= 39.9 Hz every minute.

Writes bench/results/soak.json and soak.png; prints a markdown table.

    .venv/bin/python bench/soak.py [--minutes 60]
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

from bitrl_ros.nodes.base import InProcessGraph
from bitrl_ros.telemetry.board import cpu_model

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NAMESPACE = "soak"
PERIOD_S = 1 / 40
RSS_GROWTH_MAX = 0.05
RATE_MIN_HZ = 39.9
WARMUP_MIN = 5
LOAD_AVG_START = os.getloadavg()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Listener(Node):
    """Action arrivals, /diagnostics control-loop figures and training_stats counts, from a node of our own."""

    def __init__(self, **node_kwargs):
        from diagnostic_msgs.msg import DiagnosticArray

        from bitrl_msgs.msg import Action, TrainingStats
        from bitrl_ros.nodes.base import DIAGNOSTICS_QOS, PIPELINE_QOS, STATS_QOS

        super().__init__("soak_listener", **node_kwargs)
        self.lock = threading.Lock()
        self.arrivals: list[float] = []
        self.diag: list[tuple[float, float]] = []  # (rate Hz, period deviation p99 ms) per /diagnostics message
        self.updates = 0
        self.create_subscription(Action, f"/{NAMESPACE}/action", self._on_action, PIPELINE_QOS)
        self.create_subscription(TrainingStats, f"/{NAMESPACE}/training_stats", self._on_stats, STATS_QOS)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, DIAGNOSTICS_QOS)

    def _on_action(self, msg) -> None:
        with self.lock:
            self.arrivals.append(time.monotonic())

    def _on_stats(self, msg) -> None:
        with self.lock:
            self.updates += 1

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.name.endswith("control loop"):
                values = {kv.key: kv.value for kv in status.values}
                try:
                    rate, p99 = float(values["rate [Hz]"]), float(values["period deviation p99 [ms]"])
                except (KeyError, ValueError):
                    continue
                with self.lock:
                    self.diag.append((rate, p99))

    def take(self) -> tuple[list[float], list[tuple[float, float]], int]:
        with self.lock:
            arrivals, diag, self.arrivals, self.diag = self.arrivals, self.diag, [], []
            return arrivals, diag, self.updates


def minute_row(minute: int, rss: float, arrivals: list[float], last: float | None, diag, updates: int) -> dict:
    times = np.array(([last] if last is not None else []) + arrivals)
    dev = np.abs(np.diff(times) - PERIOD_S) * 1e3 if times.size > 1 else np.array([np.nan])
    diag_rates = [r for r, _ in diag if np.isfinite(r)]
    diag_p99 = [p for _, p in diag if np.isfinite(p)]
    return {"minute": minute, "rss_mb": round(rss, 1), "rate_hz": len(arrivals) / 60.0,
            "period_dev_p50_ms": float(np.nanpercentile(dev, 50)),
            "period_dev_p99_ms": float(np.nanpercentile(dev, 99)),
            "graph_rate_min_hz": min(diag_rates) if diag_rates else None,
            "graph_period_dev_p99_max_ms": max(diag_p99) if diag_p99 else None, "updates": updates}


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = [r["minute"] for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    axes[0].plot(m, [r["rss_mb"] for r in rows], "o-", ms=3)
    base = next((r["rss_mb"] for r in rows if r["minute"] == WARMUP_MIN), None)
    if base is not None:
        axes[0].axhline(base * (1 + RSS_GROWTH_MAX), color="grey", ls="--", lw=1,
                        label=f"+{RSS_GROWTH_MAX:.0%} of minute {WARMUP_MIN}")
        axes[0].legend(loc="lower right")
    axes[0].set_ylabel("RSS [MB]")
    axes[1].plot(m, [r["rate_hz"] for r in rows], "o-", ms=3, label="actions received / 60 s")
    axes[1].axhline(RATE_MIN_HZ, color="grey", ls="--", lw=1, label=f"{RATE_MIN_HZ} Hz")
    axes[1].set_ylabel("rate [Hz]")
    axes[1].legend(loc="lower right")
    axes[2].plot(m, [r["period_dev_p99_ms"] for r in rows], "o-", ms=3, label="p99, arrivals in this listener")
    axes[2].plot(m, [r["graph_period_dev_p99_max_ms"] for r in rows], "x-", ms=3,
                 label="worst 5 s p99 the graph reported")
    axes[2].set_ylabel("period deviation [ms]")
    axes[2].set_xlabel("minute")
    axes[2].legend(loc="upper right")
    axes[0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=int, default=60)
    ap.add_argument("--out", default=str(HERE / "results" / "soak.json"))
    args = ap.parse_args()
    domain_id = 88
    tmp = Path(tempfile.mkdtemp(prefix="bitrl_soak_"))
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(domain_id),
               ROS_LOG_DIR=str(tmp / "ros_log"), HF_HUB_OFFLINE="1")
    cmd = [str(Path(sys.executable).parent / "bitrl"), "run", "--config", str(ROOT / "config" / "agent.yaml"),
           "--mode", "realtime", "--duration", str(args.minutes * 60 + 30), "--no-progress", "--namespace", NAMESPACE,
           "--json", str(tmp / "summary.json"), "--set", f"policy_value.checkpoint_dir={tmp / 'checkpoint'}",
           "--set", "policy_value.resume=false"]
    log = open(tmp / "bitrl_run.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    graph = InProcessGraph(lambda ctx: Listener(context=ctx), domain_id=domain_id)
    listener = graph.node
    rows: list[dict] = []
    try:
        while not listener.arrivals and proc.poll() is None:
            time.sleep(0.1)  # the clock starts with the first action
        if proc.poll() is not None:
            raise SystemExit(f"bitrl run ended before acting:\n{(tmp / 'bitrl_run.log').read_text()}")
        t0, last = time.monotonic(), None
        for minute in range(1, args.minutes + 1):
            time.sleep(max(0.0, t0 + 60 * minute - time.monotonic()))
            arrivals, diag, updates = listener.take()
            rows.append(minute_row(minute, rss_mb(proc.pid), arrivals, last, diag, updates))
            last = arrivals[-1] if arrivals else last
            r = rows[-1]
            print(f"minute {minute:3d}: RSS {r['rss_mb']:.0f} MB, {r['rate_hz']:.2f} Hz, period deviation p99 "
                  f"{r['period_dev_p99_ms']:.2f} ms, {updates} updates", flush=True)
    finally:
        graph.close()
        proc.terminate()
        proc.wait(60)
        log.close()
    warmup = min(WARMUP_MIN, len(rows))  # a short trial run has no 5th minute
    base = next(r["rss_mb"] for r in rows if r["minute"] == warmup)
    after = [r for r in rows if r["minute"] >= warmup]
    growth = max(r["rss_mb"] for r in after) / base - 1
    min_rate = min(r["rate_hz"] for r in rows)
    result = {
        "cpu": cpu_model(), "load_avg_start": LOAD_AVG_START, "minutes": args.minutes, "command": " ".join(cmd[1:]),
        "env": "CartPole-v1", "rows": rows,
        "rss_at_warmup_mb": base, "rss_max_after_warmup_mb": max(r["rss_mb"] for r in after),
        "rss_growth_after_warmup": growth, "rss_growth_target": RSS_GROWTH_MAX, "rss_met": growth <= RSS_GROWTH_MAX,
        "rate_min_hz": min_rate, "rate_target_hz": RATE_MIN_HZ, "rate_met": min_rate >= RATE_MIN_HZ,
        "period_dev_p99_ms_max": max(r["period_dev_p99_ms"] for r in rows),
        "updates": rows[-1]["updates"], "log_tail": (tmp / "bitrl_run.log").read_text()[-3000:],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, out.with_suffix(".png"), f"soak: bitrl run --mode realtime, {args.minutes} min ({result['cpu']})")
    print(f"\n| minutes | RSS at min {WARMUP_MIN} | max RSS after | growth (target <= 5%) | lowest minute rate "
          "(target >= 39.9 Hz) | worst minute period deviation p99 | PPO updates |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.minutes} | {base:.0f} MB | {result['rss_max_after_warmup_mb']:.0f} MB | {growth:+.1%} "
          f"({'met' if result['rss_met'] else 'MISSED'}) | {min_rate:.2f} Hz "
          f"({'met' if result['rate_met'] else 'MISSED'}) | {result['period_dev_p99_ms_max']:.2f} ms | "
          f"{result['updates']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
