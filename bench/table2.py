"""The paper's Table II, first half: every cell from scratch, `bitrl train` as users run it.

    .venv/bin/python bench/table2.py [--envs ...] [--agents ...] [--seeds N] [--jobs 2] [--steps-scale 1.0]

Agents (features as config/train.yaml sets them unless named otherwise):
  mlp              PPO on the raw observation
  fp32             the FP32 teacher (all-MiniLM-L6-v2), the default readout and serialization
  ptq              the teacher ternarized post-training, same features
  distilled        the shipped distilled ternary encoder (readout fields_proj, each field read within the state
                   text: the default agent until features.context=field became the default)
  distilled-fields the same with the untrained per-field readout (fields)
  distilled-paper  the distilled encoder with the paper's recipe: mean pooling, fixed-decimal numbers
  hybrid           the distilled encoder's per-field vectors through the trainable projection (fields_proj, which
                   starts at zero) next to the raw observation
  *-alone          fp32, ptq and distilled with each field encoded on its own (features.context=field; the
                   default agent is distilled-alone)
  distilled-alone-scaled / -digits
                   the default agent with the other number schemes (serializer.numbers)
  distilled-alone-ent0 / mlp-ent0
                   the default agent and mlp without the entropy bonus (ppo.ent_coef 0)
  distilled-alone-lr1e4 / mlp-lr1e4
                   the default agent and mlp with a third of the default policy learning rate (ppo.policy_lr 1e-4)
  distilled-alone-std05 / -std10, fp32-alone-std05 / -std10, mlp-std05 / -std10
                   Box actions starting with less action noise (ppo.init_log_std -0.5 / -1.0; -std10 is the
                   default since; every other agent keeps the std of 1 it ran with, ppo.init_log_std 0)
  distilled-alone-lr1e3-ent0 / mlp-lr1e3-ent0
                   the two CartPole settings that each sped the text agent up, together (policy_lr 1e-3, no
                   entropy bonus)

Budgets: CartPole-v1 150k (5 seeds), Acrobot-v1 and MountainCar-v0 300k, HalfCheetah-v4 300k (3 seeds).
Every finished cell is merged into bench/results/table2.json at once (a killed run keeps what it finished;
rerunning skips finished cells unless --force), then the table (bench/results/table2.md) and the learning-curve
plots (bench/results/table2_<env>.png) are rebuilt from the JSON.

Per cell: final return (mean of the last 20 training episodes), greedy eval (10 episodes), steps to the env's
threshold (first step where the last-20 mean reaches it), env steps/s (two cells run at once, one core each, so
compare steps/s only within this table; bench/readout_throughput.py measures throughput side by side). "steps x
mlp": mean steps to threshold over mlp's, where every seed of both reached it. Per task: mean and spread (std over
seeds) and the ternary / FP32-teacher ratio of the final return on the seeds both ran, measured above the env's
floor (the worst possible return: 0 on CartPole, -500 on Acrobot, -200 on MountainCar; 0 on HalfCheetah, a raw
ratio).
"""
from __future__ import annotations

import argparse
from concurrent.futures import as_completed, ThreadPoolExecutor
import csv
import json
import os
from pathlib import Path
import subprocess
import sys
import time

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "table2.json"
RUNS = ROOT / "build" / "bench_runs" / "table2"

