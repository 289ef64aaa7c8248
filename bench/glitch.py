"""A glitching sensor against learning: CartPole-v1 with `mlp`, one step in 500 (per env) returning 1e30 in
every observation field and a reward of 1e38 (envs.faults.SensorGlitch), with the glitch guard off (how the
package behaved before it had one) and on (train.guard.policy reject, the default; and clip), against the clean
run of the same seed.

    .venv/bin/python bench/glitch.py [--seeds 0 1 2] [--steps 100000]

Writes bench/results/glitch.json and prints a table. Target: steps to solve with glitches within 1.2x of the clean
run's, with a greedy eval >= 475 (returns that let glitches in can "solve" without learning). Returns and
"solved" come from the rewards the agent accepted (a rejected glitch pays 0; a clipped one pays +-1000).
"""
from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
import tempfile

import numpy as np

from bitrl_ros.config import load_train_config
from bitrl_ros.envs.faults import SensorGlitch
from bitrl_ros.telemetry.board import cpu_model
from bitrl_ros.train import Trainer

HERE = Path(__file__).resolve().parent
VARIANTS = {  # name: (glitch every N steps or None, guard policy)
    "clean": (None, "reject"),
    "glitch, guard off": (500, "off"),
    "glitch, reject": (500, "reject"),
    "glitch, clip": (500, "clip"),
}


def one(variant: str, seed: int, steps: int) -> dict:
    every, policy = VARIANTS[variant]
    cfg = load_train_config(overrides={"backbone": "mlp", "seed": seed, "total_steps": steps,
                                       "guard.policy": policy, "eval_episodes": 10})
    wrapper = functools.partial(SensorGlitch, every=every) if every else None
    with tempfile.TemporaryDirectory(prefix="bitrl-glitch-") as tmp:
        r = Trainer(cfg, run_dir=Path(tmp), progress=False, log=lambda *a: None, env_wrapper=wrapper).run()
    return {"variant": variant, "seed": seed, "steps": r.global_step, "solved_at": r.first_solved_step,
            "final_return": r.mean_return, "eval_return": r.eval_mean_return,
            "glitched_observations": r.glitched_observations, "glitched_rewards": r.glitched_rewards,
            "failed_updates": r.failed_updates}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = ap.parse_args()
    runs = []
    for seed in args.seeds:
        for variant in args.variants:
            runs.append(one(variant, seed, args.steps))
            print(json.dumps(runs[-1]), flush=True)
    clean = {r["seed"]: r["solved_at"] for r in runs if r["variant"] == "clean"}
    for r in runs:
        base = clean.get(r["seed"])
        r["solved_x_clean"] = (r["solved_at"] / base) if (base and r["solved_at"]) else None
    out = {"cpu": cpu_model(), "env": "CartPole-v1", "backbone": "mlp", "glitch": "every 500th step per env: "
           "observation 1e30 in every field, reward 1e38", "steps": args.steps, "runs": runs}
    (HERE / "results" / "glitch.json").write_text(json.dumps(out, indent=1))
    print("| variant | seed | solved at | x clean | final return | greedy eval | glitches obs / reward |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        x = "-" if r["solved_x_clean"] is None else f"{r['solved_x_clean']:.2f}"
        solved = "never" if r["solved_at"] is None else f"{r['solved_at'] / 1000:.1f}k"
        print(f"| {r['variant']} | {r['seed']} | {solved} | {x} | {r['final_return']:.4g} | {r['eval_return']:.1f} | "
              f"{r['glitched_observations']} / {r['glitched_rewards']} |")
    for variant in args.variants[1:]:
        rows = [r for r in runs if r["variant"] == variant]
        xs = [r["solved_x_clean"] for r in rows]
        # Met only where the policy really learned: returns that let glitches in can "solve" without learning.
        ok = all(x is not None and x <= 1.2 and r["eval_return"] >= 475 for x, r in zip(xs, rows))
        print(f"{variant}: solved x clean {[None if x is None else round(x, 2) for x in xs]}; "
              f"target <= 1.2 in every seed: {'met' if ok else 'missed'}; mean "
              f"{np.mean([x for x in xs if x is not None]) if any(x is not None for x in xs) else float('nan'):.2f}")


if __name__ == "__main__":
    main()
