"""SmartHome-Light: which half of "held-out" an agent fails on, new wordings or new rule combinations (issue 12).

    .venv/bin/python bench/smarthome_splits.py [--agents distilled-alone mlp] [--seeds 3] [--episodes 100]

The held-out split of bench/language.py changes both at once. Here each trained cell of bench/language.py
(SmartHome-Light-v0, 300k steps; trained first where its run folder has no checkpoint, by the same sweep, so
its cell in language.json is the same command) is evaluated greedily, with the seeds of its own evaluation, on
four splits of the env (envs/smarthome.py):

  SmartHome-Light-v0                  training wordings, training rule sets (what it trained on, fresh days)
  SmartHome-Light-HeldoutWording-v0   held-out paraphrases of the training rule sets
  SmartHome-Light-HeldoutRules-v0     the held-out rule sets in training paraphrases
  SmartHome-Light-Heldout-v0          both (language.py's held-out figure)

Results: bench/results/smarthome_splits.json and the table in bench/README.md ("Held-out wordings or rule sets").
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import language
import numpy as np
from table2 import cell_run_dir, cpus_of, run_sweep, update_results

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "smarthome_splits.json"
ENV = "SmartHome-Light-v0"
SPLITS = ("SmartHome-Light-v0", "SmartHome-Light-HeldoutWording-v0", "SmartHome-Light-HeldoutRules-v0",
          "SmartHome-Light-Heldout-v0")


def evaluate_cell(agent: str, seed: int, episodes: int) -> dict:
    from bitrl_ros.telemetry.board import cpu_model
    from bitrl_ros.train import evaluate_run

    run_dir = cell_run_dir(ENV, agent, seed, language.RUNS)
    out = {"agent": agent, "seed": seed, "episodes": episodes, "run_dir": str(run_dir), "cpu": cpu_model()}
    for env_id in SPLITS:
        ev = evaluate_run(run_dir, env_id, episodes)
        out[env_id] = {"success_rate": ev.success_rate, "mean_return": ev.mean_return}
        print(f"  {agent} s{seed} {env_id}: success {ev.success_rate:.2f}, return {ev.mean_return:.2f}", flush=True)
    return out


def split_name(env_id: str) -> str:
    return env_id.removeprefix("SmartHome-Light").removesuffix("-v0").strip("-") or "train"


def markdown(data: dict) -> str:
    by_agent: dict = {}
    for cell in data["cells"].values():
        by_agent.setdefault(cell["agent"], []).append(cell)
    lines = [f"CPU: {cpus_of(data)}. Greedy success rate, {next(iter(data['cells'].values()))['episodes']} days per "
             "split and seed, mean +- std over the seeds.", "",
             "| agent | seeds | " + " | ".join(split_name(s) for s in SPLITS) + " |",
             "|---|---|" + "---|" * len(SPLITS)]
    for agent, cells in sorted(by_agent.items()):
        row = []
        for env_id in SPLITS:
            v = np.array([c[env_id]["success_rate"] for c in cells])
            row.append(f"{v.mean():.2f} +- {v.std():.2f}")
        lines.append(f"| `{agent}` | {len(cells)} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", nargs="+", default=["distilled-alone", "mlp"], choices=list(language.AGENTS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2, help="training cells run at once, one core each")
    args = parser.parse_args()
    cells = [(agent, seed) for agent in args.agents for seed in range(args.seeds)]
    untrained = [(ENV, agent, seed) for agent, seed in cells
                 if not (cell_run_dir(ENV, agent, seed, language.RUNS) / "checkpoint").is_dir()]
    if untrained:
        print(f"training {len(untrained)} cells first (bench/language.py's, {language.BUDGETS[ENV]} steps)")
        run_sweep(untrained, language.BUDGETS.get, lambda c: f"success {c['success_rate']:.2f}, greedy "
                  f"{c['eval_success_rate']:.2f}", language.RESULTS, language.overrides_of, language.RUNS,
                  force=True, workers=args.jobs)
    for agent, seed in cells:
        cell = evaluate_cell(agent, seed, args.episodes)
        update_results(RESULTS, lambda d: d.setdefault("cells", {}).__setitem__(f"{agent}/s{seed}", cell))
    data = json.loads(RESULTS.read_text())
    print(markdown(data))


if __name__ == "__main__":
    main()
