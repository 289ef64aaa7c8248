"""The sweep harness's Ray path (bench/table2.run_sweep with ray_address): two tiny `bitrl train` cells run as
Ray tasks on a local Ray instance and are gathered into the results JSON. Ray is an optional install (`make
sweep-setup`); CI runs this with `make test-sweep`, where a skip is a failure.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_two_cells_run_as_ray_tasks_and_are_gathered(tmp_path, capsys, monkeypatch):
    if os.environ.get("BITRL_REQUIRE_RAY") != "1":
        pytest.importorskip("ray", reason="Ray is not installed (make sweep-setup installs it)")
    monkeypatch.syspath_prepend(str(BENCH))
    from table2 import run_sweep
    results = tmp_path / "cells.json"
    jobs = [("CartPole-v1", "mlp", 0), ("CartPole-v1", "mlp", 1)]
    started = run_sweep(jobs, lambda env: 2048, lambda c: f"final {c['final_return']:.1f}", results,
                        runs=tmp_path / "runs", workers=2, ray_address="local")
    assert started is not None and started > 0
    cells = json.loads(results.read_text())["cells"]
    assert sorted(cells) == ["CartPole-v1/mlp/s0", "CartPole-v1/mlp/s1"]
    for seed, cell in enumerate(sorted(cells.values(), key=lambda c: c["seed"])):
        assert cell["seed"] == seed and cell["steps"] >= 2048 and math.isfinite(cell["final_return"])
        assert f"--seed {seed}" in cell["command"] and (tmp_path / "runs" / f"CartPole-v1-mlp-s{seed}").is_dir()
    printed = capsys.readouterr().out
    assert "2 cells to run" in printed and printed.count("CartPole-v1/mlp/s") == 2
