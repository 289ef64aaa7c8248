"""Bag record / read / replay throughput.

(a) BagRecorder.write of serialized bitrl_msgs/Observation (4 values, 40 Hz stamps) to MCAP and sqlite3:
    messages/s, MB/s of CDR payload, file size (what the recorder node does: it records the CDR bytes it receives);
(b) read-back through iter_observations (open, decode, ObsRecord) for both storages: messages/s;
(c) DDS replay in one process over real DDS (localhost): the bag_replay node
    - fast: rate 1000 (the parameter's maximum) into a plain `observation` subscriber: messages/s received;
    - stepped (rate 0): a trivial node answering each observation with its Action at once: messages/s.

Writes bench/results/bag_throughput.json (with the CPU model and load average) and prints a markdown table.

    .venv/bin/python bench/bag_throughput.py [--messages 20000] [--fast-messages 5000] [--stepped-messages 2000]
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import tempfile
import time

import numpy as np

from bitrl_ros.telemetry.board import cpu_model

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", "78")

HERE = Path(__file__).resolve().parent
PERIOD_NS = 25_000_000  # 40 Hz


def serialized_observations(n: int) -> list[bytes]:
    from bitrl_ros.bag.typestore import make_typestore

    ts = make_typestore()
    T, H, Obs = (ts.types[k] for k in ("builtin_interfaces/msg/Time", "std_msgs/msg/Header",
                                       "bitrl_msgs/msg/Observation"))
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        sec, nsec = divmod(i * PERIOD_NS, 1_000_000_000)
        msg = Obs(header=H(stamp=T(sec=sec, nanosec=nsec), frame_id="CartPole-v1"), episode=i // 500, step=i % 500,
                  values=rng.standard_normal(4).astype(np.float32), mission="", reward=1.0,
                  terminated=False, truncated=False)
        out.append(bytes(ts.serialize_cdr(msg, "bitrl_msgs/msg/Observation")))
    return out


def write_bench(path: Path, storage: str, data: list[bytes]) -> dict:
    from bitrl_ros.bag.recorder import BagRecorder

    t0 = time.perf_counter()
    with BagRecorder(path, storage) as rec:
        rec.add_topic("/bench/observation", "bitrl_msgs/msg/Observation")
        for i, raw in enumerate(data):
            rec.write("/bench/observation", 1_000_000_000 + i * PERIOD_NS, raw)
    dt = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in path.iterdir())
    payload = sum(len(d) for d in data)
    return {"messages": len(data), "seconds": dt, "messages_per_s": len(data) / dt,
            "payload_mb_per_s": payload / dt / 1e6, "payload_bytes": payload, "bag_bytes": size}


def read_bench(path: Path, n: int) -> dict:
    from bitrl_ros.bag.sources import iter_observations

    t0 = time.perf_counter()
    count = sum(1 for _ in iter_observations(path))
    dt = time.perf_counter() - t0
    assert count == n, (count, n)
    return {"messages": count, "seconds": dt, "messages_per_s": count / dt}


def replay_bench(bag: Path, rate: float, max_messages: int, ns: str) -> dict:
    import rclpy
    from rclpy.parameter import Parameter

    from bitrl_msgs.msg import Action, Observation
    from bitrl_ros.nodes.bag_replay import BagReplayNode
    from bitrl_ros.nodes.base import PIPELINE_QOS, InProcessGraph

    received = {"n": 0, "first": None, "last": None}
    stepped = rate == 0.0

    def build(ctx):
        node = rclpy.node.Node("bench_sink", namespace=ns, context=ctx)
        pub = node.create_publisher(Action, "action", PIPELINE_QOS) if stepped else None
        qos = rclpy.qos.QoSProfile(depth=1000, reliability=PIPELINE_QOS.reliability)

        def cb(m):
            now = time.perf_counter()
            received["n"] += 1
            received["first"] = received["first"] or now
            received["last"] = now
            if pub is not None:
                a = Action()
                a.header, a.episode, a.step = m.header, m.episode, m.step
                pub.publish(a)
        node.create_subscription(Observation, "observation", cb, qos if not stepped else PIPELINE_QOS)
        return node

    params = [Parameter("bag", value=str(bag)), Parameter("rate", value=float(rate)),
              Parameter("max_messages", value=int(max_messages)), Parameter("publish_clock", value=True)]
    sink = InProcessGraph(build)
    try:
        player = InProcessGraph(lambda ctx: BagReplayNode(context=ctx, namespace=ns, parameter_overrides=params))
        try:
            player.node.finished.wait(600)
            time.sleep(0.5)
        finally:
            player.close()
    finally:
        sink.close()
    p = player.node
    span = (received["last"] - received["first"]) if received["n"] > 1 else float("nan")
    return {"rate": rate, "published": p.replayed, "received": received["n"],
            "published_per_s": p.messages_per_s(), "received_per_s": (received["n"] - 1) / span if span else 0.0,
            "actions_received": p.actions_received, "action_timeouts": p.action_timeouts,
            "seconds": (p.ended_at or 0) - (p.started_at or 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--fast-messages", type=int, default=5000)
    ap.add_argument("--stepped-messages", type=int, default=2000)
    ap.add_argument("--out", default=str(HERE / "results" / "bag_throughput.json"))
    args = ap.parse_args()

    load_before = os.getloadavg()
    data = serialized_observations(args.messages)
    res: dict = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_avg_before": load_before,
                 "messages": args.messages, "message_bytes": len(data[0]), "write": {}, "read": {}, "replay": {}}
    with tempfile.TemporaryDirectory(prefix="bitrl_bag_bench_") as tmp:
        tmp = Path(tmp)
        for storage in ("mcap", "sqlite3"):
            res["write"][storage] = write_bench(tmp / f"bag_{storage}", storage, data)
            res["read"][storage] = read_bench(tmp / f"bag_{storage}", args.messages)
            print(f"{storage}: write {res['write'][storage]['messages_per_s']:.0f} msg/s, "
                  f"read {res['read'][storage]['messages_per_s']:.0f} msg/s", flush=True)
        res["replay"]["fast"] = replay_bench(tmp / "bag_mcap", 1000.0, args.fast_messages, "bench_bag_fast")
        print(f"fast replay: {res['replay']['fast']}", flush=True)
        res["replay"]["stepped"] = replay_bench(tmp / "bag_mcap", 0.0, args.stepped_messages, "bench_bag_step")
        print(f"stepped replay: {res['replay']['stepped']}", flush=True)
    res["load_avg_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))

    w, r, rp = res["write"], res["read"], res["replay"]
    print(f"\nCPU: {res['cpu']} ({res['cores']} cores), load avg before "
          f"{' '.join(f'{x:.2f}' for x in load_before)}, after {' '.join(f'{x:.2f}' for x in res['load_avg_after'])}")
    print(f"{args.messages} Observation messages, 4 float32 values, {res['message_bytes']} B CDR each\n")
    print("| stage | storage / mode | messages | messages/s | MB/s | bag size |")
    print("|---|---|---:|---:|---:|---:|")
    for s in ("mcap", "sqlite3"):
        print(f"| write (BagRecorder) | {s} | {w[s]['messages']} | {w[s]['messages_per_s']:,.0f} | "
              f"{w[s]['payload_mb_per_s']:.2f} | {w[s]['bag_bytes'] / 1e6:.2f} MB |")
    for s in ("mcap", "sqlite3"):
        print(f"| read (iter_observations) | {s} | {r[s]['messages']} | {r[s]['messages_per_s']:,.0f} | | |")
    f, st = rp["fast"], rp["stepped"]
    print(f"| DDS replay, fast (rate 1000) | mcap -> subscriber | {f['received']}/{f['published']} | "
          f"{f['received_per_s']:,.0f} | | |")
    print(f"| DDS replay, stepped (rate 0) | mcap -> responder | {st['received']}/{st['published']} | "
          f"{st['received_per_s']:,.0f} | | |")
    print(f"\n(stepped: {st['actions_received']} actions received, {st['action_timeouts']} action timeouts)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
