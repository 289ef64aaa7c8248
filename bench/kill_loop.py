"""Kills at any moment: SIGKILL a `bitrl train` run at random points, restart it with the README's command
(`bitrl train --run-dir D --resume`, nothing else), again and again, and check after every kill that

- the checkpoint the restart finds is complete and loads (heads, optimizers, the feature layout), and
- the restart lost at most the rollout in progress: its step count is the last finished update's.

    .venv/bin/python bench/kill_loop.py [--kills 30] [--seed 0] [--json bench/results/kill_loop.json]
    .venv/bin/python bench/kill_loop.py --graph [--kills 30]     # the ROS graph (`bitrl run --record`) instead

--graph kills `bitrl run` (all nodes in one process, mlp, 128-step rollouts, recording a bag) the same way and
checks after every kill that policy_value's checkpoint loads and never goes back, and that the bag it was
writing opens (after `bitrl bag reindex` where the kill came mid-write) with the observations in it.

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


def _last_reported_step(run_dir: Path) -> int | None:
    """global_step of the last update the run wrote to metrics.csv (it writes a row after the checkpoint)."""
    try:
        rows = (run_dir / "metrics.csv").read_text().splitlines()[1:]
        return int(rows[-1].split(",")[1]) if rows else None
    except (OSError, IndexError, ValueError):
        return None


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


def _graph_command(run_dir: Path, life: int) -> list[str]:
    return [sys.executable, "-m", "bitrl_ros.cli", "run", "--config", "config/agent.yaml", "--no-progress",
            "--set", "backbone=mlp", "--set", "policy_value.ppo.num_steps=128",
            "--set", f"policy_value.checkpoint_dir={run_dir / 'checkpoint'}", "--record", str(run_dir / f"bag{life}")]


def _mtime(path: Path) -> int | None:
    """st_mtime_ns, or None while the file is absent (e.g. between a checkpoint save's two renames)."""
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _graph_checkpoint(run_dir: Path) -> int | None:
    """Updates in policy_value's checkpoint, verified by loading it for evaluation; None: none yet."""
    from bitrl_ros.bag.policy import EvaluatedPolicy

    ckpt = run_dir / "checkpoint"
    if not ckpt.exists() and not (run_dir / ".checkpoint.previous").exists():
        return None
    return int(EvaluatedPolicy(ckpt).state["num_updates"])


def _bag_messages(bag_dir: Path) -> tuple[int, bool]:
    """(observations in the bag, whether it needed `bitrl bag reindex`) of a bag a kill interrupted."""
    from bitrl_ros.bag.reader import open_bag
    from bitrl_ros.bag.recorder import reindex
    from bitrl_ros.errors import BagError

    try:
        bag = open_bag(bag_dir)
        repaired = False
    except BagError:
        reindex(bag_dir)
        bag, repaired = open_bag(bag_dir), True
    with bag:
        count = sum(1 for topic, _, _ in bag.messages() if topic.rsplit("/", 1)[-1] == "observation")
    return count, repaired


def graph_kill_loop(kills: int, seed: int, run_dir: Path, log=print) -> dict:
    rng = random.Random(seed)
    env = dict(os.environ, PYTHONUNBUFFERED="1", ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    run_dir.mkdir(parents=True, exist_ok=True)
    events, last = [], None
    for k in range(kills):
        before = _graph_checkpoint(run_dir)
        proc = subprocess.Popen(_graph_command(run_dir, k), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
        state = run_dir / "checkpoint" / "state.json"
        mtime = _mtime(state)
        t0 = time.monotonic()
        while proc.poll() is None and time.monotonic() - t0 < 180 and _mtime(state) in (mtime, None):
            time.sleep(0.02)  # until this life has written its first checkpoint
        time.sleep(rng.uniform(0.0, 2.0))
        after = time.monotonic() - t0
        if proc.poll() is not None:
            raise AssertionError(f"kill {k}: bitrl run exited by itself ({proc.returncode}): "
                                 f"{proc.stderr.read()[-2000:]}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stderr.close()
        updates = _graph_checkpoint(run_dir)
        if updates is None or (last is not None and updates < last) or (before is not None and updates < before):
            raise AssertionError(f"kill {k}: the checkpoint went from {last} updates to {updates}")
        observations, repaired = _bag_messages(run_dir / f"bag{k}")
        if observations == 0:
            raise AssertionError(f"kill {k}: the bag holds no observation")
        events.append({"kill": k, "after_s": round(after, 2), "checkpoint_updates": updates,
                       "bag_observations": observations, "bag_reindexed": repaired})
        log(f"kill {k + 1}/{kills} after {after:.1f} s: checkpoint at {updates} updates, bag {observations} "
            f"observations{' (reindexed)' if repaired else ''}")
        last = updates
    return {"target": "graph", "kills": kills, "seed": seed, "events": events,
            "bags_reindexed": sum(e["bag_reindexed"] for e in events),
            "final_checkpoint_updates": last}


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
        reported = _last_reported_step(run_dir)
        if reported is not None and (step is None or step < reported):
            raise AssertionError(f"kill {k}: the run had reported an update at step {reported} (metrics.csv) but "
                                 f"its checkpoint is at {step}: more than the rollout in progress was lost")
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
    ap.add_argument("--graph", action="store_true", help="kill the ROS graph (bitrl run --record) instead")
    ap.add_argument("--json", default=None, help="default: bench/results/kill_loop[_graph].json")
    args = ap.parse_args()
    out_path = Path(args.json or Path(__file__).resolve().parent / "results" /
                    f"kill_loop{'_graph' if args.graph else ''}.json")
    with tempfile.TemporaryDirectory(prefix="bitrl-kill-") as tmp:
        out = (graph_kill_loop if args.graph else kill_loop)(args.kills, args.seed, Path(tmp) / "run")
    out_path.write_text(json.dumps(out, indent=1))
    if args.graph:
        print(f"{out['kills']} kills of bitrl run: every checkpoint loaded and none went back (final: "
              f"{out['final_checkpoint_updates']} updates); every bag opened, {out['bags_reindexed']} after reindex")
        return
    print(f"{out['kills']} kills, {out['restarts_that_resumed']} restarts resumed, every checkpoint loaded and "
          f"none went back; final checkpoint at step {out['final_checkpoint_step']}; also in the run folder: "
          f"{out['left_in_run_dir'] or 'nothing'}")


if __name__ == "__main__":
    main()
