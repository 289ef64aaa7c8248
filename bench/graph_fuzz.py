"""Malformed messages at a live graph: the whole agent (`bitrl run`'s nodes, realtime 40 Hz, the default
distilled backbone, learning online) while a fuzzer publishes malformed messages on every input topic
(observation, serialized_state, encoded_state, action): non-finite and huge values, wrong and huge lengths,
200k-character texts, out-of-vocabulary and negative token ids, keys of steps that never happened.

    .venv/bin/python bench/graph_fuzz.py [--per-topic 10000] [--rate 400] [--fuzzer-process]

--fuzzer-process: the fuzzer runs in a process of its own (as an attacker or a broken driver on a robot would),
not in the graph's process, where it shares the interpreter lock with the nodes.

Writes bench/results/graph_fuzz.json (graph_fuzz_process.json with --fuzzer-process): the bridge's achieved rate
before / during / after the fuzzing, the updates and whether all their statistics stayed finite, what each node
rejected. test/test_graph_fuzz.py runs the
same with 2,000 messages per topic and asserts the graph stays up, keeps stepping and keeps finite updates.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
import random
import subprocess
import sys
import tempfile
import time
import uuid

HERE = Path(__file__).resolve().parent
TOPICS = ("observation", "serialized_state", "encoded_state", "action")


def _malformed(topic: str, rng: random.Random, types: dict):
    """One malformed message for topic, of a randomly chosen kind."""
    msg = types[topic]()
    msg.episode, msg.step = rng.choice([(0, rng.randrange(10_000)), (2**32 - 1, 2**32 - 1), (rng.randrange(99), 0)])
    bad = rng.choice([math.nan, math.inf, -math.inf, 1e38, -3e38])
    n = rng.choice([0, 1, 3, 5, 17, 100_000])
    values = [bad if rng.random() < 0.5 else rng.uniform(-1, 1) for _ in range(min(n, 64))] * max(1, n // 64)
    if topic == "observation":
        msg.values, msg.reward = values[:n], rng.choice([bad, 1.0])
        msg.mission = "x" * rng.choice([0, 200_000])
        msg.terminated, msg.truncated = rng.random() < 0.1, rng.random() < 0.1
    elif topic == "serialized_state":
        msg.text = rng.choice(["", "x" * 200_000, "1 -23 5 41"])
        ids = rng.choice([[], [101, 2**31 - 1, 102], [-5, -1, 0], [101] * 5000, [101, 30522, 102]])
        msg.token_ids, msg.token_fields = ids, rng.choice([[], [7] * len(ids), [-9] * (len(ids) + 3)])
    elif topic == "encoded_state":
        msg.embedding, msg.observation = values[:n], values[: rng.choice([0, 4, 9])]
        msg.readout = rng.choice(["", "fields_proj", "mean", "nonsense" * 50])
        msg.backbone_id = rng.choice(["", "minilm-bitnet-distilled", "other"])
    else:  # action
        msg.discrete = rng.choice([-1, 2, 2**31 - 1, 0])
        msg.continuous = values[:n]
        msg.log_prob, msg.value = bad, bad
    return msg


def _fuzzer_node(ctx, ns: str, types: dict, stats: list | None = None):
    from bitrl_msgs.msg import TrainingStats
    from rclpy.node import Node

    from bitrl_ros.nodes.base import PIPELINE_QOS, STATS_QOS

    node = Node("fuzzer", namespace=ns, context=ctx)
    node.pubs = {t: node.create_publisher(types[t], t, PIPELINE_QOS) for t in TOPICS}
    if stats is not None:
        node.create_subscription(TrainingStats, "training_stats", stats.append, STATS_QOS)
    return node


def _message_types() -> dict:
    from bitrl_msgs.msg import Action, EncodedState, Observation, SerializedState

    return {"observation": Observation, "serialized_state": SerializedState, "encoded_state": EncodedState,
            "action": Action}


def _send(pubs: dict, per_topic: int, rate: float, rng: random.Random, types: dict, keep_going=lambda: True) -> int:
    """per_topic malformed messages on each topic, round robin, paced at rate messages per second in all."""
    sent, period, t0 = 0, 1.0 / rate, time.monotonic()
    for i in range(per_topic * len(TOPICS)):
        topic = TOPICS[i % len(TOPICS)]
        pubs[topic].publish(_malformed(topic, rng, types))
        sent += 1
        time.sleep(max(0.0, t0 + sent * period - time.monotonic()))
        if not keep_going():
            break
    return sent


def fuzzer_process_main(ns: str, per_topic: int, rate: float, seed: int) -> int:
    """The fuzzer on its own: wait until every topic has a subscriber, send, print the count."""
    from bitrl_ros.nodes.base import InProcessGraph

    types = _message_types()
    attacker = InProcessGraph(lambda ctx: _fuzzer_node(ctx, ns, types))
    try:
        deadline = time.monotonic() + 60
        while (any(p.get_subscription_count() < 1 for p in attacker.node.pubs.values())
               and time.monotonic() < deadline):
            time.sleep(0.05)
        print(f"fuzzer: sending {per_topic} per topic", flush=True)
        print(f"fuzzer: sent {_send(attacker.node.pubs, per_topic, rate, random.Random(seed), types)}", flush=True)
    finally:
        attacker.close()
    return 0


def fuzz_graph(per_topic: int, rate: float, seed: int = 0, warmup_s: float = 8.0, after_s: float = 8.0,
               rollout: int = 256, log=print, fuzzer_process: bool = False) -> dict:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from bitrl_msgs.msg import TrainingStats
    from rclpy.node import Node

    from bitrl_ros.nodes.base import InProcessGraph, STATS_QOS
    from bitrl_ros.runner import build_nodes, NODE_ORDER, resolve_params, RunOptions

    types = _message_types()
    ns = f"fuzz_{uuid.uuid4().hex[:8]}"
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="bitrl-fuzz-") as tmp:
        validated = resolve_params(RunOptions(config=HERE.parent / "config" / "agent.yaml", mode="realtime",
                                              overrides={"policy_value.ppo.num_steps": rollout,
                                                         "policy_value.checkpoint_dir": f"{tmp}/ckpt"}))
        graph = InProcessGraph(lambda ctx: build_nodes(validated, ctx, ns, NODE_ORDER), "events",
                               signal_handlers=False)
        stats = []

        def listener(ctx):
            node = Node("fuzz_stats", namespace=ns, context=ctx)
            node.create_subscription(TrainingStats, "training_stats", stats.append, STATS_QOS)
            return node

        attacker = InProcessGraph(listener if fuzzer_process else lambda ctx: _fuzzer_node(ctx, ns, types, stats))
        try:
            bridge, policy = graph.nodes["sim_bridge"], graph.nodes["policy_value"]
            time.sleep(warmup_s)
            if fuzzer_process:
                proc = subprocess.Popen([sys.executable, __file__, "--fuzzer-only", ns, "--per-topic", str(per_topic),
                                         "--rate", str(rate), "--seed", str(seed)], stdout=subprocess.PIPE, text=True)
                assert proc.stdout.readline().startswith("fuzzer: sending"), "the fuzzer process did not start"
                s0, t0 = bridge.stats().total_steps, time.monotonic()
                last = proc.stdout.readline()
                proc.wait(600)
                sent = int(last.split()[-1])
            else:
                s0, t0 = bridge.stats().total_steps, time.monotonic()
                sent = _send(attacker.node.pubs, per_topic, rate, rng, types, lambda: graph.spinning)
            s1, t1 = bridge.stats().total_steps, time.monotonic()
            time.sleep(after_s)
            s2, t2 = bridge.stats().total_steps, time.monotonic()
            up = graph.spinning
            graph.stop_spinning()  # re-raises what stopped the executor, if anything did
            checked = ("policy_loss", "value_loss", "entropy", "approx_kl", "grad_norm")
            finite = all(math.isfinite(getattr(m, f)) for m in stats for f in checked)
            out = {"per_topic": per_topic, "sent": sent, "fuzzer_process": fuzzer_process,
                   "rate_msgs_per_s": sent / max(t1 - t0, 1e-9),
                   "graph_up": up, "steps_during_fuzz": s1 - s0,
                   "rate_during_hz": (s1 - s0) / max(t1 - t0, 1e-9), "rate_after_hz": (s2 - s1) / max(t2 - t1, 1e-9),
                   "updates": len(stats), "updates_finite": finite,
                   "policy_invalid_inputs": policy.invalid_count, "policy_safe_actions": policy.safe_actions,
                   "bridge_invalid_actions": bridge.invalid_actions,
                   "encoder_errors": graph.nodes["ternary_encoder"].error_count,
                   "failed_updates": policy.stats().failed_updates}
        finally:
            attacker.close()
            graph.close()
    log(json.dumps(out))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-topic", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=400.0, help="malformed messages per second, all topics")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fuzzer-process", action="store_true", help="run the fuzzer in a process of its own")
    ap.add_argument("--fuzzer-only", metavar="NAMESPACE", help=argparse.SUPPRESS)  # that process's entry
    args = ap.parse_args()
    if args.fuzzer_only:
        return fuzzer_process_main(args.fuzzer_only, args.per_topic, args.rate, args.seed)
    from bitrl_ros.telemetry.board import cpu_model

    load = os.getloadavg()
    out = fuzz_graph(args.per_topic, args.rate, args.seed, fuzzer_process=args.fuzzer_process)
    out["cpu"], out["load_avg_start"] = cpu_model(), load
    name = "graph_fuzz_process.json" if args.fuzzer_process else "graph_fuzz.json"
    (HERE / "results" / name).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
