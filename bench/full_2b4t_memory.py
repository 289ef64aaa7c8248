"""Peak memory of the full BitNet b1.58 2B4T shape on the native engine: float32 against int8 embedding table,
side by side in one run, each built in a fresh process that imports only numpy and the extension (random ternary
weights, one layer's codes alive at a time; the int8 table handed over in chunks of 8,192 rows).

    .venv/bin/python bench/full_2b4t_memory.py [--threads 1 2] [--tokens 1 30]

Target (issue 14): peak RSS <= 1.2 GB. Writes bench/results/full_2b4t_memory.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from native_vs_llamacpp import run_full_2b4t

from bitrl_ros.telemetry.board import cpu_model

RESULTS = Path(__file__).resolve().parent / "results" / "full_2b4t_memory.json"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--tokens", type=int, nargs="+", default=[1, 30])
    args = ap.parse_args()
    out = {"cpu": cpu_model(), "target_peak_mb": 1200}
    for embedding in ("float32", "int8"):
        r = run_full_2b4t(args, embedding)
        if "error" in r:
            raise SystemExit(f"{embedding}: {r['error']}")
        out[embedding] = r
        lat = {f"{x['threads']}thr/{x['tokens']}tok": round(x["ms_p50"], 1) for x in r["latency"]}
        print(f"{embedding:8s} table {r['embedding_bytes'] / 2**20:7.1f} MiB, packed ternary "
              f"{r['packed_ternary_bytes'] / 2**20:.1f} MiB, peak RSS {r['vmhwm_kb'] / 1024:.0f} MiB, after build "
              f"{r['vmrss_after_build_kb'] / 1024:.0f} MiB; latency ms {lat}", flush=True)
    RESULTS.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
