"""RL with each text backbone: the distilled default vs PTQ vs the FP32 teacher, `bitrl train` as users run it.

    .venv/bin/python bench/distilled_rl.py --env CartPole-v1 --steps 150000 --seeds 0 1 2
    .venv/bin/python bench/distilled_rl.py --env HalfCheetah-v4 --steps 300000 --seeds 0 1 --set ppo.ent_coef=0.0
    .venv/bin/python bench/distilled_rl.py --env CartPole-v1 --steps 150000 --seeds 0 1 2 --collect-only
    .venv/bin/python bench/distilled_rl.py --env CartPole-v1 --throughput 10240   # steps/s, back to back

Each (backbone, seed) is one `bitrl train` subprocess (1 torch thread, default config/train.yaml, engine auto, so the
ternary backbones run on the native engine) in build/bench_runs/<env>/<backbone>-s<seed>; a run whose summary.json
exists is reused, not rerun (--force reruns). Results for the env are merged into bench/results/distilled_rl.json
and every env in that file is plotted into bench/results/distilled_rl.png. "final return" is the mean return of the
last 20 training episodes; steps/s is the run's own average, so it depends on what else ran beside it (record that
with --note). --throughput N instead trains each backbone for N steps (seed 0), one right after the other under the
same conditions, and stores their steps/s with the ratio to the FP32 teacher under the env's "throughput" key.
"""
from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
import csv
import json
from pathlib import Path
import shutil
import subprocess
import sys
import time

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bitrl_ros.telemetry.board import cpu_model  # noqa: E402

BACKBONES = ("minilm-bitnet-distilled", "minilm-ternary-ptq", "minilm-fp32")
RESULTS = HERE / "results" / "distilled_rl.json"


def run_dir(env: str, backbone: str, seed: int) -> Path:
    short = env.split("-")[0].lower()
    return ROOT / "build" / "bench_runs" / short / f"{backbone}-s{seed}"


def run_one(env: str, backbone: str, seed: int, steps: int, overrides: list[str], force: bool) -> dict | None:
    """Train (unless a finished run exists) and return the run's summary; None when another invocation of this
    script holds the run's claim file (so two invocations can share one job list, one per core).
    """
    d = run_dir(env, backbone, seed)
    if force or not (d / "summary.json").is_file():
        claim = d.with_name(d.name + ".claim")
        claim.parent.mkdir(parents=True, exist_ok=True)
        try:
            claim.touch(exist_ok=False)
        except FileExistsError:
            print(f"skipping {d}: claimed by another run of this script ({claim})", flush=True)
            return None
        try:
            cmd = [sys.executable, "-m", "bitrl_ros.cli", "train", "--env", env, "--backbone", backbone, "--steps",
                   str(steps), "--seed", str(seed), "--threads", "1", "--run-dir", str(d), "--no-progress"]
            cmd += [a for kv in overrides for a in ("--set", kv)]
            print(f"running {' '.join(cmd[2:])}", flush=True)
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        finally:
            claim.unlink(missing_ok=True)
    summary = json.loads((d / "summary.json").read_text())
    if summary["global_step"] < steps:
        raise RuntimeError(f"{d}: has {summary['global_step']} steps, fewer than --steps {steps} (use --force)")
    config = json.loads((d / "config.json").read_text())["train"]
    for kv in overrides:  # a reused run must have been trained with the same overrides
        key, value = kv.split("=", 1)
        node = config
        for part in key.split("."):
            node = node[part]
        if str(node) != str(yaml.safe_load(value)):
            raise RuntimeError(f"{d}: was trained with {key}={node}, not {value} (use --force)")
    # Runs older than the `features.engine` setting ran on the torch engine.
    summary.update(backbone=backbone, seed=seed, engine=config["features"].get("engine", "torch"),
                   run_dir=str(d.relative_to(ROOT)))
    return summary


