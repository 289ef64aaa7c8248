"""Malformed messages at a live graph: the whole agent (`bitrl run`'s nodes, realtime 40 Hz, the default
distilled backbone, learning online) while a fuzzer publishes malformed messages on every input topic
(observation, serialized_state, encoded_state, action): non-finite and huge values, wrong and huge lengths,
200k-character texts, out-of-vocabulary and negative token ids, keys of steps that never happened.

    .venv/bin/python bench/graph_fuzz.py [--per-topic 10000] [--rate 400]

Writes bench/results/graph_fuzz.json: the bridge's achieved rate before / during / after the fuzzing, the
updates and whether all their statistics stayed finite, what each node rejected. test/test_graph_fuzz.py runs the
same with 2,000 messages per topic and asserts the graph stays up, keeps stepping and keeps finite updates.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
import random
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


def fuzz_graph(per_topic: int, rate: float, seed: int = 0, warmup_s: float = 8.0, after_s: float = 8.0,
               rollout: int = 256, log=print) -> dict:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from bitrl_msgs.msg import Action, EncodedState, Observation, SerializedState, TrainingStats
    from rclpy.node import Node

    from bitrl_ros.nodes.base import InProcessGraph, PIPELINE_QOS, STATS_QOS
    from bitrl_ros.runner import build_nodes, NODE_ORDER, resolve_params, RunOptions

    types = {"observation": Observation, "serialized_state": SerializedState, "encoded_state": EncodedState,
             "action": Action}
    ns = f"fuzz_{uuid.uuid4().hex[:8]}"
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="bitrl-fuzz-") as tmp:
        validated = resolve_params(RunOptions(config=HERE.parent / "config" / "agent.yaml", mode="realtime",
                                              overrides={"policy_value.ppo.num_steps": rollout,
                                                         "policy_value.checkpoint_dir": f"{tmp}/ckpt"}))
        graph = InProcessGraph(lambda ctx: build_nodes(validated, ctx, ns, NODE_ORDER), "events",
                               signal_handlers=False)
        stats = []

        def fuzzer(ctx):
            node = Node("fuzzer", namespace=ns, context=ctx)
            node.pubs = {t: node.create_publisher(types[t], t, PIPELINE_QOS) for t in TOPICS}
            node.create_subscription(TrainingStats, "training_stats", stats.append, STATS_QOS)
            return node

        attacker = InProcessGraph(fuzzer)
        try:
            bridge, policy = graph.nodes["sim_bridge"], graph.nodes["policy_value"]
            time.sleep(warmup_s)
            s0, t0 = bridge.stats().total_steps, time.monotonic()
            sent, period = 0, 1.0 / rate
            for i in range(per_topic * len(TOPICS)):
                topic = TOPICS[i % len(TOPICS)]
                attacker.node.pubs[topic].publish(_malformed(topic, rng, types))
                sent += 1
                time.sleep(max(0.0, t0 + sent * period - time.monotonic()))
                if not graph.spinning:
                    break
            s1, t1 = bridge.stats().total_steps, time.monotonic()
            time.sleep(after_s)
            s2, t2 = bridge.stats().total_steps, time.monotonic()
            up = graph.spinning
            graph.stop_spinning()  # re-raises what stopped the executor, if anything did
            checked = ("policy_loss", "value_loss", "entropy", "approx_kl", "grad_norm")
            finite = all(math.isfinite(getattr(m, f)) for m in stats for f in checked)
            out = {"per_topic": per_topic, "sent": sent, "rate_msgs_per_s": sent / max(t1 - t0, 1e-9),
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
    args = ap.parse_args()
    from bitrl_ros.telemetry.board import cpu_model

    out = fuzz_graph(args.per_topic, args.rate, args.seed)
    out["cpu"] = cpu_model()
    (HERE / "results" / "graph_fuzz.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
