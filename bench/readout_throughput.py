"""`bitrl train` CartPole env steps/s per readout on the native engine, side by side (runs interleaved, one at a
time, 1 thread), as a ratio to today's mean pooling measured in the same run.

    .venv/bin/python bench/readout_throughput.py [--steps 20480] [--repeats 3] [--readouts mean fields:state ...]

A readout is READOUT or READOUT:CONTEXT (features.context of the per-field readouts: state or field).

Writes bench/results/readout_throughput.json. The cache is on, as users run it (CartPole states rarely repeat,
so nearly every state runs the backbone: the hit rate is reported).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import subprocess
import sys
import tempfile

import numpy as np

from bitrl_ros.telemetry.board import cpu_model

HERE = Path(__file__).resolve().parent


def one(variant: str, steps: int, seed: int) -> dict:
    readout, _, context = variant.partition(":")
    with tempfile.TemporaryDirectory(prefix="bitrl-readout-") as tmp:
        cmd = [sys.executable, "-m", "bitrl_ros.cli", "train", "--env", "CartPole-v1", "--steps", str(steps),
               "--seed", str(seed), "--threads", "1", "--run-dir", tmp, "--no-progress",
               "--set", f"features.readout={readout}", "--set", "features.engine=native", "--set", "eval_episodes=0"]
        if context:
            cmd += ["--set", f"features.context={context}"]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        s = json.loads((Path(tmp) / "summary.json").read_text())
    return {"readout": variant, "steps_per_s": s["steps_per_s"], "cache_hit_rate": s["cache_hit_rate"],
            "mean_tokens": s["mean_tokens"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20480)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--readouts", nargs="+", default=["mean", "fields:state", "fields_proj:state", "fields_proj:field"])
    ap.add_argument("--out", default=str(HERE / "results" / "readout_throughput.json"))
    args = ap.parse_args()
    runs = []
    for rep in range(args.repeats):
        for readout in args.readouts:
            r = one(readout, args.steps, seed=rep)
            runs.append(r)
            print(json.dumps(r), flush=True)
    per = {k: float(np.median([r["steps_per_s"] for r in runs if r["readout"] == k])) for k in args.readouts}
    base = per[args.readouts[0]]
    out = {"cpu": cpu_model(), "steps": args.steps, "repeats": args.repeats, "engine": "native", "threads": 1,
           "median_steps_per_s": per, "ratio_to_" + args.readouts[0]: {k: v / base for k, v in per.items()},
           "runs": runs}
    Path(args.out).write_text(json.dumps(out, indent=2))
    for k, v in per.items():
        print(f"{k:18s} {v:8.0f} steps/s   {v / base:.3f}x {args.readouts[0]}")


if __name__ == "__main__":
    main()
