"""Raw-MLP PPO of bitrl (`--backbone mlp`) vs Stable-Baselines3 PPO with identical hyperparameters, same run.

Both: CartPole-v1, 8 Sync/Dummy vector envs x 256 steps = 2048-step rollouts, 4 epochs, minibatch 64, clip 0.1,
entropy 0.05, max grad-norm 0.5, gamma 0.99, GAE 0.95, separate 256-128 Tanh MLPs for policy and value,
torch on 1 thread. Differences SB3 cannot express: it has one Adam for both heads (lr 3e-4 here, bitrl uses 3e-4
policy / 1e-3 value) and it clips the joint grad norm. Observation/reward normalization off in both.

    .venv/bin/python bench/ppo_vs_sb3.py [--steps 150000] [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import time

import numpy as np
import torch

from bitrl_ros.telemetry.board import cpu_model

HERE = Path(__file__).resolve().parent


def run_sb3(steps: int, seed: int) -> dict:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed, vec_env_cls=DummyVecEnv)
    model = PPO(
        "MlpPolicy", env, n_steps=256, batch_size=64, n_epochs=4, learning_rate=3e-4, gamma=0.99,
        gae_lambda=0.95, clip_range=0.1, ent_coef=0.05, vf_coef=0.5, max_grad_norm=0.5, seed=seed, device="cpu",
        policy_kwargs={"net_arch": {"pi": [256, 128], "vf": [256, 128]}, "activation_fn": torch.nn.Tanh},
        verbose=0,
    )
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps)
    wall = time.perf_counter() - t0
    rets = [ep["r"] for ep in model.ep_info_buffer]
    return {"impl": "sb3", "seed": seed, "steps": model.num_timesteps, "wall_s": wall,
            "steps_per_s": model.num_timesteps / wall, "mean_return_last": float(np.mean(rets[-20:]))}


def run_bitrl(steps: int, seed: int, out_dir: Path) -> dict:
    from bitrl_ros.config import load_train_config
    from bitrl_ros.train import Trainer

    cfg = load_train_config(overrides={
        "env": "CartPole-v1", "backbone": "mlp", "total_steps": steps, "seed": seed, "eval_episodes": 0,
        "normalize.features": False, "normalize.reward": False,
        "ppo.ent_coef": 0.05,  # the value SB3 is given above (the measured results use it; the default is 0.01)
    })
    result = Trainer(cfg, run_dir=out_dir / f"bitrl-mlp-s{seed}", progress=False).run()
    return {"impl": "bitrl-mlp", "seed": seed, "steps": result.global_step, "wall_s": result.wall_s,
            "steps_per_s": result.steps_per_s, "mean_return_last": result.mean_return}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=150_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=str(HERE / "results" / "ppo_vs_sb3.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    scratch = Path("build/bench_runs")
    rows = []
    for seed in args.seeds:
        for fn in (run_sb3, lambda s, sd: run_bitrl(s, sd, scratch)):
            row = fn(args.steps, seed)
            print(json.dumps(row))
            rows.append(row)
    ours = np.mean([r["steps_per_s"] for r in rows if r["impl"] == "bitrl-mlp"])
    sb3 = np.mean([r["steps_per_s"] for r in rows if r["impl"] == "sb3"])
    out = {"cpu": cpu_model(), "torch_threads": 1, "steps": args.steps, "runs": rows,
           "bitrl_mlp_steps_per_s": ours, "sb3_steps_per_s": sb3, "ratio_bitrl_over_sb3": ours / sb3}
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"bitrl mlp {ours:.0f} steps/s, SB3 {sb3:.0f} steps/s, ratio {ours / sb3:.2f}x -> {args.out}")


if __name__ == "__main__":
    main()
