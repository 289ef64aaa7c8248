"""The ROS graph under load, side by side in one run:

(i)  realtime: the full graph (`bitrl run --mode realtime`) at 40 Hz for 60 s while training online
     (backbone minilm-ternary-ptq, ppo.num_steps 512, so several PPO updates land during the run): achieved
     action rate, action period deviation p50/p99/max, observation->action latency p50/p99, updates completed;
(ii) lockstep throughput: env steps/s of `bitrl run` (lockstep, sim time) vs `bitrl train` (bitrl_ros.train.Trainer)
     on the same env, backbone and step budget, rollouts of 2048 from one env stream in both, as a ratio of
     medians over alternated repeats (the dev machines are shared; load moves both sides alike).

Writes bench/results/ros_graph.json (with the CPU model and load average) and prints a markdown table.

    .venv/bin/python bench/ros_graph.py [--realtime-s 60] [--lockstep-steps 4096] [--executor events|multi]
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import tempfile
import time

import numpy as np

from bitrl_ros.telemetry.board import cpu_model

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", "76")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = ROOT / "config" / "agent.yaml"
ENV, BACKBONE = "CartPole-v1", "minilm-ternary-ptq"


def realtime(seconds: float, executor: str, tmp: Path) -> dict:
    from bitrl_ros.runner import RunOptions, run

    return run(RunOptions(config=CONFIG, mode="realtime", duration=seconds, progress=False, executor=executor,
                          namespace="bench_rt", overrides={
                              "env": ENV, "backbone": BACKBONE, "policy_value.ppo.num_steps": 512,
                              "policy_value.checkpoint_dir": str(tmp / "rt_ckpt"), "policy_value.resume": False}))


def lockstep_run(steps: int, executor: str, tmp: Path) -> dict:
    from bitrl_ros.runner import RunOptions, run

    return run(RunOptions(config=CONFIG, steps=steps, progress=False, executor=executor, namespace="bench_ls",
                          overrides={"env": ENV, "backbone": BACKBONE, "policy_value.ppo.num_steps": 2048,
                                     "policy_value.checkpoint_dir": str(tmp / "ls_ckpt"),
                                     "policy_value.resume": False}))


def lockstep_train(steps: int, tmp: Path) -> dict:
    from bitrl_ros.config import load_train_config
    from bitrl_ros.train import Trainer

    cfg = load_train_config(None, {"env": ENV, "backbone": BACKBONE, "total_steps": steps, "seed": 0,
                                   "torch_threads": 1, "eval_episodes": 0, "ppo.num_envs": 1,
                                   "ppo.num_steps": 2048})
    result = Trainer(cfg, run_dir=tmp / "train", progress=False, log=lambda *a, **k: None).run()
    return {"steps": result.global_step, "steps_per_s": result.steps_per_s, "wall_s": result.wall_s,
            "episodes": result.episodes, "mean_return": result.mean_return}


def fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--realtime-s", type=float, default=60.0)
    parser.add_argument("--lockstep-steps", type=int, default=4096)
    parser.add_argument("--executor", choices=("events", "multi"), default="events")
    parser.add_argument("--repeats", type=int, default=2,
                        help="lockstep: alternate run/train this many times and report the medians (shared machines)")
    parser.add_argument("--skip-realtime", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results" / "ros_graph.json"))
    args = parser.parse_args()

    import torch

    from bitrl_ros.params import read_ros_params
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    out: dict = {"cpu": cpu_model(), "cores": os.cpu_count(), "env": ENV, "backbone": BACKBONE,
                 "executor": args.executor, "load_avg_before": load_before,
                 "encoder_engine": read_ros_params(CONFIG)["ternary_encoder"].get("engine", "torch")}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        if not args.skip_realtime:
            rt = realtime(args.realtime_s, args.executor, tmp)
            out["realtime"] = {"target_hz": 40.0, "duration_s": args.realtime_s, **rt}
        t0 = time.perf_counter()
        runs, trains = [], []
        for i in range(args.repeats):  # alternated, so that a change in machine load hits both sides alike
            runs.append(lockstep_run(args.lockstep_steps, args.executor, tmp / f"r{i}"))
            trains.append(lockstep_train(args.lockstep_steps, tmp / f"t{i}"))
        run_sps = float(np.median([r["steps_per_s"] for r in runs]))
        train_sps = float(np.median([t["steps_per_s"] for t in trains]))
        out["lockstep"] = {"steps": args.lockstep_steps, "repeats": args.repeats,
                           "bitrl_run": {"steps_per_s_median": run_sps, "runs": runs},
                           "bitrl_train": {"steps_per_s_median": train_sps, "runs": trains},
                           "ratio_run_over_train": run_sps / train_sps, "wall_s": time.perf_counter() - t0}
    out["load_avg_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))

    print(f"\nCPU: {out['cpu']} ({out['cores']} cores), load average before {load_before[0]:.1f}, "
          f"after {out['load_avg_after'][0]:.1f}; executor {args.executor}, encoder engine {out['encoder_engine']}\n")
    if "realtime" in out:
        rt = out["realtime"]
        print(f"| realtime 40 Hz, {args.realtime_s:g} s, training | value |\n|---|---|")
        for k, v in [("achieved action rate", f"{fmt(rt['achieved_rate_hz'])} Hz"),
                     ("env steps", str(rt["steps"])),
                     ("period deviation p50 / p99 / max", f"{fmt(rt['period_dev_ms_p50'])} / "
                      f"{fmt(rt['period_dev_ms_p99'])} / {fmt(rt['period_dev_ms_max'])} ms"),
                     ("observation->action latency p50 / p99", f"{fmt(rt['latency_ms_p50'])} / "
                      f"{fmt(rt['latency_ms_p99'])} ms"),
                     ("PPO updates completed", str(rt["updates"])),
                     ("safe actions / bridge fallbacks", f"{rt['safe_actions']} / {rt['fallbacks']}")]:
            print(f"| {k} | {v} |")
        print()
    lsr = out["lockstep"]
    print(f"| lockstep, {args.lockstep_steps} steps, {ENV}, {BACKBONE} | env steps/s |\n|---|---|")
    print(f"| bitrl run (ROS graph, one process), median of {args.repeats} | "
          f"{lsr['bitrl_run']['steps_per_s_median']:.1f} |")
    print(f"| bitrl train (library loop, 1 env), median of {args.repeats} | "
          f"{lsr['bitrl_train']['steps_per_s_median']:.1f} |")
    print(f"| ratio run / train | {lsr['ratio_run_over_train']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
