"""Kills at any moment: SIGKILL a `bitrl train` run at random points, restart it with the README's command
(`bitrl train --run-dir D --resume`, nothing else), again and again, and check after every kill that

- the checkpoint the restart finds is complete and loads (heads, optimizers, the feature layout), and
- the restart lost at most the rollout in progress: its step count is the last finished update's.

    .venv/bin/python bench/kill_loop.py [--kills 30] [--seed 0] [--json bench/results/kill_loop.json]

Small rollouts (2 envs x 64 steps, mlp) make updates and checkpoint writes frequent. Each life is killed after its
first update, at a random moment within the next 1.5 s (several rollouts, updates and checkpoint writes), so
kills land inside updates and checkpoint writes too, whatever the start-up time of a loaded machine.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import random
import signal
import subprocess
import sys
import tempfile
import time

ROLLOUT = 2 * 64
TOTAL_STEPS = 1_000_000  # never reached: every run ends by a kill


def _command(run_dir: Path, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "bitrl_ros.cli", "train", "--run-dir", str(run_dir), "--no-progress"]
    if resume:
        return cmd + ["--resume"]
    return cmd + ["--backbone", "mlp", "--steps", str(TOTAL_STEPS), "--set", "ppo.num_envs=2",
                  "--set", "ppo.num_steps=64", "--set", "ppo.minibatch_size=64", "--set", "eval_episodes=0"]


def _metric_rows(run_dir: Path) -> int:
    """Lines in the run's metrics.csv (one per PPO update, plus its header)."""
    try:
        return len((run_dir / "metrics.csv").read_text().splitlines())
    except OSError:
        return 0


def _checkpoint_step(run_dir: Path) -> int | None:
    """The global step of the checkpoint a restart would load, verified by loading it; None: no checkpoint."""
    from bitrl_ros.config import load_run_config
    from bitrl_ros.rl.checkpoint import read_checkpoint_state
    from bitrl_ros.train import Trainer

    ckpt = run_dir / "checkpoint"
    if not ckpt.exists() and not (run_dir / ".checkpoint.previous").exists():
        return None
    state = read_checkpoint_state(ckpt)
    trainer = Trainer(load_run_config(run_dir), run_dir=run_dir, resume=True, progress=False, log=lambda *a: None)
    step = trainer.global_step
    trainer.envs.close()
    if step != int(state["extra"]["global_step"]) or step % ROLLOUT:
        raise AssertionError(f"checkpoint step {step} is not a finished update's ({ROLLOUT} per update)")
    return step


def kill_loop(kills: int, seed: int, run_dir: Path, log=print) -> dict:
    rng = random.Random(seed)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    events, last_step = [], None
    for k in range(kills):
        resume = (run_dir / "config.json").is_file() and _checkpoint_step(run_dir) is not None
        rows = _metric_rows(run_dir)
        proc = subprocess.Popen(_command(run_dir, resume), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        # Kill while it trains, not while it starts: after its first update of this life, at a random moment
        # of the next ones (rollouts, updates and checkpoint writes all take part of that time).
        t0 = time.monotonic()
        while _metric_rows(run_dir) <= rows and proc.poll() is None and time.monotonic() - t0 < 120:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))
        after = time.monotonic() - t0
        if proc.poll() is not None:
            err = proc.stderr.read()[-2000:]
            raise AssertionError(f"kill {k}: the run exited by itself ({proc.returncode}): {err}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stderr.close()
        step = _checkpoint_step(run_dir)
        if last_step is not None and (step is None or step < last_step):
            raise AssertionError(f"kill {k}: the checkpoint went back from step {last_step} to {step}")
        events.append({"kill": k, "resumed": resume, "after_s": round(after, 2), "checkpoint_step": step})
        log(f"kill {k + 1}/{kills} after {after:.1f} s ({'resumed run' if resume else 'fresh run'}): "
            f"checkpoint at step {step}")
        last_step = step
    steps = [e["checkpoint_step"] for e in events if e["checkpoint_step"] is not None]
    expected = ("checkpoint", "config.json", "metrics.csv")
    leftovers = sorted(p.name for p in run_dir.iterdir() if p.name not in expected)
    return {"kills": kills, "seed": seed, "rollout_steps": ROLLOUT, "events": events,
            "final_checkpoint_step": steps[-1] if steps else None,
            "restarts_that_resumed": sum(e["resumed"] for e in events), "left_in_run_dir": leftovers}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=str(Path(__file__).resolve().parent / "results" / "kill_loop.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bitrl-kill-") as tmp:
        out = kill_loop(args.kills, args.seed, Path(tmp) / "run")
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"{out['kills']} kills, {out['restarts_that_resumed']} restarts resumed, every checkpoint loaded and "
          f"none went back; final checkpoint at step {out['final_checkpoint_step']}; also in the run folder: "
          f"{out['left_in_run_dir'] or 'nothing'}")


if __name__ == "__main__":
    main()
