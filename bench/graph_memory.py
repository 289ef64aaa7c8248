"""Resident memory of the agent graph: every node process under `ros2 launch bitrl_ros sim.launch.py`, and the
one-process graph of `bitrl run`, CartPole-v1 in lockstep with training on (one PPO update lands in the run).

    .venv/bin/python bench/graph_memory.py [--steps 2600] [--backbone minilm-bitnet-distilled]

Needs the launch stack and the colcon workspace of `make launch-setup` (build/colcon_ws). Each process's VmRSS is
sampled from /proc every 0.2 s; a node's figure is its peak (VmHWM), the graph's the peak of the sum over its
processes (the `ros2 launch` process included) at one sample; each both while the graph runs (all five nodes
alive) and including the shutdown, where policy_value writes its checkpoint and plots its learning curve.
Baselines measured in the same run: the encoder node with `engine: torch` (the torch module built from the file,
torch imported: how every encoder loaded before the torch-free path), and bare processes that import rclpy alone
and rclpy + torch.
The same graph composed (`composed:=true`: sim_bridge and one `agent` process with the four agent nodes) is
measured too. policy_value's PPO update process (rl/update_worker.py, torch) is one of the graph's processes and
is counted in every sum; `bitrl run` is measured with it and with `update_worker: thread`. Sums are given in RSS
and in PSS (smaps_rollup: a page shared by several processes, e.g. the Python and numpy libraries of the nodes,
counted once). PSS divides a shared page among every process that maps it, this graph's or not: run it with
nothing else on the machine (a training run beside it, which maps the same libraries, lowers the graph's PSS).
Targets (issue 14): ternary_encoder <= 120 MB, state_serializer <= 80 MB, whole graph <= 550 MB, `bitrl run` <= 400
MB. Writes bench/results/graph_memory.json.
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
import time

import yaml

from bitrl_ros.telemetry.board import cpu_model

ROOT = Path(__file__).resolve().parents[1]
WS = Path(os.environ.get("BITRL_COLCON_WS", ROOT / "build" / "colcon_ws"))
VENV_BIN = Path(sys.executable).parent
NODES = ("sim_bridge", "state_serializer", "ternary_encoder", "policy_value", "diagnostics_monitor")
TARGETS_MB = {"ternary_encoder": 120, "state_serializer": 80, "graph": 550, "bitrl run": 400}
MB = 2**20


def _status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _session_processes(sid: int) -> dict[int, str]:
    """Every live process of the session sid: pid -> node name (or the command's first words)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != sid:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
        words = [a.decode(errors="replace") for a in argv if a]
        node = next((n for n in NODES + ("agent",) if any(w.endswith(f"/{n}") or w == n for w in words)), None)
        out[int(entry.name)] = node or " ".join(Path(w).name for w in words[:3])
    return out


class Sampler:
    """Peak RSS (VmHWM) per process name and peak of the sum over a session, both over the whole session and while
    the graph runs (every node alive: before the shutdown's flush, where policy_value plots its learning curve).
    """

    def __init__(self, sid: int, nodes: tuple[str, ...] = ()):
        self.sid, self.nodes = sid, nodes
        self.hwm_kb, self.sum_peak_kb, self.running_hwm_kb, self.running_sum_peak_kb = {}, 0, {}, 0
        self.pss_sum_peak_kb = 0  # proportional set size: pages shared between processes counted once in the sum
        self.pss_kb: dict[str, int] = {}  # each process's PSS at the sample where the sum peaked

    def sample(self) -> None:
        total, seen, pss = 0, set(), {}
        for pid, name in _session_processes(self.sid).items():
            rss, hwm = _status_kb(pid, "VmRSS"), _status_kb(pid, "VmHWM")
            if rss is None:
                continue
            total += rss
            pss[name] = pss.get(name, 0) + _pss_kb(pid)
            seen.add(name)
            self.hwm_kb[name] = max(self.hwm_kb.get(name, 0), hwm or 0)
        self.sum_peak_kb = max(self.sum_peak_kb, total)
        pss_total = sum(pss.values())
        if pss_total > self.pss_sum_peak_kb:
            self.pss_sum_peak_kb, self.pss_kb = pss_total, pss
        if self.nodes and seen >= set(self.nodes):
            self.running_hwm_kb, self.running_sum_peak_kb = dict(self.hwm_kb), self.sum_peak_kb

    def watch(self, proc: subprocess.Popen, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                raise RuntimeError(f"{proc.args} did not end within {timeout:.0f} s")
            self.sample()
            time.sleep(0.2)
        return proc.returncode


def _env(tmp: Path, domain: int) -> dict:
    return dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(domain),
                ROS_LOG_DIR=str(tmp / "ros_log"), PYTHONUNBUFFERED="1", AMENT_PREFIX_PATH=str(VENV_BIN.parent),
                PATH=f"{VENV_BIN}:{os.environ['PATH']}")


def _config(tmp: Path, encoder_engine: str) -> Path:
    params = yaml.safe_load((ROOT / "config" / "agent.yaml").read_text())
    params["policy_value"]["ros__parameters"]["checkpoint_dir"] = str(tmp / "checkpoint")
    params["ternary_encoder"]["ros__parameters"]["engine"] = encoder_engine
    path = tmp / "agent.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def measure_launch(steps: int, backbone: str, encoder_engine: str, domain: int, composed: bool = False) -> dict:
    nodes = ("sim_bridge", "agent") if composed else NODES
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cmd = (f"source {WS}/install/setup.bash && exec ros2 launch bitrl_ros sim.launch.py "
               f"config:={_config(tmp, encoder_engine)} backbone:={backbone} max_steps:={steps}"
               + (" composed:=true" if composed else ""))
        log = tmp / "launch.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(["bash", "-c", cmd], cwd=tmp, env=_env(tmp, domain), stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            sampler = Sampler(proc.pid, nodes)
            t0 = time.perf_counter()
            rc = sampler.watch(proc, timeout=900)
        if rc != 0:
            raise RuntimeError(f"ros2 launch exited {rc}:\n{log.read_text()[-3000:]}")

    def mb(kb: dict) -> dict:
        return {n: round(kb.get(n, 0) / 1024, 1) for n in nodes}

    others = {k: round(v / 1024, 1) for k, v in sampler.hwm_kb.items() if k not in nodes and k}
    return {"encoder_engine": encoder_engine, "composed": composed, "wall_s": round(time.perf_counter() - t0, 1),
            "node_peak_mb": mb(sampler.hwm_kb), "node_peak_running_mb": mb(sampler.running_hwm_kb),
            "other_processes_peak_mb": others, "graph_peak_mb": round(sampler.sum_peak_kb / 1024, 1),
            "graph_peak_running_mb": round(sampler.running_sum_peak_kb / 1024, 1),
            "graph_pss_peak_mb": round(sampler.pss_sum_peak_kb / 1024, 1),
            "pss_at_peak_mb": {k or "?": round(v / 1024, 1) for k, v in sampler.pss_kb.items()},
            "nodes_running_sum_mb": round(sum(mb(sampler.running_hwm_kb).values()), 1)}


def measure_run(steps: int, backbone: str, domain: int, update_worker: str = "process") -> dict:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cmd = [str(VENV_BIN / "bitrl"), "run", "--config", str(_config(tmp, "auto")), "--steps", str(steps),
               "--set", f"backbone={backbone}", "--set", f"policy_value.update_worker={update_worker}",
               "--no-progress"]
        proc = subprocess.Popen(cmd, cwd=tmp, env=_env(tmp, domain), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        sampler = Sampler(proc.pid)
        rc = sampler.watch(proc, timeout=900)
        if rc != 0:
            raise RuntimeError(f"bitrl run exited {rc}: {proc.stderr.read().decode()[-3000:]}")
    # The bitrl process, and the session's sum (with policy_value's PPO update process beside it).
    return {"peak_mb": round(max(v for k, v in sampler.hwm_kb.items() if "update_worker" not in k) / 1024, 1),
            "processes_peak_mb": {k: round(v / 1024, 1) for k, v in sampler.hwm_kb.items()},
            "session_sum_peak_mb": round(sampler.sum_peak_kb / 1024, 1),
            "session_pss_peak_mb": round(sampler.pss_sum_peak_kb / 1024, 1)}


def bare_process_mb(imports: str) -> float:
    out = subprocess.run([sys.executable, "-c", f"import resource; {imports}; "
                          "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
                         capture_output=True, text=True, check=True)
    return round(int(out.stdout.split()[-1]) / 1024, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2600, help="env steps per run (2048-step rollouts: one update)")
    ap.add_argument("--backbone", default="minilm-bitnet-distilled")
    args = ap.parse_args()
    if not (WS / "install" / "setup.bash").is_file():
        sys.exit(f"no colcon workspace at {WS}: run `make launch-setup` first")
    domain = 60 + os.getpid() % 30
    result = {"cpu": cpu_model(), "backbone": args.backbone, "steps": args.steps, "targets_mb": TARGETS_MB,
              "bare_rclpy_mb": bare_process_mb("import rclpy"),
              "bare_rclpy_torch_mb": bare_process_mb("import rclpy, torch")}
    print(f"bare processes: rclpy {result['bare_rclpy_mb']} MB, rclpy + torch {result['bare_rclpy_torch_mb']} MB",
          flush=True)
    for engine in ("auto", "torch"):
        r = measure_launch(args.steps, args.backbone, engine, domain)
        result[f"launch_encoder_{engine}"] = r
        print(f"ros2 launch, encoder engine {engine}: running {r['node_peak_running_mb']} (graph "
              f"{r['graph_peak_running_mb']} MB with the launch process); with the shutdown flush "
              f"{r['node_peak_mb']} (graph {r['graph_peak_mb']} MB) ({r['wall_s']} s)", flush=True)
    r = measure_launch(args.steps, args.backbone, "auto", domain, composed=True)
    result["launch_composed"] = r
    print(f"ros2 launch composed:=true: running {r['node_peak_running_mb']} (graph {r['graph_peak_running_mb']} MB "
          f"with the launch process; others {r['other_processes_peak_mb']}); with the shutdown flush "
          f"{r['node_peak_mb']} (graph {r['graph_peak_mb']} MB) ({r['wall_s']} s)", flush=True)
    result["bitrl_run"] = measure_run(args.steps, args.backbone, domain)
    result["bitrl_run_update_thread"] = measure_run(args.steps, args.backbone, domain, "thread")
    for key in ("bitrl_run", "bitrl_run_update_thread"):
        r = result[key]
        print(f"{key}: {r['peak_mb']} MB (the session: RSS {r['session_sum_peak_mb']} MB, PSS "
              f"{r['session_pss_peak_mb']} MB)", flush=True)
    (ROOT / "bench" / "results" / "graph_memory.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