def aggregate(runs: list[dict], backbones: list[str]) -> dict:
    out = {}
    for b in backbones:
        rs = [r for r in runs if r["backbone"] == b]
        out[b] = {
            "final_return_per_seed": [round(r["mean_return"], 2) for r in rs],
            "final_return_mean": float(np.mean([r["mean_return"] for r in rs])),
            "eval_return_mean": float(np.mean([r["eval_mean_return"] for r in rs])),
            "steps_per_s_per_seed": [round(r["steps_per_s"], 1) for r in rs],
            "steps_per_s_mean": float(np.mean([r["steps_per_s"] for r in rs])),
            "first_solved_steps": [r["first_solved_step"] for r in rs],
            "cache_hit_rate_mean": float(np.mean([r["cache_hit_rate"] or 0.0 for r in rs])),
            "mean_tokens": float(np.mean([r["mean_tokens"] for r in rs])),
        }
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = [e for e, entry in results["envs"].items() if "runs" in entry]
    fig, axes = plt.subplots(1, len(envs), figsize=(6.5 * len(envs), 4.2), squeeze=False)
    for ax, env in zip(axes[0], envs):
        entry = results["envs"][env]
        for color, b in zip(("C0", "C1", "C2", "C3"), entry["backbones"]):
            for i, r in enumerate(x for x in entry["runs"] if x["backbone"] == b):
                with open(ROOT / r["run_dir"] / "episodes.csv") as f:
                    rows = list(csv.DictReader(f))
                steps = np.array([int(x["global_step"]) for x in rows])
                rets = np.array([float(x["return"]) for x in rows])
                k = min(20, len(rets))
                if k:
                    ax.plot(steps[k - 1:], np.convolve(rets, np.ones(k) / k, mode="valid"), color=color, alpha=0.8,
                            lw=1.2, label=b if i == 0 else None)
        ax.set_title(f"{env}: one line per seed")
        ax.set_xlabel("environment steps")
        ax.set_ylabel("return (mean of last 20 episodes)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def throughput(env: str, steps: int, backbones: list[str], overrides: list[str], note: str) -> dict:
    out = {"steps": steps, "note": note, "steps_per_s": {}}
    for b in backbones:
        d = ROOT / "build" / "bench_runs" / "throughput" / env / b
        cmd = [sys.executable, "-m", "bitrl_ros.cli", "train", "--env", env, "--backbone", b, "--steps", str(steps),
               "--seed", "0", "--threads", "1", "--run-dir", str(d), "--no-progress", "--set", "eval_episodes=0"]
        cmd += [a for kv in overrides for a in ("--set", kv)]
        if d.exists():
            shutil.rmtree(d)
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        out["steps_per_s"][b] = json.loads((d / "summary.json").read_text())["steps_per_s"]
        print(f"{b}: {out['steps_per_s'][b]:.1f} steps/s", flush=True)
    base = out["steps_per_s"].get("minilm-fp32")
    if base:
        out["ratio_vs_fp32"] = {b: v / base for b, v in out["steps_per_s"].items()}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", required=True)
    ap.add_argument("--steps", type=int, default=None, help="steps per run (required unless --throughput)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (required unless --throughput)")
    ap.add_argument("--throughput", type=int, default=None, metavar="N",
                    help="only measure steps/s: N steps per backbone, back to back")
    ap.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                    help="config override passed to every `bitrl train` (e.g. ppo.ent_coef=0.0)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (1 torch thread each)")
    ap.add_argument("--force", action="store_true", help="rerun even where a finished run exists")
    ap.add_argument("--collect-only", action="store_true", help="never train; fail if a run is missing")
    ap.add_argument("--note", default="", help="what else shared the machine during the runs (kept in the JSON)")
    args = ap.parse_args(argv)
    if args.throughput:
        results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"envs": {}}
        entry = results["envs"].setdefault(args.env, {})
        entry["throughput"] = throughput(args.env, args.throughput, args.backbones, args.overrides, args.note)
        results["cpu"] = cpu_model()
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
        print(json.dumps(entry["throughput"], indent=1))
        return 0
    if args.steps is None or args.seeds is None:
        ap.error("--steps and --seeds are required (or --throughput N)")

    jobs = [(b, s) for b in args.backbones for s in args.seeds]
    if args.collect_only:
        missing = [str(run_dir(args.env, b, s)) for b, s in jobs if not (run_dir(args.env, b, s) / "summary.json")
                   .is_file()]
        if missing:
            raise SystemExit(f"--collect-only: unfinished runs: {', '.join(missing)}")
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda bs: run_one(args.env, bs[0], bs[1], args.steps, args.overrides, args.force),
                             jobs))
    if any(r is None for r in runs):
        print("some runs are still being trained by another invocation; rerun with --collect-only when they finish")
        return 0
    runs.sort(key=lambda r: (args.backbones.index(r["backbone"]), r["seed"]))
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"envs": {}}
    results["cpu"] = cpu_model()
    previous = results["envs"].get(args.env, {})
    results["envs"][args.env] = {"steps": args.steps, "seeds": sorted(args.seeds), "backbones": args.backbones,
                                 "overrides": args.overrides,
                                 "jobs": args.jobs, "note": args.note,
                                 "runs": runs, "per_backbone": aggregate(runs, args.backbones)}
    if "throughput" in previous:
        results["envs"][args.env]["throughput"] = previous["throughput"]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    plot(results, RESULTS.with_suffix(".png"))
    print(f"{'backbone':26s} {'final return per seed':>28s} {'mean':>8s} {'eval':>8s} {'steps/s':>9s}")
    for b, e in results["envs"][args.env]["per_backbone"].items():
        print(f"{b:26s} {str(e['final_return_per_seed']):>28s} {e['final_return_mean']:8.1f} "
              f"{e['eval_return_mean']:8.1f} {e['steps_per_s_mean']:9.1f}")
    print(f"wrote {RESULTS} and {RESULTS.with_suffix('.png')} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
