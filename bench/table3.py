"""The paper's Tables II-V, second half: precision variants, the hybrid INT8 critic, QeRL's adaptive quantization
noise, and the ablations, each cell one `bitrl train` run as users run it (bench/table2.py's harness).

    .venv/bin/python bench/table3.py [--envs ...] [--agents ...] [--seeds 3] [--jobs 2] [--cells ENV/AGENT/sS ...]
    .venv/bin/python bench/table3.py --table-only

Every agent uses the readout issue's best features, the defaults of config/train.yaml (fields_proj readout,
fixed numbers, balance, entropy 0.01); only the backbone or the named keys differ:
  ternary    the shipped distilled ternary encoder (the default agent)
  ptq        the teacher ternarized post-training
  fp32       the FP32 teacher (all-MiniLM-L6-v2)
  fp16 / int8 / int4-g32 / nvfp4
             the teacher with its encoder linears in that format (backbone/variants.py; int8 also quantizes the
             linears' inputs per token)
  hybrid-int8 the paper's recommended configuration: the policy reads the distilled ternary encoder, the value
             head the INT8 teacher (critic_backbone=minilm-int8)
  aqn        ternary with QeRL's adaptive quantization noise on the encoder's norm gains (train.aqn defaults)
  nvfp4-acting
             ternary, the policy acting with an NVFP4 copy of its head (ppo.acting_precision=nvfp4)
  <agent>-alone
             each of these with each field encoded on its own (features.context=field, the default since Table
             II's -alone rows); the others read each field within the state text, as they ran.
             ternary-alone, fp32-alone and ptq-alone are Table II's distilled-alone, fp32-alone and ptq-alone
             (the same command): their cells are read from bench/results/table2.json, not run twice.
The paper's Table IV ablations, each against `ternary`:
  no-grad-clip        ppo.max_grad_norm 1000 (the heads' gradient norms stay far below it: never clipped)
  standard-ppo        the textbook PPO coefficients: clip 0.2, entropy 0.01 (ours: clip 0.1)
  value-only-ternary  only the value head's backbone ternary: the policy reads the FP32 teacher

Per cell, besides table2's columns: the training-dynamics columns of the paper's Table V (initial and final
entropy, final value loss, grad-norm variance, steps to 90% of the final return). The bits per weight and storage
of each backbone come from bench/results/precision_variants.json (bench/precision_variants.py). Finished cells
are merged into bench/results/table3.json at once; the table (bench/results/table3.md) is rebuilt from it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from table2 import (add_sweep_arguments, AGENTS as TABLE2_AGENTS, ALONE, BUDGETS, cell_id, cpus_of, EARLIER_NOISE,
                    load_results, parse_cells, run_sweep, update_results)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "table3.json"
RUNS = ROOT / "build" / "bench_runs" / "table3"
PRECISION = HERE / "results" / "precision_variants.json"

# Measured before features.context=field became the default: each field read within the state text.
STATE = {"features.context": "state"}
AGENTS = {
    "ternary": {"backbone": "minilm-bitnet-distilled", **STATE},
    "ptq": {"backbone": "minilm-ternary-ptq", **STATE},
    "fp32": {"backbone": "minilm-fp32", **STATE},
    "fp16": {"backbone": "minilm-fp16", **STATE},
    "int8": {"backbone": "minilm-int8", **STATE},
    "int4-g32": {"backbone": "minilm-int4-g32", **STATE},
    "nvfp4": {"backbone": "minilm-nvfp4", **STATE},
    "hybrid-int8": {"backbone": "minilm-bitnet-distilled", "critic_backbone": "minilm-int8", **STATE},
    "aqn": {"backbone": "minilm-bitnet-distilled", "aqn.enabled": True, **STATE},
    "nvfp4-acting": {"backbone": "minilm-bitnet-distilled", "ppo.acting_precision": "nvfp4", **STATE},
    "no-grad-clip": {"backbone": "minilm-bitnet-distilled", "ppo.max_grad_norm": 1000.0, **STATE},
    "standard-ppo": {"backbone": "minilm-bitnet-distilled", "ppo.clip_coef": 0.2, "ppo.ent_coef": 0.01, **STATE},
    "value-only-ternary": {"backbone": "minilm-fp32", "critic_backbone": "minilm-bitnet-distilled", **STATE},
}
# Every agent again with each field encoded on its own (features.context=field, the default since Table II's
# -alone rows): "<agent>-alone".
AGENTS.update({f"{name}{ALONE}": {**spec, "features.context": "field"} for name, spec in list(AGENTS.items())})
# Run before ppo.init_log_std's default became -1.0: the std of 1 they ran with (table2.EARLIER_NOISE).
AGENTS = {name: {**EARLIER_NOISE, **spec} for name, spec in AGENTS.items()}
PRECISION_AGENTS = ("ternary", "ptq", "fp32", "fp16", "int8", "int4-g32", "nvfp4")
# Agents that are the same `bitrl train` command as a Table II agent: their cells are read from
# bench/results/table2.json (bench/table2.py runs them) instead of running twice.
FROM_TABLE2 = {"ternary-alone": "distilled-alone", "fp32-alone": "fp32-alone", "ptq-alone": "ptq-alone"}
assert all(AGENTS[a] == TABLE2_AGENTS[b] for a, b in FROM_TABLE2.items()), "FROM_TABLE2 maps different commands"
TABLE2_RESULTS = HERE / "results" / "table2.json"


def _fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def summarize(data: dict) -> dict:
    by = {}
    for cell in data["cells"].values():
        by.setdefault(cell["env"], {}).setdefault(cell["agent"], []).append(cell)
    out = {}
    for env, agents in by.items():
        rows = {}
        for agent, cells in agents.items():
            cells = sorted(cells, key=lambda c: c["seed"])
            final = np.array([c["final_return"] for c in cells])
            ev = np.array([c["eval_return"] for c in cells])
            dyn = [c.get("dynamics") or {} for c in cells]

            def mean_of(key):
                vals = [d[key] for d in dyn if d.get(key) is not None]
                return float(np.mean(vals)) if vals else None
            rows[agent] = {"seeds": [c["seed"] for c in cells], "steps": cells[0]["steps"],
                           "final_mean": float(final.mean()), "final_std": float(final.std()),
                           "eval_mean": float(ev.mean()), "eval_std": float(ev.std()),
                           "steps_per_s": float(np.mean([c["steps_per_s"] for c in cells])),
                           **{k: mean_of(k) for k in ("initial_entropy", "final_entropy", "final_value_loss",
                                                      "grad_norm_var", "steps_to_90pct")}}
        out[env] = rows
    return out


def markdown(summary: dict, cpu: str, precision: dict) -> str:
    lines = [f"CPU: {cpu}. Final = mean of the last 20 training episodes; mean +- std over seeds; the dynamics "
             "columns are means over seeds.", "",
             "| task | agent | backbone bits/weight | stored MB | seeds | final return | greedy eval | "
             "entropy first -> last | final value loss | grad-norm var | steps to 90% | steps/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = list(AGENTS)
    for env, rows in summary.items():
        for agent in sorted(rows, key=lambda a: order.index(a) if a in order else len(order)):
            r = rows[agent]
            p = precision.get(AGENTS.get(agent, {}).get("backbone"), {})
            bits = _fmt(p.get("bits_per_linear_weight"), ".2f")
            mb = _fmt(p["total_bytes"] / 2**20 if "total_bytes" in p else None)
            lines.append(
                f"| {env} | {agent} | {bits} | {mb} | {len(r['seeds'])} | {r['final_mean']:.1f} +- "
                f"{r['final_std']:.1f} | {r['eval_mean']:.1f} +- {r['eval_std']:.1f} | "
                f"{_fmt(r['initial_entropy'], '.3f')} -> {_fmt(r['final_entropy'], '.3f')} | "
                f"{_fmt(r['final_value_loss'], '.4f')} | {_fmt(r['grad_norm_var'], '.4f')} | "
                f"{_fmt(r['steps_to_90pct'] and r['steps_to_90pct'] / 1000, '.1f')}k | {r['steps_per_s']:.0f} |")
    return "\n".join(lines) + "\n"


def with_table2_cells(data: dict) -> dict:
    """The results with the FROM_TABLE2 agents' cells taken from Table II's JSON under this table's agent names."""
    cells = dict(data["cells"])
    for cell in load_results(TABLE2_RESULTS)["cells"].values():
        for agent, table2_agent in FROM_TABLE2.items():
            if cell["agent"] == table2_agent:
                cells[cell_id(cell["env"], agent, cell["seed"])] = {**cell, "agent": agent, "from": "table2"}
    return {**data, "cells": cells}


