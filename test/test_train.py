"""End-to-end `bitrl train` runs: real gymnasium envs, real backbones, real PPO."""
import csv
import json

import numpy as np
import pytest

from bitrl_ros.cli import main
from bitrl_ros.config import load_train_config
from bitrl_ros.train import evaluate_run, Trainer


def _returns(run_dir):
    with open(run_dir / "episodes.csv") as f:
        return [float(r["return"]) for r in csv.DictReader(f)]


@pytest.mark.slow
def test_cartpole_mlp_learns(tmp_path):
    cfg = load_train_config(overrides={"backbone": "mlp", "total_steps": 40960, "seed": 1, "eval_episodes": 0})
    result = Trainer(cfg, run_dir=tmp_path / "run", progress=False).run()
    rets = _returns(tmp_path / "run")
    early, late = np.mean(rets[:20]), np.mean(rets[-20:])
    assert late > 2 * early and late > 100, (early, late)
    assert result.global_step == 40960
    for name in ("config.json", "metrics.csv", "episodes.csv", "learning_curve.png", "summary.json",
                 "checkpoint/heads.safetensors", "checkpoint/state.json"):
        assert (tmp_path / "run" / name).exists(), name


@pytest.mark.slow
def test_cartpole_ternary_backbone_learns(tmp_path):
    cfg = load_train_config(overrides={"backbone": "minilm-ternary-ptq", "total_steps": 30720, "seed": 0,
                                       "eval_episodes": 0})
    result = Trainer(cfg, run_dir=tmp_path / "run", progress=False).run()
    rets = _returns(tmp_path / "run")
    assert np.mean(rets[-20:]) > 1.5 * np.mean(rets[:20])
    assert result.cache_hit_rate is not None and 0.0 <= result.cache_hit_rate <= 1.0
    assert result.mean_tokens > 4


@pytest.mark.slow
@pytest.mark.parametrize("readout", ["mean", "cls", "last", "fields", "fields_proj"])
def test_cartpole_learns_with_every_readout(tmp_path, readout):
    """The default distilled backbone, text only: a short run whose late episodes beat its early ones."""
    cfg = load_train_config(overrides={"total_steps": 16384, "seed": 0, "eval_episodes": 0,
                                       "features.readout": readout})
    result = Trainer(cfg, run_dir=tmp_path / "run", progress=False).run()
    rets = _returns(tmp_path / "run")
    assert np.mean(rets[-20:]) > 1.5 * np.mean(rets[:20]), (readout, np.mean(rets[:20]), np.mean(rets[-20:]))
    layout = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["extra"]["feature_layout"]
    assert layout["readout"] == readout and result.global_step == 16384


def test_evaluate_run_replays_the_runs_own_evaluation_and_takes_another_split(tmp_path):
    """The default text agent on SmartHome-Light: a finished run's checkpoint, evaluated again from its folder."""
    cfg = load_train_config(overrides={"env": "SmartHome-Light-v0", "total_steps": 2048, "seed": 0,
                                       "eval_episodes": 3, "features.max_tokens": 112, "ppo.num_envs": 2,
                                       "ppo.num_steps": 1024})
    result = Trainer(cfg, run_dir=tmp_path / "run", progress=False).run()
    again = evaluate_run(tmp_path / "run", episodes=3)
    assert len(again.returns) == 3 and again.mean_return == pytest.approx(result.eval_mean_return)
    other = evaluate_run(tmp_path / "run", "SmartHome-Light-HeldoutWording-v0", episodes=3)
    assert len(other.successes) == 3
    with pytest.raises(ValueError, match="does not observe"):
        evaluate_run(tmp_path / "run", "CartPole-v1", episodes=1)


def test_cli_train_writes_run_folder_and_resumes(tmp_path, capsys):
    run = tmp_path / "cli-run"
    rc = main(["train", "--backbone", "mlp", "--steps", "2048", "--seed", "0", "--run-dir", str(run),
               "--no-progress", "--set", "eval_episodes=1"])
    assert rc == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 2048
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    # The checkpoint of the first (only) update, recording where training stood and what it trained on.
    assert state["num_updates"] == 1 and state["extra"]["global_step"] == 2048
    assert state["extra"]["env"] == "CartPole-v1" and state["extra"]["backbone"] == "mlp"
    rc = main(["train", "--backbone", "mlp", "--steps", "4096", "--seed", "0", "--run-dir", str(run),
               "--no-progress", "--resume", "--set", "eval_episodes=0"])
    assert rc == 0
    assert json.loads((run / "summary.json").read_text())["global_step"] == 4096
    with open(run / "metrics.csv") as f:
        assert [int(r["update"]) for r in csv.DictReader(f)] == [1, 2]


def test_resume_restores_the_runs_own_configuration(tmp_path, capsys):
    run = tmp_path / "mlp-run"
    assert main(["train", "--backbone", "mlp", "--steps", "2048", "--seed", "3", "--run-dir", str(run),
                 "--no-progress", "--set", "eval_episodes=0", "--set", "ppo.clip_coef=0.2"]) == 0
    # The restart command a user types after a kill: nothing but the run folder (and a longer budget).
    assert main(["train", "--run-dir", str(run), "--resume", "--steps", "4096", "--no-progress"]) == 0
    resumed = json.loads((run / "config.json").read_text())["train"]
    assert (resumed["backbone"], resumed["seed"], resumed["total_steps"]) == ("mlp", 3, 4096)
    assert resumed["ppo"]["clip_coef"] == 0.2
    assert json.loads((run / "summary.json").read_text())["global_step"] == 4096
    capsys.readouterr()
    # A flag that would change what the run learns is refused, naming the key and both values.
    rc = main(["train", "--run-dir", str(run), "--resume", "--steps", "6144", "--no-progress",
               "--set", "ppo.clip_coef=0.3"])
    err = capsys.readouterr().err
    assert rc == 2 and "ppo.clip_coef = 0.2" in err and "0.3" in err and "Traceback" not in err
    assert main(["train", "--run-dir", str(run), "--resume", "--backbone", "mlp", "--seed", "3", "--steps", "4096",
                 "--no-progress"]) == 0  # flags that agree with the run are fine


def test_cli_reports_config_errors_without_traceback(tmp_path, capsys):
    rc = main(["train", "--backbone", "mlp", "--set", "ppo.gamma=1.5", "--run-dir", str(tmp_path / "x")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "gamma" in err and "1.5" in err and "Traceback" not in err
