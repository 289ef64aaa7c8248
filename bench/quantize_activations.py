"""Activation quantization (per-token absmax int8, before every ternary GEMM): the scalar path against the vector
path of this CPU (AVX2 on x86, NEON on ARM), both bit-identical, interleaved call by call in one run.

    .venv/bin/python bench/quantize_activations.py [--reps 2000]

Times one call of the extension's quantize_activations (a ~1 us Python call included in both), medians. The
MiniLM encoder quantizes 4 activations per layer ([tokens, 384] for q/k/v together, o and up; [tokens, 1536] for
down). Writes bench/results/quantize_activations.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import time

import numpy as np

from bitrl_ros.backbone.engines.native import require_native
from bitrl_ros.telemetry.board import cpu_model

SHAPES = ((1, 384), (8, 384), (30, 384), (30, 1536))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=2000)
    args = ap.parse_args()
    nat = require_native()
    vector = nat.best_isa()
    rng = np.random.default_rng(0)
    rows = []
    for tokens, width in SHAPES:
        x = (rng.standard_normal((tokens, width)) * 3).astype(np.float32)
        times = {"scalar": [], vector: []}
        for _ in range(args.reps):
            for isa in times:
                t0 = time.perf_counter()
                nat.quantize_activations(x, isa=isa)
                times[isa].append(time.perf_counter() - t0)
        med = {isa: float(np.median(v) * 1e6) for isa, v in times.items()}
        rows.append({"tokens": tokens, "width": width, "scalar_us": med["scalar"], "vector_us": med[vector],
                     "speedup": med["scalar"] / med[vector]})
        print(f"[{tokens:2d}, {width:4d}]: scalar {med['scalar']:7.2f} us, {vector} {med[vector]:6.2f} us, "
              f"{med['scalar'] / med[vector]:.1f}x", flush=True)
    out = {"cpu": cpu_model(), "vector_isa": vector, "reps": args.reps, "rows": rows}
    (Path(__file__).resolve().parent / "results" / "quantize_activations.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