def rebuild() -> None:
    data = update_results(RESULTS, lambda d: d.update(summary=summarize(with_table2_cells(d))))
    precision = json.loads(PRECISION.read_text())["backbones"] if PRECISION.is_file() else {}
    table = markdown(data["summary"], cpus_of(data), precision)
    (HERE / "results" / "table3.md").write_text(table)
    print(table)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", choices=list(BUDGETS),
                        default=["CartPole-v1", "Acrobot-v1", "MountainCar-v0", "HalfCheetah-v4"])
    parser.add_argument("--agents", nargs="+", default=list(PRECISION_AGENTS), choices=list(AGENTS))
    parser.add_argument("--seeds", type=int, default=3)
    add_sweep_arguments(parser)
    args = parser.parse_args()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        jobs = parse_cells(args.cells) if args.cells else [
            (env, agent, seed) for env in args.envs for agent in args.agents for seed in range(args.seeds)]
        shared = [j for j in jobs if j[1] in FROM_TABLE2]
        if shared:
            print(f"{len(shared)} cells are Table II's (run them with bench/table2.py, agent "
                  f"{', '.join(sorted({FROM_TABLE2[a] for _, a, _ in shared}))}); not run here", flush=True)
        jobs = [j for j in jobs if j[1] not in FROM_TABLE2]
        run_sweep(jobs, BUDGETS.get, lambda c: f"final {c['final_return']:.1f} eval {c['eval_return']:.1f} "
                  f"({c['steps_per_s']:.0f} steps/s)", RESULTS, lambda env, agent: AGENTS[agent], RUNS,
                  args.force, args.jobs, args.ray)
    rebuild()


if __name__ == "__main__":
    main()
