"""What the hybrid critic costs: time per state and memory of the encoder stage with and without the INT8 critic.

    .venv/bin/python bench/hybrid_critic_cost.py [--states 300] [--critic minilm-int8]

Per configuration, in a fresh process each (peak RSS is VmHWM, torch never imported where it is not needed): the
encoder stage as `bitrl train` and the ternary_encoder node run it (EmbedStage, the default fields_proj readout,
cache off) on serialized CartPole-v1 states, batch 1, one thread: ms per state, and the ratio with the critic to
without, timed in the same process (interleaved rounds). Writes bench/results/hybrid_critic_cost.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import subprocess
import sys

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "hybrid_critic_cost.json"

CHILD = r"""
import json, sys, time
from bitrl_ros.backbone import load_backbone
from bitrl_ros.backbone.corpus import env_states
from bitrl_ros.envs import get_spec
from bitrl_ros.features import StateEncoder
from bitrl_ros.serialize import get_serializer

critic_id, n, timed = sys.argv[1] or None, int(sys.argv[2]), sys.argv[3] == "1"
policy = load_backbone("minilm-bitnet-distilled", cache_mb=0)
critic = None if critic_id is None else load_backbone(critic_id, cache_mb=0)
spec = get_spec("CartPole-v1")
enc = StateEncoder(spec, get_serializer("CartPole-v1", "compact", None), policy, "fields_proj", False, 16, True, critic)
states = env_states("CartPole-v1", n, seed=3)
_, _, ids, fields = enc.text(states)
out = {"engines": [policy.engine_name] + ([critic.engine_name] if critic else []), "feature_dim": enc.feature_dim}
if timed:
    alone = StateEncoder(spec, get_serializer("CartPole-v1", "compact", None), policy, "fields_proj", False, 16, True)
    best = {"with": float("inf"), "without": float("inf")}
    for _ in range(3):
        for name, stage in (("without", alone.embed), ("with", enc.embed)):
            t0 = time.perf_counter()
            for i in range(n):
                stage.embed([ids[i]], [fields[i]])
            best[name] = min(best[name], (time.perf_counter() - t0) / n)
    out.update({"ms_with": best["with"] * 1e3, "ms_without": best["without"] * 1e3})
else:
    for i in range(n):
        enc.embed.embed([ids[i]], [fields[i]])
out["peak_rss_mb"] = int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM"))) / 1024
out["torch_imported"] = "torch" in sys.modules
print(json.dumps(out))
"""


def child(critic: str, n: int, timed: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, critic, str(n), "1" if timed else "0"], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--states", type=int, default=300)
    parser.add_argument("--critic", default="minilm-int8")
    args = parser.parse_args()
    from bitrl_ros.telemetry.board import cpu_model

    alone, hybrid = child("", 20, False), child(args.critic, 20, False)
    timed = child(args.critic, args.states, True)
    out = {"cpu": cpu_model(), "critic": args.critic, "states": args.states, "ternary_only": alone,
           "hybrid": hybrid, "timing": timed, "time_ratio": timed["ms_with"] / timed["ms_without"],
           "rss_overhead_mb": hybrid["peak_rss_mb"] - alone["peak_rss_mb"]}
    RESULTS.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
