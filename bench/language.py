"""Language-conditioned tasks (issue 12): where a language-model encoder should pay, against the baselines that
tell whether it does. `bitrl train` as users run it, one process per cell.

    .venv/bin/python bench/language.py [--envs ...] [--agents ...] [--seeds 3] [--jobs 2] [--cells ENV/AGENT/sS ...]

Agents:
  mlp        PPO on the raw observation (BabyAI's symbolic 7x7 view, 148 numbers; SmartHome-Light's 11 values) + a
             bag of words of the mission over the training vocabulary (the paper's non-language baseline)
  random     the default encoder's architecture and tokenizer with random ternary weights (minilm-ternary-random):
             what pre-training buys
  fp32       the FP32 teacher (all-MiniLM-L6-v2)
  distilled  the shipped distilled ternary encoder (the default agent)
  *-alone    the same three encoders with each text segment encoded on its own (features.context=field)
The text agents read the family's renderer (serialize/grid_text.py, home_text.py, cooking_text.py) with the default
readout (fields_proj over the family's segments: the mission, then the state in one or more parts) and the token
budgets of ENV_SETTINGS. SmartHome-Light trains on SmartHome-Light-v0 and is evaluated greedily on
SmartHome-Light-Heldout-v0 (wordings and rule sets training never sees); bench/smarthome_splits.py evaluates the
same runs on held-out wordings alone and on held-out rule sets alone.

Per cell: success rate of the last 100 training episodes, greedy success rate over 50 fresh episodes, final
return, env steps/s and the embedding cache's hit rate. Finished cells are merged into
bench/results/language.json at once; the table (bench/results/language.md) and the curves
(bench/results/language_<env>.png) are rebuilt from it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from table2 import add_sweep_arguments, cpus_of, parse_cells, plot_curves, run_sweep, update_results

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "language.json"
RUNS = ROOT / "build" / "bench_runs" / "language"

BUDGETS = {"BabyAI-GoToRedBall-v0": 500_000, "BabyAI-GoToLocal-v0": 500_000, "SmartHome-Light-v0": 300_000,
           "TextWorld-Cooking-L1-v0": 50_000, "TextWorld-Cooking-L2-v0": 100_000}
# Token budgets fitted to each family's texts (BabyAI ~49 tokens; SmartHome-Light 59 on average, up to 91 with a
# held-out instruction); SmartHome-Light is evaluated greedily on its held-out instructions.
ENV_SETTINGS = {
    "BabyAI-GoToRedBall-v0": {"features.max_tokens": 96},
    "BabyAI-GoToLocal-v0": {"features.max_tokens": 96},
    "SmartHome-Light-v0": {"features.max_tokens": 112, "eval_env": "SmartHome-Light-Heldout-v0"},
    # Cooking texts: ~110 tokens (recipe, situation, 10 command slots); evaluated on held-out games (foods of
    # textworld's test split). A per-field entry is 14 x 384 floats (21.5 KB): the default 32 MiB cache holds
    # ~1,500 states and hit 27% (distilled s0); 256 MiB holds ~12,000. The cache returns the same vectors, so
    # only the speed differs.
    **{f"TextWorld-Cooking-L{level}-v0": {"features.max_tokens": 160, "features.cache_mb": 256.0,
                                          "eval_env": f"TextWorld-Cooking-L{level}-Heldout-v0"} for level in (1, 2)},
}
AGENTS = {
    "mlp": {"backbone": "mlp"},
    # Read within the state text (features.context=state), as measured before context=field became the default.
    "random": {"backbone": "minilm-ternary-random", "features.context": "state"},
    "fp32": {"backbone": "minilm-fp32", "features.context": "state"},
    "distilled": {"backbone": "minilm-bitnet-distilled", "features.context": "state"},
    # Each text segment encoded on its own (features.context=field): no attention across segments, and a segment
    # seen before (an instruction, a room's state, a command) is one cache lookup.
    **{f"{name}-alone": {"backbone": backbone, "features.context": "field"}
       for name, backbone in (("random", "minilm-ternary-random"), ("fp32", "minilm-fp32"),
                              ("distilled", "minilm-bitnet-distilled"))},
}


def overrides_of(env: str, agent: str) -> dict:
    settings = {k: v for k, v in ENV_SETTINGS[env].items() if agent != "mlp" or not k.startswith("features.")}
    return {**AGENTS[agent], "eval_episodes": 50, **settings}


def summarize(data: dict) -> dict:
    out: dict = {}
    for cell in data["cells"].values():
        out.setdefault(cell["env"], {}).setdefault(cell["agent"], []).append(cell)
    table = {}
    for env, agents in out.items():
        table[env] = {}
        for agent, cells in agents.items():
            cells = sorted(cells, key=lambda c: c["seed"])

            def stat(key):
                v = np.array([c[key] for c in cells], dtype=float)
                return float(v.mean()), float(v.std())

            table[env][agent] = {
                "seeds": [c["seed"] for c in cells], "steps": cells[0]["steps"],
                "success": stat("success_rate"), "eval_success": stat("eval_success_rate"),
                "final_return": stat("final_return"), "steps_per_s": stat("steps_per_s")[0],
                "cache_hit_rate": (float(np.mean([c["cache_hit_rate"] for c in cells]))
                                   if cells[0]["cache_hit_rate"] is not None else None),
                "mean_tokens": float(np.mean([c["mean_tokens"] for c in cells]))}
    return table


def markdown(table: dict, cpu: str) -> str:
    lines = [f"CPU: {cpu}. Mean +- std over seeds.", "",
             "| task | agent | seeds | steps | success (last 100 ep.) | greedy success (50 ep.) | final return | "
             "steps/s | cache hits | tokens |", "|---|---|---|---|---|---|---|---|---|---|"]
    for env, rows in table.items():
        for agent in sorted(rows, key=list(AGENTS).index):
            r = rows[agent]
            hits = "-" if r["cache_hit_rate"] is None else f"{r['cache_hit_rate']:.0%}"
            lines.append(f"| {env} | {agent} | {len(r['seeds'])} | {r['steps'] / 1000:.0f}k | "
                         f"{r['success'][0]:.2f} +- {r['success'][1]:.2f} | "
                         f"{r['eval_success'][0]:.2f} +- {r['eval_success'][1]:.2f} | "
                         f"{r['final_return'][0]:.3f} +- {r['final_return'][1]:.3f} | {r['steps_per_s']:.0f} | "
                         f"{hits} | {r['mean_tokens']:.0f} |")
    return "\n".join(lines) + "\n"


def rebuild() -> None:
    data = update_results(RESULTS, lambda d: d.update(summary=summarize(d)))
    table = data["summary"]
    text = markdown(table, cpus_of(data))
    (HERE / "results" / "language.md").write_text(text)
    plot_curves(data, AGENTS, "language")
    print(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["BabyAI-GoToRedBall-v0"], choices=list(BUDGETS))
    parser.add_argument("--agents", nargs="+", default=list(AGENTS), choices=list(AGENTS))
    parser.add_argument("--seeds", type=int, default=3)
    add_sweep_arguments(parser)
    args = parser.parse_args()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        jobs = parse_cells(args.cells) if args.cells else [
            (env, agent, seed) for env in args.envs for agent in args.agents for seed in range(args.seeds)]
        run_sweep(jobs, BUDGETS.get, lambda c: f"success {c['success_rate']:.2f}, greedy {c['eval_success_rate']:.2f} "
                  f"({c['steps_per_s']:.0f} steps/s)", RESULTS, overrides_of, RUNS, args.force, args.jobs, args.ray)
    rebuild()


if __name__ == "__main__":
    main()
