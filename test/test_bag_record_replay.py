"""Record a live `bitrl run` (real DDS) with --record, read the bag back, replay it stepped into the agent in
evaluation mode and check that the published observation sequence is the recorded one.
"""
import threading

import numpy as np
import pytest

from bitrl_ros.bag.reader import open_bag, read_actions
from bitrl_ros.bag.sources import read_observations
from bitrl_ros.runner import replay, ReplayOptions, run, RunOptions
from ros_harness import InProcessGraph, unique_ns

TOPICS = ("observation", "serialized_state", "encoded_state", "action", "training_stats", "diagnostics")


def _record(tmp_path, storage, steps=300):
    ns = unique_ns("rec")
    bag = tmp_path / f"bag_{storage}"
    summary = run(RunOptions(config="config/agent.yaml", steps=steps, progress=False, namespace=ns,
                             log=lambda s: None, record=bag, record_storage=storage,
                             overrides={"backbone": "mlp", "policy_value.ppo.num_steps": 128,
                                        "diagnostics_monitor.publish_rate_hz": 5.0,
                                        "policy_value.checkpoint_dir": str(tmp_path / "ckpt")}))
    return bag, summary, ns


def _expected_observations(obs, summary) -> int:
    """One observation per env step plus one per reset: the first one and one after each finished episode, except
    when the last step ends an episode (the bridge stops there without resetting).
    """
    ends_on_episode_end = obs[-1].terminated or obs[-1].truncated
    return summary["steps"] + summary["episodes"] + (0 if ends_on_episode_end else 1)


@pytest.mark.slow
def test_record_then_replay_stepped(tmp_path):
    bag, summary, ns = _record(tmp_path, "mcap")
    assert summary["recorded"]["path"] == str(bag)
    obs = read_observations(bag)
    assert len(obs) == _expected_observations(obs, summary)
    with open_bag(bag) as b:
        for t in TOPICS:
            assert any(topic.endswith("/" + t) for topic in b.topics), t
        defs = {c.msgtype: c.msgdef.data for c in b.connections}
        for name in ("Observation", "SerializedState", "EncodedState", "Action", "TrainingStats"):
            assert defs[f"bitrl_msgs/msg/{name}"].startswith("std_msgs/Header header"), name
        assert "MSG: std_msgs/Header" in defs["bitrl_msgs/msg/Observation"]
        assert all(c.digest.startswith("RIHS01_") for c in b.connections)
    actions = read_actions(bag)
    assert len(actions) >= summary["steps"] and all(np.isfinite(a.log_prob) for a in actions.values())

    # replay (stepped) into the agent in evaluation mode, watched by a test subscriber
    import rclpy
    from bitrl_msgs.msg import Observation

    from bitrl_ros.nodes.base import PIPELINE_QOS

    rns = unique_ns("rep")
    seen, lock = [], threading.Lock()

    def build(ctx):
        node = rclpy.node.Node("watch", namespace=rns, context=ctx)
        qos = rclpy.qos.QoSProfile(depth=1000, reliability=PIPELINE_QOS.reliability)

        def cb(m):
            with lock:
                seen.append((m.episode, m.step, np.asarray(m.values, np.float32), m.reward, m.terminated))
        node.create_subscription(Observation, "observation", cb, qos)
        return node

    watcher = InProcessGraph(build)
    try:
        s = replay(ReplayOptions(bag=bag, rate=0.0, namespace=rns, log=lambda x: None, timeout_s=120,
                                 overrides={"backbone": "mlp", "bag_replay.min_subscribers": 4,  # + the watcher
                                            "policy_value.checkpoint_dir": str(tmp_path / "ckpt")}))
    finally:
        watcher.close()
    assert s["replayed"] == len(obs)
    assert s["actions_received"] >= len(obs) - sum(o.terminated or o.truncated for o in obs) - 2
    assert s["published"] == [(o.episode, o.step) for o in obs]
    assert len(seen) == len(obs)
    for (ep, st, vals, rew, term), o in zip(seen, obs):
        assert (ep, st, term) == (o.episode, o.step, o.terminated)
        np.testing.assert_array_equal(vals, o.values)
        assert rew == pytest.approx(o.reward)


@pytest.mark.slow
def test_record_sqlite3(tmp_path):
    bag, summary, _ = _record(tmp_path, "sqlite3", steps=100)
    assert (bag / f"{bag.name}.db3").is_file()
    obs = read_observations(bag)
    assert len(obs) == _expected_observations(obs, summary)
    assert [o.step for o in obs[:3]] == [0, 1, 2]