BUDGETS = {"CartPole-v1": 150_000, "Acrobot-v1": 300_000, "MountainCar-v0": 300_000, "HalfCheetah-v4": 300_000}
SEEDS = {"CartPole-v1": 5, "Acrobot-v1": 3, "MountainCar-v0": 3, "HalfCheetah-v4": 3}
SAME_FEATURES_AS_FP32 = ("ptq", "distilled")  # the ternary agents the ratio to the teacher is about
FLOORS = {"CartPole-v1": 0.0, "Acrobot-v1": -500.0, "MountainCar-v0": -200.0, "HalfCheetah-v4": 0.0}
# The paper's recipe: a mean-pooled sentence vector of fixed-decimal text, features normalized per dimension only,
# and its PPO's entropy bonus.
PAPER_ENT = {"ppo.ent_coef": 0.05}
PAPER = {"features.readout": "mean", "serializer.numbers": "fixed", "features.balance": False, **PAPER_ENT}
ALONE = "-alone"  # agents whose fields are encoded on their own
# The agents measured before features.context=field became the default read each field within the state text.
STATE = {"features.context": "state"}
BASE_AGENTS = {
    "mlp": {"backbone": "mlp"},
    "fp32": {"backbone": "minilm-fp32", **STATE},
    "ptq": {"backbone": "minilm-ternary-ptq", **STATE},
    "distilled": {"backbone": "minilm-bitnet-distilled", **STATE},
    "distilled-fields": {"backbone": "minilm-bitnet-distilled", "features.readout": "fields", **STATE},
    "distilled-paper": {"backbone": "minilm-bitnet-distilled", **PAPER},
    "hybrid": {"backbone": "minilm-bitnet-distilled", "features.raw_skip": True, "features.readout": "fields_proj",
               **STATE},
    # each field encoded on its own (features.context=field: cached per field value)
    **{f"{name}{ALONE}": {"backbone": backbone, "features.context": "field"}
       for name, backbone in (("fp32", "minilm-fp32"), ("ptq", "minilm-ternary-ptq"),
                              ("distilled", "minilm-bitnet-distilled"))},
}
# Every agent but the paper's also with the paper's entropy bonus (the default before it was measured): "<agent>-ent05".
ENT05 = "-ent05"
AGENTS = {**BASE_AGENTS, **{f"{name}{ENT05}": {**spec, **PAPER_ENT} for name, spec in BASE_AGENTS.items()
                            if name != "distilled-paper"}}
# Probes of the default agent, one setting changed: the number schemes; no entropy bonus, a lower policy
# learning rate and less starting action noise (for mlp too).
AGENTS.update({
    "distilled-alone-scaled": {**AGENTS["distilled-alone"], "serializer.numbers": "scaled"},
    "distilled-alone-digits": {**AGENTS["distilled-alone"], "serializer.numbers": "digits"},
    "distilled-alone-ent0": {**AGENTS["distilled-alone"], "ppo.ent_coef": 0.0},
    "mlp-ent0": {**AGENTS["mlp"], "ppo.ent_coef": 0.0},
    "distilled-alone-lr1e4": {**AGENTS["distilled-alone"], "ppo.policy_lr": 1e-4},
    "mlp-lr1e4": {**AGENTS["mlp"], "ppo.policy_lr": 1e-4},
    **{f"{name}-std{tag}": {**AGENTS[name], "ppo.init_log_std": log_std}
       for name in ("distilled-alone", "fp32-alone", "mlp") for tag, log_std in (("05", -0.5), ("10", -1.0))},
    **{f"{name}-lr1e3-ent0": {**AGENTS[name], "ppo.policy_lr": 1e-3, "ppo.ent_coef": 0.0}
       for name in ("distilled-alone", "mlp")},
})
# Every agent that does not name ppo.init_log_std ran before its default became -1.0 (bench/README.md, "Starting
# action noise"), so it keeps the std of 1 it ran with and its cells reproduce; a no-op on discrete actions.
EARLIER_NOISE = {"ppo.init_log_std": 0.0}
AGENTS = {name: {**EARLIER_NOISE, **spec} for name, spec in AGENTS.items()}


def _base(agent: str) -> tuple[str, str, str]:
    """(agent without its suffixes, its PPO suffix, its feature suffix): a row compares with mlp of the same PPO
    settings and with fp32 of the same PPO settings and features.
    """
    ppo = ENT05 if agent.endswith(ENT05) else ""
    agent = agent[: len(agent) - len(ppo)]
    features = ALONE if agent.endswith(ALONE) else ""
    return agent[: len(agent) - len(features)], ppo, features


def cell_id(env: str, agent: str, seed: int) -> str:
    return f"{env}/{agent}/s{seed}"


def cell_run_dir(env: str, agent: str, seed: int, runs: Path = RUNS) -> Path:
    """Where run_cell trains a cell."""
    return runs / f"{env}-{agent}-s{seed}"


