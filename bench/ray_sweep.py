"""The sweeps' cells as Ray tasks (`--ray [ADDRESS]` of table2.py, table3.py, language.py), and what Ray costs.

    .venv/bin/python bench/ray_sweep.py [--cells 12] [--steps 4096]    # needs `make sweep-setup`

Ray is an optional install (requirements-sweep.txt, `make sweep-setup`); a robot never needs it. Each cell is one
task that runs table2.run_cell (one `bitrl train` process) on a worker and returns the cell; the driver merges
every cell into the results JSON as it arrives, exactly as the local thread pool does, so the tables and plots
are the same whichever ran them. Locally Ray starts with --jobs CPUs and one cell takes one CPU; on a cluster
(ADDRESS) one cell runs per free CPU, and every node needs this project (and its .venv) at the same path.

Run as a script, it measures the overhead: the same tiny cells (CartPole-v1, the mlp agent, --steps env steps,
one seed each) one after another, two at a time in the local thread pool, and two at a time as Ray tasks
(including Ray's start-up, timed separately). Writes bench/results/ray_sweep.json.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import tempfile
import time

HERE = Path(__file__).resolve().parent


def run_cells_on_ray(args: list[tuple], finished, address: str, workers: int) -> float:
    """Run table2.run_cell(*a) for every a in args as Ray tasks, calling finished(cell) in the driver as each
    arrives; returns the seconds Ray took to start. address: "local" (a Ray instance on this machine with
    `workers` CPUs) or a cluster's address.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
    import ray

    t0 = time.perf_counter()
    if address == "local":
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(HERE)}})
    else:
        ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(HERE)}})
    started = time.perf_counter() - t0
    try:
        @ray.remote(num_cpus=1)
        def cell_task(*a):
            from table2 import run_cell

            return run_cell(*a)

        pending = [cell_task.remote(*a) for a in args]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            finished(ray.get(ready[0]))
    finally:
        ray.shutdown()
    return started


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=12)
    parser.add_argument("--steps", type=int, default=4096)
    parser.add_argument("--jobs", type=int, default=2)
    opts = parser.parse_args()
    from table2 import run_cell, run_sweep
    from bitrl_ros.telemetry.board import cpu_model

    jobs = [("CartPole-v1", "mlp", seed) for seed in range(opts.cells)]
    out = {"cpu": cpu_model(), "cells": opts.cells, "steps": opts.steps, "jobs": opts.jobs}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        for env, agent, seed in jobs:
            run_cell(env, agent, seed, opts.steps, None, tmp / "sequential")
        out["sequential_s"] = time.perf_counter() - t0
        for name, address in (("threads", None), ("ray", "local")):
            results = tmp / f"{name}.json"
            t0 = time.perf_counter()
            started = run_sweep(jobs, lambda env: opts.steps, lambda c: f"final {c['final_return']:.1f}", results,
                                runs=tmp / name, workers=opts.jobs, ray_address=address)
            out[f"{name}_s"] = time.perf_counter() - t0
            if started is not None:
                out[f"{name}_start_s"] = started
            out[f"{name}_gathered"] = len(json.loads(results.read_text())["cells"])
    out["ray_vs_threads"] = out["ray_s"] / out["threads_s"]
    out["ray_vs_sequential"] = out["ray_s"] / out["sequential_s"]
    (HERE / "results" / "ray_sweep.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
