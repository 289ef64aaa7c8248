"""How closely a backbone matches the FP32 teacher on the BabyAI renderer's segments, read as the agent reads them.

The segments (mission, the agent's own state, each object phrase) of 4,000 uniform-random-policy steps of each
registered BabyAI env (seed 0), deduplicated; each segment is encoded alone (``features.context=field``) with the
per-field readout (mean of its last-layer token states), torch engine. Per segment kind: mean and min cosine to
the teacher's vector, and the correlation of the pairwise cosine similarities (400 segments, the geometry the
heads see).

    .venv/bin/python bench/babyai_segments_probe.py [--models minilm-bitnet-distilled DIR ...]

Writes bench/results/babyai_segments_probe.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bitrl_ros.backbone import load_backbone  # noqa: E402
from bitrl_ros.backbone.corpus import random_renders, span_texts  # noqa: E402
from bitrl_ros.envs import list_envs  # noqa: E402

KINDS = ("mission", "self", "objects")


def segments(steps: int, seed: int = 0) -> dict[str, list[str]]:
    found = {k: {} for k in KINDS}
    for env_id in list_envs(("babyai",)):
        for text, spans in random_renders(env_id, steps, seed):
            for kind, span in zip(KINDS, spans):
                for piece in span_texts(text, (span,)):
                    found[kind].setdefault(piece)
    return {k: sorted(v) for k, v in found.items()}


def readout(backbone, texts: list[str]) -> np.ndarray:
    """Each text as one field read alone, through the same tokenizer alignment and field path as the agent's."""
    ids, fields = backbone.tokenizer.encode_aligned(texts, [[(0, len(t))] for t in texts])
    return backbone.encode_fields(ids, fields, 1, context="field")


def _pairwise(x: np.ndarray) -> np.ndarray:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return (x @ x.T)[np.triu_indices(len(x), 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["minilm-bitnet-distilled", "minilm-ternary-random"])
    parser.add_argument("--teacher", default="minilm-fp32")
    parser.add_argument("--steps", type=int, default=4000, help="random-policy steps per env")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "babyai_segments_probe.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    texts = segments(args.steps)
    teacher = load_backbone(args.teacher, engine="torch")
    ref = {k: readout(teacher, v) for k, v in texts.items()}
    results = {"teacher": args.teacher, "steps_per_env": args.steps, "envs": list_envs(("babyai",)),
               "segments": {k: len(v) for k, v in texts.items()}, "models": {}}
    for name in args.models:
        backbone = load_backbone(name, engine="torch")
        rows = {}
        for kind, v in texts.items():
            a, b = ref[kind], readout(backbone, v)
            cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
            idx = np.random.default_rng(0).permutation(len(a))[:400]
            rows[kind] = {"cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
                          "pairwise_corr": float(np.corrcoef(_pairwise(a[idx]), _pairwise(b[idx]))[0, 1])}
        results["models"][name] = rows
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"segments: {results['segments']}")
    print(f"{'model':44s} {'kind':8s} {'cos mean':>9s} {'cos min':>8s} {'pairwise corr':>14s}")
    for name, rows in results["models"].items():
        for kind, r in rows.items():
            print(f"{name:44s} {kind:8s} {r['cos_mean']:9.3f} {r['cos_min']:8.3f} {r['pairwise_corr']:14.3f}")


if __name__ == "__main__":
    main()