def run_cell(env: str, agent: str, seed: int, steps: int, overrides: dict | None = None, runs: Path = RUNS) -> dict:
    """One `bitrl train` run as its own process; overrides: the backbone and --set keys (default AGENTS[agent])."""
    run_dir = cell_run_dir(env, agent, seed, runs)
    overrides = dict(AGENTS[agent] if overrides is None else overrides)
    backbone = overrides.pop("backbone")
    cmd = [sys.executable, "-m", "bitrl_ros.cli", "train", "--env", env, "--backbone", backbone, "--steps",
           str(steps), "--seed", str(seed), "--threads", "1", "--run-dir", str(run_dir), "--no-progress"]
    for k, v in overrides.items():
        cmd += ["--set", f"{k}={json.dumps(v)}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return read_cell(env, agent, seed, run_dir, " ".join(cmd[1:]), time.perf_counter() - t0)


def read_cell(env: str, agent: str, seed: int, run_dir: Path, command: str, wall_s: float | None) -> dict:
    """The cell of a finished `bitrl train` run, from its run folder."""
    s = json.loads((run_dir / "summary.json").read_text())
    with open(run_dir / "episodes.csv") as f:
        curve = [(int(r["global_step"]), float(r["return"])) for r in csv.DictReader(f)]
    return {"env": env, "agent": agent, "seed": seed, "steps": s["global_step"], "command": command,
            "final_return": s["mean_return"], "eval_return": s["eval_mean_return"],
            "steps_to_threshold": s["first_solved_step"], "steps_per_s": s["steps_per_s"],
            "cache_hit_rate": s["cache_hit_rate"], "mean_tokens": s["mean_tokens"],
            "success_rate": s.get("success_rate"), "eval_success_rate": s.get("eval_success_rate"),
            "process_wall_s": wall_s, "curve": _thin(curve),
            "dynamics": training_dynamics(run_dir / "metrics.csv", curve)}


def training_dynamics(metrics_csv: Path, curve) -> dict:
    """The paper's Table V columns from a run's per-update metrics and episode returns: entropy over the first
    and last 5 updates, the value loss over the last 5, the variance over all updates of the heads' gradient
    norm (both heads, before clipping), and the first step where the last-20-episode mean return reaches 90% of
    the way from the first 20 episodes' mean to the final one (so that negative-return tasks read the same way).
    """
    with open(metrics_csv) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    col = {k: np.array([float(r[k]) for r in rows]) for k in ("entropy", "value_loss", "grad_norm")}
    out = {"initial_entropy": float(col["entropy"][:5].mean()), "final_entropy": float(col["entropy"][-5:].mean()),
           "final_value_loss": float(col["value_loss"][-5:].mean()), "grad_norm_var": float(col["grad_norm"].var()),
           "steps_to_90pct": None}
    if len(curve) >= 40:
        steps, rets = np.array([c[0] for c in curve]), np.array([c[1] for c in curve])
        smooth = np.convolve(rets, np.ones(20) / 20, mode="valid")
        start, final = smooth[0], smooth[-1]
        if final > start:
            hit = np.nonzero(smooth >= start + 0.9 * (final - start))[0]
            out["steps_to_90pct"] = int(steps[19:][hit[0]])
    return out


def _thin(curve, keep: int = 400):
    """Every k-th (step, return) of a run, smoothed over the last 20 episodes, for the plots."""
    if not curve:
        return []
    steps, rets = np.array([c[0] for c in curve]), np.array([c[1] for c in curve])
    k = min(20, len(rets))
    smooth = np.convolve(rets, np.ones(k) / k, mode="valid")
    steps = steps[k - 1:]
    idx = np.unique(np.linspace(0, len(smooth) - 1, min(keep, len(smooth))).astype(int))
    return [[int(steps[i]), round(float(smooth[i]), 2)] for i in idx]


def load_results(path: Path = RESULTS) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"cells": {}}


def update_results(path: Path, change) -> dict:
    """Apply change(data) to the results JSON and write it back atomically, under a lock (sweeps and table
    rebuilds of one file may run at once); returns the data written.
    """
    import fcntl

    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = load_results(path)
        change(data)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    return data


def save_cell(cell: dict, path: Path = RESULTS) -> None:
    """Merge one finished cell into the results JSON at once, so a killed sweep keeps it."""
    from bitrl_ros.telemetry.board import cpu_model

    def merge(data):
        data.setdefault("cpu", cpu_model())
        cell.setdefault("cpu", cpu_model())  # sweeps of one file may run on several machines
        data["cells"][cell_id(cell["env"], cell["agent"], cell["seed"])] = cell
    update_results(path, merge)


