"""Does a second thread help the native engine? (issue 14 item 5) One thread against two, in the same run.

    .venv/bin/python bench/native_threads.py [--tokens 1 8 30] [--blocks 10] [--calls 50]

The shipped distilled encoder on the native engine, one state of 1, 8 or 30 tokens per call, no cache. The
configurations share one model and take turns in blocks of --calls calls (after 5 warm-up calls each), so that
load on the machine hits them alike; a spinning pool's idle thread never overlaps another configuration's block.
  1 thread              no pool (the baseline)
  2, sleeping, 4M       the pool as it was: idle threads sleep at once, GEMMs of >= 4M MACs split
  2, spinning, 4M       idle threads spin (ThreadPool::kDefaultSpinUs) before they sleep, same split
  2, spinning, 256k     the default now: spinning, and every GEMM or attention of >= 256k MACs split
Medians (and p90) per configuration; speed-ups against 1 thread. Writes bench/results/native_threads.json.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import time

import numpy as np

from bitrl_ros.backbone import load_backbone
from bitrl_ros.backbone.engines.native import native_available
from bitrl_ros.telemetry.board import cpu_model

OUT = Path(__file__).resolve().parent / "results" / "native_threads.json"
SPIN_US = 200  # ThreadPool::kDefaultSpinUs
CONFIGS = (  # name, threads, spin_us, parallel threshold (MACs)
    ("1 thread", 1, 0, 1 << 18),
    ("2, sleeping, 4M", 2, 0, 1 << 22),
    ("2, spinning, 4M", 2, SPIN_US, 1 << 22),
    ("2, spinning, 256k (default)", 2, SPIN_US, 1 << 18),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, nargs="+", default=[1, 8, 30])
    ap.add_argument("--blocks", type=int, default=10)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    ok, why = native_available()
    if not ok:
        raise SystemExit(f"native engine unavailable: {why}")
    backbone = load_backbone("minilm-bitnet-distilled", cache_mb=0, max_tokens=512, engine="native")
    engine, native = backbone.engine, backbone.engine.native
    assert native.spin_us == SPIN_US, "ThreadPool::kDefaultSpinUs changed: update SPIN_US"
    text = " ".join(f"x{i} {0.1 * i:+.3f}" for i in range(60))
    base = backbone.tokenize([text])[0]
    rows = []
    for n in args.tokens:
        seq = [base[:n]]
        times: dict[str, list[float]] = {name: [] for name, *_ in CONFIGS}
        for _ in range(args.blocks):
            for name, threads, spin_us, threshold in CONFIGS:
                native.threads = threads
                native.spin_us = spin_us
                native.set_parallel_threshold(threshold)
                for _ in range(5):
                    engine.run(seq, "mean")
                for _ in range(args.calls):
                    t0 = time.perf_counter()
                    engine.run(seq, "mean")
                    times[name].append(time.perf_counter() - t0)
        one = float(np.median(times[CONFIGS[0][0]]))
        for name, threads, spin_us, threshold in CONFIGS:
            p50 = float(np.median(times[name]))
            rows.append({"tokens": n, "config": name, "threads": threads, "spin_us": spin_us,
                         "parallel_threshold_macs": threshold, "ms_p50": p50 * 1e3,
                         "ms_p90": float(np.percentile(times[name], 90)) * 1e3, "speedup_vs_1_thread": one / p50})
            print(f"{n:3d} tokens | {name:28s} {p50 * 1e3:7.3f} ms | x{one / p50:.2f} against 1 thread", flush=True)
    report = {"cpu": cpu_model(), "native": why, "load_avg": [round(x, 2) for x in os.getloadavg()],
              "blocks": args.blocks, "calls": args.calls, "backbone": "minilm-bitnet-distilled", "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
