"""Per-state encode latency: native engine vs torch (fake-quant ternary) vs torch FP32 teacher, side by side.

    .venv/bin/python bench/native_engine.py [--tokens 1 8 30] [--threads 1 2] [--reps 200] [--out FILE]

One state = one token sequence of the given length, encoded without the cache (engine.run). The three engines are
interleaved call by call so that load on the machine hits them alike; medians and p90 are reported.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import time

import numpy as np
import torch

from bitrl_ros.backbone import load_backbone
from bitrl_ros.backbone.engines.native import native_available
from bitrl_ros.telemetry.board import cpu_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, nargs="+", default=[1, 8, 30])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "native_engine.json")
    args = ap.parse_args()

    ok, why = native_available()
    if not ok:
        raise SystemExit(f"native engine unavailable: {why}")
    engines = {
        "native": load_backbone("minilm-ternary-ptq", cache_mb=0, max_tokens=512, engine="native"),
        "torch_ternary": load_backbone("minilm-ternary-ptq", cache_mb=0, max_tokens=512, engine="torch"),
        "torch_fp32": load_backbone("minilm-fp32", cache_mb=0, max_tokens=512, engine="torch"),
    }
    text = " ".join(f"x{i} {0.1 * i:+.3f}" for i in range(60))
    base = engines["native"].tokenize([text])[0]
    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        engines["native"].engine.threads = threads
        for n in args.tokens:
            seq = [base[:n]] if n > 1 else [base[:1]]
            times = {k: [] for k in engines}
            for bb in engines.values():
                for _ in range(5):
                    bb.engine.run(seq, "mean")
            for _ in range(args.reps):
                for k, bb in engines.items():
                    t0 = time.perf_counter()
                    bb.engine.run(seq, "mean")
                    times[k].append(time.perf_counter() - t0)
            row = {"threads": threads, "tokens": n}
            for k, ts in times.items():
                row[f"{k}_ms_p50"] = float(np.median(ts) * 1e3)
                row[f"{k}_ms_p90"] = float(np.percentile(ts, 90) * 1e3)
            row["fp32_over_native"] = row["torch_fp32_ms_p50"] / row["native_ms_p50"]
            row["torch_ternary_over_native"] = row["torch_ternary_ms_p50"] / row["native_ms_p50"]
            results.append(row)
            print(f"threads {threads} tokens {n:3d}: native {row['native_ms_p50']:7.3f} ms | torch ternary "
                  f"{row['torch_ternary_ms_p50']:7.3f} ms | torch fp32 {row['torch_fp32_ms_p50']:7.3f} ms | "
                  f"fp32/native {row['fp32_over_native']:5.2f}x", flush=True)
    report = {"cpu": cpu_model(), "native": why, "load_avg": [round(x, 2) for x in os.getloadavg()],
              "reps": args.reps, "results": results}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