def summarize(data: dict) -> dict:
    table = {}
    for cell in data["cells"].values():
        table.setdefault(cell["env"], {}).setdefault(cell["agent"], []).append(cell)
    out = {}
    for env, agents in table.items():
        rows = {}
        for agent, cells in agents.items():
            cells = sorted(cells, key=lambda c: c["seed"])
            final = np.array([c["final_return"] for c in cells])
            ev = np.array([c["eval_return"] for c in cells])
            solved = [c["steps_to_threshold"] for c in cells]
            rows[agent] = {"seeds": sorted(c["seed"] for c in cells), "steps": cells[0]["steps"],
                           "final_mean": float(final.mean()), "final_std": float(final.std()),
                           "eval_mean": float(ev.mean()), "eval_std": float(ev.std()),
                           "solved": sum(s is not None for s in solved), "steps_to_threshold": solved,
                           "steps_to_threshold_mean": (float(np.mean([s for s in solved if s is not None]))
                                                       if any(s is not None for s in solved) else None),
                           "steps_per_s": float(np.mean([c["steps_per_s"] for c in cells]))}
        floor = FLOORS.get(env, 0.0)
        for agent, row in rows.items():
            base, ppo, features = _base(agent)
            fp32, mlp_row = rows.get("fp32" + features + ppo), rows.get("mlp" + ppo)
            fp32_final = {c["seed"]: c["final_return"] for c in agents.get("fp32" + features + ppo, [])}
            if mlp_row and base != "mlp" and mlp_row["solved"] == len(mlp_row["seeds"]) and \
                    row["solved"] == len(row["seeds"]):
                row["steps_ratio_to_mlp"] = row["steps_to_threshold_mean"] / mlp_row["steps_to_threshold_mean"]
            # On the seeds both agents ran, so that a missing seed cannot tilt the ratio.
            both = [c for c in agents[agent] if c["seed"] in fp32_final]
            if fp32 and base in SAME_FEATURES_AS_FP32 and both:
                ours = np.mean([c["final_return"] for c in both])
                theirs = np.mean([fp32_final[c["seed"]] for c in both])
                if theirs - floor > 0:
                    row["ratio_to_fp32"] = float((ours - floor) / (theirs - floor))
                    row["ratio_seeds"] = sorted(c["seed"] for c in both)
        out[env] = rows
    return out


