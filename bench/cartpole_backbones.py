"""CartPole-v1 with each backbone x seeds, `bitrl train` as users run it; two runs at a time (1 torch thread each).

    .venv/bin/python bench/cartpole_backbones.py [--steps 150000] [--seeds 0 1 2] [--backbones ...] [--jobs 2]

Writes bench/results/cartpole_backbones.json (per-run summaries + per-backbone means) and a learning-curve plot.
"""
from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
import csv
import json
from pathlib import Path
import subprocess
import sys
import time

import numpy as np

from bitrl_ros.telemetry.board import cpu_model

HERE = Path(__file__).resolve().parent


def run_one(backbone: str, seed: int, steps: int, root: Path) -> dict:
    run_dir = root / f"{backbone}-s{seed}"
    cmd = [sys.executable, "-m", "bitrl_ros.cli", "train", "--env", "CartPole-v1", "--backbone", backbone,
           "--steps", str(steps), "--seed", str(seed), "--threads", "1", "--run-dir", str(run_dir), "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.update(backbone=backbone, seed=seed, process_wall_s=time.perf_counter() - t0)
    print(json.dumps(summary), flush=True)
    return summary


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=150_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backbones", nargs="+", default=["mlp", "minilm-ternary-ptq", "minilm-fp32"])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results" / "cartpole_backbones.json"))
    args = parser.parse_args()
    root = Path("build/bench_runs/cartpole")
    jobs = [(b, s) for b in args.backbones for s in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda bs: run_one(bs[0], bs[1], args.steps, root), jobs))
    per_backbone = {}
    for b in args.backbones:
        rs = [r for r in runs if r["backbone"] == b]
        solved = [r["first_solved_step"] for r in rs]
        per_backbone[b] = {
            "final_mean_return": float(np.mean([r["mean_return"] for r in rs])),
            "eval_mean_return": float(np.mean([r["eval_mean_return"] for r in rs])),
            "seeds_solved": sum(s is not None for s in solved),
            "first_solved_steps": solved,
            "steps_per_s": float(np.mean([r["steps_per_s"] for r in rs])),
            "cache_hit_rate": (None if rs[0]["cache_hit_rate"] is None
                               else float(np.mean([r["cache_hit_rate"] for r in rs]))),
            "mean_tokens": float(np.mean([r["mean_tokens"] for r in rs])),
        }
    out = {"cpu": cpu_model(), "env": "CartPole-v1", "steps": args.steps, "parallel_jobs": args.jobs,
           "runs": runs, "per_backbone": per_backbone}
    Path(args.out).write_text(json.dumps(out, indent=2))
    plot(runs, args.backbones, Path(args.out).with_suffix(".png"))
    print(json.dumps(per_backbone, indent=2))


def plot(runs, backbones, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for color, b in zip(("C0", "C1", "C2", "C3"), backbones):
        for r in (r for r in runs if r["backbone"] == b):
            with open(Path(r["run_dir"]) / "episodes.csv") as f:
                rows = list(csv.DictReader(f))
            steps = np.array([int(x["global_step"]) for x in rows])
            rets = np.array([float(x["return"]) for x in rows])
            k = min(20, len(rets))
            if k == 0:
                continue
            ax.plot(steps[k - 1:], np.convolve(rets, np.ones(k) / k, mode="valid"), color=color, alpha=0.8,
                    label=b if r["seed"] == min(x["seed"] for x in runs if x["backbone"] == b) else None)
    ax.axhline(475, color="grey", ls="--", lw=1)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return (mean of last 20 episodes)")
    ax.set_title("CartPole-v1, bitrl train, one line per seed")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
