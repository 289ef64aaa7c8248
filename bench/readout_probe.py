"""How easily a small MLP reads a policy from each feature variant (behaviour cloning), CartPole-v1.

    .venv/bin/python bench/readout_probe.py [--backbone minilm-bitnet-distilled] [--teacher-steps 40960]

A raw-observation PPO agent is trained first (`bitrl train --backbone mlp`, seed 0, in a temp dir); 4,000 states
come from its greedy policy with 30% random actions; an MLP 256-128 (the heads' shape, Adam 3e-4, minibatch 64)
is fitted to its greedy actions from 2,000 states and tested on the other 2,000, after 1, 3, 10 and 30 epochs.
Feature variants: the raw observation, mean pooling, the per-field readout of each layer (0 = embeddings) and of
the mean of layers 1-6, and per-field PCA. Features are standardized and balanced as the heads see them.
Writes bench/results/readout_probe.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import subprocess
import sys
import tempfile

import numpy as np
import torch

from bitrl_ros.backbone import load_backbone
from bitrl_ros.backbone.registry import field_means
from bitrl_ros.envs import get_spec, make_env
from bitrl_ros.features import TextStage
from bitrl_ros.rl.heads import mlp
from bitrl_ros.rl.learner import OnlineLearner
from bitrl_ros.rl.ppo import PPOConfig
from bitrl_ros.serialize import get_serializer
from bitrl_ros.telemetry.board import cpu_model

HERE = Path(__file__).resolve().parent
ENV = "CartPole-v1"
EPOCHS = (1, 3, 10, 30)


def teacher_states(steps: int, n: int = 4000):
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "bitrl_ros.cli", "train", "--env", ENV, "--backbone", "mlp", "--steps",
                        str(steps), "--seed", "0", "--run-dir", tmp, "--no-progress"], check=True,
                       capture_output=True)
        env = make_env(ENV, 0)
        learner = OnlineLearner(4, env.action_space, PPOConfig())
        learner.load(Path(tmp) / "checkpoint")
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    states, actions = [], []
    while len(states) < n:
        a = int(learner.act(learner.normalize(obs[None], update=False), deterministic=True, learn=False)[0][0])
        states.append(obs)
        actions.append(a)
        obs, _, term, trunc, _ = env.step(a if rng.random() > 0.3 else int(rng.integers(2)))
        if term or trunc:
            obs, _ = env.reset()
    return np.array(states), np.array(actions)


def layer_states(bb, states):
    """Per state: token ids' field alignment and every layer's token states [L+1, T, H]."""
    stage = TextStage(get_spec(ENV), get_serializer(ENV), bb.tokenizer, 64)
    _, _, ids, fields = stage(states)
    out = []
    for i in range(0, len(ids), 256):
        seqs = ids[i:i + 256]
        t = torch.zeros(len(seqs), max(map(len, seqs)), dtype=torch.long)
        m = torch.zeros_like(t)
        for j, s in enumerate(seqs):
            t[j, : len(s)], m[j, : len(s)] = torch.tensor(s), 1
        with torch.inference_mode():
            _, hs = bb.model(t, attention_mask=m, output_hidden_states=True)
        hs = torch.stack(hs, 0).numpy()
        out += [(hs[:, j, : len(s)], np.asarray(fields[i + j])) for j, s in enumerate(seqs)]
    return out


def probe(x, y):
    x = ((x - x.mean(0)) / (x.std(0) + 1e-6) * np.sqrt(4 / x.shape[1])).astype(np.float32)
    n = len(x) // 2
    torch.manual_seed(0)
    net = mlp(x.shape[1], 2, (256, 128), out_gain=0.01)
    opt = torch.optim.Adam(net.parameters(), lr=3e-4)
    xt, yt = torch.tensor(x[:n]), torch.tensor(y[:n])
    acc, done = {}, 0
    for target in EPOCHS:
        for _ in range(target - done):
            for idx in torch.randperm(n).split(64):
                loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        done = target
        with torch.no_grad():
            acc[target] = float((net(torch.tensor(x[n:])).argmax(1).numpy() == y[n:]).mean())
    return acc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="minilm-bitnet-distilled")
    ap.add_argument("--teacher-steps", type=int, default=40960)
    args = ap.parse_args()
    torch.set_num_threads(1)
    states, actions = teacher_states(args.teacher_steps)
    bb = load_backbone(args.backbone, engine="torch", cache_mb=0)
    per_state = layer_states(bb, states)
    n_layers = per_state[0][0].shape[0]

    def fields(layer):
        return np.array([field_means(h[layer] if layer >= 0 else h[1:].mean(0), f, 4).reshape(-1)
                         for h, f in per_state])

    results = {"raw observation": probe(states.astype(np.float32), actions),
               "mean pooling (last layer)": probe(np.array([h[-1].mean(0) for h, _ in per_state]), actions)}
    for layer in range(n_layers):
        results[f"fields, layer {layer}"] = probe(fields(layer), actions)
    results["fields, mean of layers 1-6"] = probe(fields(-1), actions)
    last = fields(n_layers - 1).reshape(len(states), 4, -1)
    for k in (4, 16):
        parts = []
        for f in range(4):
            centred = last[: len(states) // 2, f] - last[: len(states) // 2, f].mean(0)
            vt = np.linalg.svd(centred, full_matrices=False)[2]
            parts.append((last[:, f] - last[: len(states) // 2, f].mean(0)) @ vt[:k].T)
        results[f"fields, per-field PCA to {k}"] = probe(np.concatenate(parts, 1), actions)
    for name, acc in results.items():
        print(f"{name:32s} " + "  ".join(f"{e} ep: {a:.3f}" for e, a in acc.items()), flush=True)
    out = {"cpu": cpu_model(), "env": ENV, "backbone": args.backbone, "teacher_steps": args.teacher_steps,
           "states": len(states), "epochs": list(EPOCHS), "accuracy": results}
    (HERE / "results" / "readout_probe.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
