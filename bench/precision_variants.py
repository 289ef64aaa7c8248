"""Bits per weight, storage, fidelity and speed of every backbone precision (the rows of the paper's Table III).

    .venv/bin/python bench/precision_variants.py [--states 200] [--repeats 3]

Per backbone: the bits per weight of its encoder linears as packed (backbone/precision.py; ternary 2 bits), what
the whole model takes stored (embeddings, norms and biases in float32; the 30522 x 384 word embedding alone is
44.7 MB of it), the peak RSS of a fresh process that loads it and encodes one state (the torch-engine variants
compute with dequantized float32 weights, so their resident memory is the teacher's plus the quantizer's
transients: the formats' saving is in the stored size and, on hardware with their kernels, the bandwidth), the
mean cosine of its mean-pooled features to the FP32 teacher's on serialized CartPole/HalfCheetah states and
missions, and the time per state (batch 1, one thread, the engine `auto` picks: native for the ternary models,
torch for the others), as a ratio to the FP32 teacher timed in the same process. Writes
bench/results/precision_variants.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import random
import resource
import subprocess
import sys
import time

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BACKBONES = ("minilm-fp32", "minilm-fp16", "minilm-int8", "minilm-int4-g32", "minilm-nvfp4", "minilm-ternary-ptq",
             "minilm-bitnet-distilled")
RESULTS = ROOT / "bench" / "results" / "precision_variants.json"


def probe_texts(n: int) -> list[str]:
    from bitrl_ros.backbone.corpus import env_states, mission_text
    from bitrl_ros.serialize import get_serializer

    texts = []
    for env in ("CartPole-v1", "HalfCheetah-v5"):
        ser = get_serializer(env, "compact", None)
        texts += [ser(s) for s in env_states(env, n // 3, seed=7)]
    r = random.Random(7)
    return texts + [mission_text(r) for _ in range(n - len(texts))]


def measure(backbone_id: str, n: int, repeats: int) -> dict:
    """In this process: storage, cosine to the teacher, time per state next to the teacher's."""
    import torch

    from bitrl_ros.backbone import load_backbone
    from bitrl_ros.backbone.variants import storage

    torch.set_num_threads(1)
    texts = probe_texts(n)
    teacher = load_backbone("minilm-fp32", cache_mb=0)
    ours = load_backbone(backbone_id, cache_mb=0)
    cos = (ours.encode(texts, normalize=True) * teacher.encode(texts, normalize=True)).sum(1)
    ids = ours.tokenize(texts)

    def per_state(bb):
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for seq in ids:
                bb.encode_tokens([seq])
            best = min(best, (time.perf_counter() - t0) / len(ids))
        return best
    t_teacher, t_ours = per_state(teacher), per_state(ours)
    by_isa = {}
    if ours.engine_name == "native":  # every kernel path this CPU has, next to the teacher
        from bitrl_ros.backbone.engines.native import _native

        for isa in _native.available_isas():
            ours.engine.native.isa = isa
            by_isa[isa] = per_state(ours) / t_teacher
        ours.engine.native.isa = _native.best_isa()
    if ours.model is None:   # straight from its model file into the native engine: storage from the torch copy
        ours_torch = load_backbone(backbone_id, cache_mb=0, engine="torch")
        st = storage(ours_torch.model)
    else:
        st = storage(ours.model)
    return {**st, "engine": ours.engine_name, "cosine_to_teacher_mean": float(cos.mean()),
            "cosine_to_teacher_min": float(cos.min()), "ms_per_state": t_ours * 1e3,
            "teacher_ms_per_state": t_teacher * 1e3, "time_vs_teacher": t_ours / t_teacher,
            "time_vs_teacher_by_isa": by_isa}


def rss_of_loading(backbone_id: str) -> float:
    """Peak RSS (MB) of a fresh process that loads the backbone and encodes one state (torch only where the
    backbone needs it: a ternary model file goes straight into the native engine).
    """
    # VmHWM, not ru_maxrss: a forked child's ru_maxrss starts at its parent's RSS and survives the exec.
    code = (f"from bitrl_ros.backbone import load_backbone\n"
            f"load_backbone({backbone_id!r}, cache_mb=0).encode(['cart 0.01 pole -0.20'])\n"
            f"print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return int(out.stdout.split()[-1]) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--states", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    args = parser.parse_args()
    from bitrl_ros.telemetry.board import cpu_model

    rows = {}
    for b in args.backbones:
        rows[b] = {**measure(b, args.states, args.repeats), "peak_rss_mb": rss_of_loading(b)}
        print(b, json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[b].items()}),
              flush=True)
    RESULTS.write_text(json.dumps({"cpu": cpu_model(), "states": args.states, "threads": 1,
                                   "peak_rss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                                   "backbones": rows}, indent=1))
    print("\n| backbone | engine | bits/weight (linears) | stored MB | peak RSS MB | cosine to FP32 (mean / min) | "
          "ms per state | x FP32 time | x FP32 time per kernel path |\n|---|---|---|---|---|---|---|---|---|")
    for b, r in rows.items():
        isas = ", ".join(f"{k} {v:.2f}" for k, v in r["time_vs_teacher_by_isa"].items()) or "-"
        print(f"| `{b}` | {r['engine']} | {r['bits_per_linear_weight']:.2f} | {r['total_bytes'] / 2**20:.1f} | "
              f"{r['peak_rss_mb']:.0f} | {r['cosine_to_teacher_mean']:.4f} / {r['cosine_to_teacher_min']:.4f} | "
              f"{r['ms_per_state']:.2f} | {r['time_vs_teacher']:.2f} | {isas} |")


if __name__ == "__main__":
    main()
