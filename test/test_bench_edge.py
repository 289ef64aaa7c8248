"""`bitrl bench edge`: every Table III column present and labelled, on real backbones with tiny settings."""
import json

import numpy as np
import pytest

from bitrl_ros.backbone.engines.native import native_available
from bitrl_ros.bench_edge import COLUMNS, EdgeSettings, parse_variant, run_edge, unavailable_reason
from bitrl_ros.cli import main

TINY = EdgeSettings(env="CartPole-v1", states=8, steps=32, episodes=1, warmup=1,
                    ppo={"num_envs": 2, "num_steps": 16, "minibatch_size": 16, "update_epochs": 1})


def _check_row(row):
    for col in COLUMNS:
        assert col in row, col
    assert row["peak_memory_mb"] > 0
    assert row["latency_p50_ms"] > 0 and row["latency_p99_ms"] >= row["latency_p50_ms"]
    assert row["steps_per_s"] > 0
    label = row["energy_label"]
    assert label == "estimated" or (label.startswith("measured:") and len(label) > len("measured:")), label
    assert np.isfinite(row["energy_j_per_episode"]) and row["energy_j_per_episode"] > 0
    temp = row["temperature_c"]
    assert temp == "unavailable" or isinstance(temp, float)


def test_edge_bench_in_process_two_variants(tmp_path):
    second = "minilm-ternary-ptq:native" if native_available()[0] else "minilm-fp32:torch"
    variants = ["minilm-ternary-ptq:torch", second, "minilm-fp32:native"]
    report = run_edge(variants, TINY, tmp_path, in_process=True, log=lambda *a: None)
    data = json.loads((tmp_path / "edge.json").read_text())
    assert (tmp_path / "edge.png").stat().st_size > 0
    assert [r["variant"] for r in data["variants"]] == variants[:2]
    assert data["skipped"] == [{"variant": "minilm-fp32:native",
                                "reason": "not applicable: the native engine runs ternary models only"}]
    for row in data["variants"]:
        _check_row(row)
    assert data["variants"][1]["engine"] == second.split(":")[1]
    assert "energy_formula" in data and data["cpu"]
    assert report["variants"][0]["train_steps"] == 32


def test_variant_parsing_and_availability():
    assert parse_variant("minilm-ternary-ptq:native") == ("minilm-ternary-ptq", "native")
    assert parse_variant("minilm-fp32") == ("minilm-fp32", "torch")
    with pytest.raises(ValueError):
        parse_variant("minilm-fp32:cuda")
    assert "not applicable" in unavailable_reason("minilm-fp32", "native")
    assert unavailable_reason("minilm-ternary-ptq", "torch") is None


def test_cli_refuses_bad_variant(capsys):
    assert main(["bench", "edge", "--variants", "minilm-fp32:gpu"]) == 2
    assert "engine one of" in capsys.readouterr().err