def markdown(summary: dict, cpu: str) -> str:
    lines = [f"CPU: {cpu}. Final = mean of the last 20 training episodes; mean +- std over seeds.", "",
             "| task | agent | seeds | steps | final return | greedy eval | solved | steps to threshold | "
             "steps x mlp | steps/s | ternary / FP32 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    order = list(AGENTS)
    for env, rows in summary.items():
        for agent in sorted(rows, key=order.index):
            r = rows[agent]
            steps = " / ".join("-" if s is None else f"{s / 1000:.1f}k" for s in r["steps_to_threshold"])
            ratio = (f"{r['ratio_to_fp32']:.2f} (seeds {', '.join(map(str, r['ratio_seeds']))})"
                     if "ratio_to_fp32" in r else "-")
            vs_mlp = f"{r['steps_ratio_to_mlp']:.2f}" if "steps_ratio_to_mlp" in r else "-"
            lines.append(f"| {env} | {agent} | {len(r['seeds'])} | {r['steps'] / 1000:.0f}k | "
                         f"{r['final_mean']:.1f} +- {r['final_std']:.1f} | {r['eval_mean']:.1f} +- {r['eval_std']:.1f} "
                         f"| {r['solved']}/{len(r['seeds'])} | {steps} | {vs_mlp} | {r['steps_per_s']:.0f} | {ratio} |")
    return "\n".join(lines) + "\n"


def plot_curves(data: dict, agents, prefix: str, style=lambda agent: "-") -> None:
    """One figure per env (bench/results/<prefix>_<env>.png): every cell's smoothed curve, one colour per agent."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({c["env"] for c in data["cells"].values()})
    for env in envs:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        shown = [a for a in agents if any(c["env"] == env and c["agent"] == a for c in data["cells"].values())]
        for color, agent in zip([f"C{i}" for i in range(20)], shown):
            cells = sorted((c for c in data["cells"].values() if c["env"] == env and c["agent"] == agent),
                           key=lambda c: c["seed"])
            for i, c in enumerate(cells):
                if c["curve"]:
                    xs, ys = zip(*c["curve"])
                    ax.plot(xs, ys, color=color, alpha=0.7, lw=1, ls=style(agent), label=agent if i == 0 else None)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("return (mean of last 20 episodes)")
        ax.set_title(f"{env}: one line per seed")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(HERE / "results" / f"{prefix}_{env}.png", dpi=100)
        plt.close(fig)


def add_sweep_arguments(parser) -> None:
    """The options every sweep script shares (run_sweep's)."""
    parser.add_argument("--jobs", type=int, default=2, help="cells run at once, one core each")
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help="fan the cells out with Ray (make sweep-setup installs it): alone, a Ray instance on "
                             "this machine (--jobs cells at once); with a cluster's address (ray://host:10001 or "
                             "host:6379), one cell per free CPU of the cluster, whose nodes need this project at "
                             "the same path")
    parser.add_argument("--cells", nargs="+", default=None, metavar="ENV/AGENT/sSEED",
                        help="run exactly these cells, in this order (instead of --envs x --agents x seeds)")
    parser.add_argument("--force", action="store_true", help="rerun cells already in the JSON")
    parser.add_argument("--table-only", action="store_true", help="rebuild table and plots from the JSON")


def parse_cells(cells: list[str]) -> list[tuple[str, str, int]]:
    """["ENV/AGENT/sSEED", ...] -> [(env, agent, seed), ...]"""
    return [(env, agent, int(seed.lstrip("s"))) for env, agent, seed in (c.split("/") for c in cells)]


def cpus_of(data: dict) -> str:
    """The CPU models the cells ran on (a cell without its own record ran on the file's first CPU)."""
    first = data.get("cpu", "?")
    return ", ".join(sorted({c.get("cpu", first) for c in data["cells"].values()} or {first}))


def run_sweep(jobs, steps_of, describe, results: Path = RESULTS, overrides_of=None, runs: Path = RUNS,
              force: bool = False, workers: int = 2, ray_address: str | None = None) -> float | None:
    """Run the (env, agent, seed) jobs not yet in the results JSON (all with force), `workers` at once, merging
    each finished cell at once; steps_of(env) is the budget, overrides_of(env, agent) the cell's backbone and --set
    keys (default AGENTS[agent]), describe(cell) the line printed per finished cell. ray_address: run the cells as
    Ray tasks instead of local threads ("local": a Ray instance on this machine with `workers` CPUs; else the
    address of a running cluster); the driver gathers and merges them the same way. Returns the seconds Ray took
    to start (None without Ray).
    """
    done = load_results(results)["cells"]
    todo = [j for j in jobs if force or cell_id(*j) not in done]
    print(f"{len(todo)} cells to run", flush=True)
    args = [(env, agent, seed, steps_of(env), None if overrides_of is None else overrides_of(env, agent), runs)
            for env, agent, seed in todo]

    def finished(cell):
        save_cell(cell, results)
        print(f"{cell_id(cell['env'], cell['agent'], cell['seed'])}: {describe(cell)}", flush=True)

    if ray_address is None:
        with ThreadPoolExecutor(workers) as pool:
            for future in as_completed([pool.submit(run_cell, *a) for a in args]):
                finished(future.result())
        return None
    from ray_sweep import run_cells_on_ray

    return run_cells_on_ray(args, finished, ray_address, workers)


def rebuild() -> None:
    data = update_results(RESULTS, lambda d: d.update(summary=summarize(d)))
    summary = data["summary"]
    (HERE / "results" / "table2.md").write_text(markdown(summary, cpus_of(data)))
    plot_curves(data, AGENTS, "table2", lambda agent: "--" if agent.endswith(ENT05) else "-")
    print(markdown(summary, cpus_of(data)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(BUDGETS))
    parser.add_argument("--agents", nargs="+", default=list(BASE_AGENTS), choices=list(AGENTS))
    parser.add_argument("--seeds", type=int, default=None, help="seeds per task (default: 5 CartPole, 3 others)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every budget (e.g. 2 for longer)")
    add_sweep_arguments(parser)
    args = parser.parse_args()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        if args.cells:
            jobs = parse_cells(args.cells)
        else:
            jobs = [(env, agent, seed) for env in args.envs for agent in args.agents
                    for seed in range(args.first_seed, args.first_seed + (args.seeds or SEEDS[env]))]
        run_sweep(jobs, lambda env: int(BUDGETS[env] * args.steps_scale),
                  lambda c: f"final {c['final_return']:.1f} eval {c['eval_return']:.1f} solved at "
                            f"{c['steps_to_threshold']} ({c['steps_per_s']:.0f} steps/s)",
                  force=args.force, workers=args.jobs, ray_address=args.ray)
    rebuild()


if __name__ == "__main__":
    main()
