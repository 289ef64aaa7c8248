"""How much of the teacher survives ternarization: PTQ vs distilled students.

(a) Held-out corpus cosine: mean cosine similarity between a model's and the teacher's mean-pooled embeddings on the
    distillation corpus's held-out split (which no training step sees), overall and per group (serializer format,
    mission, general).
(b) Linear probe: ridge regression (alpha chosen on an inner validation split) from the pooled embedding to the raw
    observation values on CartPole and HalfCheetah states (random + scripted rollouts, serialized in each format),
    fit on 80%, R^2 on the other 20% (mean over observation dimensions, targets standardized on the training part).

    .venv/bin/python bench/distill_probe.py [--distilled DIR ...] [--label smoke] [--states 600] [--threads 2]

Writes bench/results/distill_probe.json (or --out) and prints a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
import time

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bitrl_ros.backbone import load_backbone  # noqa: E402
from bitrl_ros.backbone.corpus import build_corpus, env_states, label_group  # noqa: E402
from bitrl_ros.serialize import FORMATS, get_serializer  # noqa: E402

PROBE_ENVS = ("CartPole-v1", "HalfCheetah-v5")


ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)


def _fit_predict(xtr, ytr, xte, alpha):
    w = np.linalg.solve(xtr.T @ xtr + alpha * np.eye(xtr.shape[1]), xtr.T @ ytr)
    return xte @ w


def _r2(pred, y):
    return float(np.mean(1.0 - ((pred - y) ** 2).sum(0) / (((y - y.mean(0)) ** 2).sum(0) + 1e-12)))


def ridge_r2(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    """Test R^2 (mean over target dims) of ridge on standardized features/targets; alpha picked on an inner
    80/20 split of the training part from ALPHAS.
    """
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))
    n_tr = int(0.8 * len(x))
    tr, te = idx[:n_tr], idx[n_tr:]
    xm, xs = x[tr].mean(0), x[tr].std(0) + 1e-6
    ym, ys = y[tr].mean(0), y[tr].std(0) + 1e-9
    xtr, xte = (x[tr] - xm) / xs, (x[te] - xm) / xs
    ytr, yte = (y[tr] - ym) / ys, (y[te] - ym) / ys
    n_in = int(0.8 * n_tr)
    best = max(ALPHAS, key=lambda a: _r2(_fit_predict(xtr[:n_in], ytr[:n_in], xtr[n_in:], a), ytr[n_in:]))
    return _r2(_fit_predict(xtr, ytr, xte, best), yte)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--distilled", nargs="*", default=[], help="distilled model directories")
    ap.add_argument("--label", default=None, help="label for the distilled models (e.g. 'smoke run')")
    ap.add_argument("--corpus-states", type=int, default=2000, help="corpus size whose held-out split is used "
                    "(the distill default is 2000)")
    ap.add_argument("--heldout-max", type=int, default=600, help="held-out texts evaluated (evenly spaced)")
    ap.add_argument("--states", type=int, default=600, help="probe states per env")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "distill_probe.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    _, held, meta = build_corpus(args.corpus_states, args.seed)
    sel = list(range(len(held)))
    if len(sel) > args.heldout_max:
        sel = [round(i * (len(held) - 1) / (args.heldout_max - 1)) for i in range(args.heldout_max)]
    held_texts = [held[i] for i in sel]
    groups = [label_group(meta["heldout_labels"][i]) for i in sel]

    models = {"teacher (minilm-fp32)": "minilm-fp32", "PTQ (minilm-ternary-ptq)": "minilm-ternary-ptq"}
    for d in args.distilled:
        models[f"distilled{' ' + args.label if args.label else ''} ({d})"] = d
    probe_states = {env: env_states(env, args.states, 10_000 + args.seed) for env in PROBE_ENVS}

    results: dict = {"heldout": {"n": len(held_texts), "corpus_hash": meta["hash"], "corpus_params": meta["params"]},
                     "probe": {"n_states": args.states, "envs": list(PROBE_ENVS)}, "models": {}}
    teacher_held = None
    for name, bid in models.items():
        t0 = time.time()
        bb = load_backbone(bid, engine="torch", cache_mb=0, max_tokens=64)
        emb = bb.encode(held_texts)
        if teacher_held is None:
            teacher_held = emb
        cos = (emb * teacher_held).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(teacher_held, axis=1))
        entry = {"heldout_cosine": {"mean": float(cos.mean()),
                                    **{g: float(cos[[i for i, x in enumerate(groups) if x == g]].mean())
                                       for g in sorted(set(groups))}},
                 "probe_r2": {}}
        for env, states in probe_states.items():
            for fmt in FORMATS:
                feats = bb.encode(get_serializer(env, fmt).batch(states))
                entry["probe_r2"][f"{env}/{fmt}"] = ridge_r2(feats.astype(np.float64), states, args.seed)
        entry["seconds"] = round(time.time() - t0, 1)
        results["models"][name] = entry
        print(f"{name}: done in {entry['seconds']}s", flush=True)

    # Raw-observation reference: the probe target from the observation itself is R^2 = 1 by construction.
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    cols = ["mean", *FORMATS, "babyai", "mission", "general"]
    print("\nheld-out cosine to the teacher's pooled embedding")
    print(f"{'model':58s}" + "".join(f"{c:>11s}" for c in cols))
    for name, e in results["models"].items():
        print(f"{name:58s}" + "".join(f"{e['heldout_cosine'].get(c, float('nan')):11.4f}" for c in cols))
    keys = [f"{env}/{fmt}" for env in PROBE_ENVS for fmt in FORMATS]
    print("\nlinear-probe R^2 (ridge, pooled embedding -> raw observation, 80/20 split)")
    print(f"{'model':58s}" + "".join(f"{k.split('-')[0][:5] + '/' + k.split('/')[1][:6]:>13s}" for k in keys))
    for name, e in results["models"].items():
        print(f"{name:58s}" + "".join(f"{e['probe_r2'][k]:13.3f}" for k in keys))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
