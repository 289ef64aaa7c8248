"""bitrl_msgs: every interface imports, has the agreed fields, round-trips through CDR, and travels over DDS.

bitrl_msgs is built into .venv by scripts/build_msgs.sh (part of `make setup`).
"""

import array
import math
import os
import time

import numpy as np
import pytest

try:
    from bitrl_msgs.msg import Action, EncodedState, Observation, SerializedState, TrainingStats
    from bitrl_msgs.srv import ResetEpisode, SaveCheckpoint
except ImportError as exc:  # the source folder bitrl_msgs/ alone imports as an empty namespace package
    raise ImportError(f"bitrl_msgs is not built into this environment ({exc}): run scripts/build_msgs.sh") from exc

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Header

EXPECTED_FIELDS = {
    Observation: {
        "header": "std_msgs/Header", "episode": "uint32", "step": "uint32", "values": "sequence<float>",
        "mission": "string", "reward": "float", "terminated": "boolean", "truncated": "boolean",
    },
    SerializedState: {
        "header": "std_msgs/Header", "episode": "uint32", "step": "uint32", "text": "string",
        "token_ids": "sequence<int32>", "truncated_tokens": "uint32", "token_fields": "sequence<int32>",
    },
    EncodedState: {
        "header": "std_msgs/Header", "episode": "uint32", "step": "uint32", "embedding": "sequence<float>",
        "observation": "sequence<float>", "encode_ms": "float", "backbone_id": "string", "readout": "string",
        "cache_hit": "boolean",
    },
    Action: {
        "header": "std_msgs/Header", "episode": "uint32", "step": "uint32", "discrete": "int32",
        "continuous": "sequence<float>", "log_prob": "float", "value": "float", "safe_action": "boolean",
        "policy_version": "uint32",
    },
    TrainingStats: {
        "header": "std_msgs/Header", "update": "uint32", "global_step": "uint64", "episodes": "uint32",
        **dict.fromkeys(("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "grad_norm",
                         "explained_variance", "mean_return", "steps_per_second", "update_ms"), "float"),
    },
    ResetEpisode.Request: {"seed": "uint32", "use_seed": "boolean"},
    ResetEpisode.Response: {"success": "boolean", "message": "string", "episode": "uint32"},
    SaveCheckpoint.Request: {"path": "string"},
    SaveCheckpoint.Response: {"success": "boolean", "message": "string", "path": "string"},
}


def _header(frame="cartpole", sec=12, nanosec=345):
    h = Header(frame_id=frame)
    h.stamp.sec, h.stamp.nanosec = sec, nanosec
    return h


def _roundtrip(msg):
    data = serialize_message(msg)
    assert isinstance(data, bytes) and len(data) > 0
    return deserialize_message(data, type(msg))


def _filled():
    """One fully filled instance of every message and service part (floats exact in float32, so == holds)."""
    return [
        Observation(header=_header(), episode=3, step=17, values=[0.5, -1.25, 2.0**-10, 1e6],
                    mission="go to the red ball", reward=1.0, terminated=False, truncated=True),
        SerializedState(header=_header(), episode=3, step=17, text="x:0.50 v:-1.25", token_ids=[101, 7, -1, 2**31 - 1],
                        truncated_tokens=2, token_fields=[-1, 0, 0, -1]),
        EncodedState(header=_header(), episode=3, step=17, embedding=np.linspace(-1, 1, 384, dtype=np.float32),
                     observation=[0.5, -1.25], encode_ms=2.5, backbone_id="minilm-ternary-ptq", readout="mean",
                     cache_hit=True),
        Action(header=_header(), episode=3, step=17, discrete=1, continuous=[0.25, -0.75], log_prob=-0.6875,
               value=12.5, safe_action=True, policy_version=9),
        TrainingStats(header=_header(), update=4, global_step=2**40 + 5, episodes=120, policy_loss=-0.015625,
                      value_loss=3.25, entropy=0.6875, approx_kl=2.0**-8, clip_fraction=0.125, grad_norm=0.5,
                      explained_variance=0.8125, mean_return=187.5, steps_per_second=1234.0, update_ms=85.0),
        ResetEpisode.Request(seed=2**32 - 1, use_seed=True),
        ResetEpisode.Response(success=True, message="reset", episode=4),
        SaveCheckpoint.Request(path=""),
        SaveCheckpoint.Response(success=False, message="disk full: /tmp/ckpt", path="/tmp/ckpt"),
    ]


def test_fields_match_the_agreed_interfaces():
    for cls, fields in EXPECTED_FIELDS.items():
        assert cls.get_fields_and_field_types() == fields, cls.__name__


def test_defaults():
    o = Observation()
    assert (o.episode, o.step, o.mission, o.reward, o.terminated, o.truncated) == (0, 0, "", 0.0, False, False)
    assert isinstance(o.values, array.array) and o.values.typecode == "f" and len(o.values) == 0
    assert isinstance(o.header, Header) and o.header.frame_id == "" and o.header.stamp.sec == 0
    s = SerializedState()
    assert s.token_ids.typecode == "i" and len(s.token_ids) == 0 and s.truncated_tokens == 0 and s.text == ""
    e = EncodedState()
    assert len(e.embedding) == 0 and len(e.observation) == 0 and e.backbone_id == "" and e.cache_hit is False
    a = Action()
    assert a.discrete == 0 and len(a.continuous) == 0 and a.safe_action is False and a.policy_version == 0
    t = TrainingStats()
    assert t.global_step == 0 and t.update == 0 and t.mean_return == 0.0
    assert ResetEpisode.Request().use_seed is False and SaveCheckpoint.Request().path == ""
    assert ResetEpisode.Response().success is False and SaveCheckpoint.Response().path == ""


def test_field_types_are_checked():
    o = Observation()
    o.values = np.array([1.0, 2.0], dtype=np.float32)  # numpy in, array.array out: no copy to a list needed
    assert isinstance(o.values, array.array) and list(o.values) == [1.0, 2.0]
    # Kilted checks types and ranges only with check_fields=True (or ROS_PYTHON_CHECK_FIELDS=1); without it an
    # out-of-range integer is silently truncated on serialization, so nodes must validate what they fill in.
    o = Observation(check_fields=True)
    with pytest.raises(AssertionError):
        o.episode = -1  # uint32
    with pytest.raises(AssertionError):
        o.mission = 3
    with pytest.raises(AssertionError):
        Action(check_fields=True).discrete = 2**31  # int32
    t = TrainingStats(check_fields=True)
    with pytest.raises(AssertionError):
        t.global_step = 2**64  # uint64
    t.global_step = 2**64 - 1
    assert _roundtrip(t).global_step == 2**64 - 1


def test_serialize_roundtrip_every_interface():
    for msg in _filled():
        back = _roundtrip(msg)
        assert back == msg, type(msg).__name__
    obs = _roundtrip(_filled()[0])
    assert obs.header.frame_id == "cartpole" and obs.header.stamp.nanosec == 345
    assert list(obs.values) == [0.5, -1.25, 2.0**-10, 1e6]
    assert _roundtrip(_filled()[4]).global_step == 2**40 + 5
    assert _roundtrip(_filled()[5]).seed == 2**32 - 1
    # float32 keeps non-finite values: validation is the nodes' job, not the transport's.
    nan = _roundtrip(Observation(values=[math.nan, math.inf]))
    assert math.isnan(nan.values[0]) and nan.values[1] == math.inf


def test_publish_subscribe_observation_over_dds():
    """Talker and listener in two rclpy contexts, i.e. two DDS participants: a real discovery + transport trip."""
    saved = {k: os.environ.get(k) for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID")}
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = os.environ.get("BITRL_TEST_DOMAIN_ID", "87")
    domain_id = int(os.environ["ROS_DOMAIN_ID"])
    topic = f"bitrl_test_observation_{os.getpid()}"  # unique: concurrent test runs may share the domain
    talker_ctx, listener_ctx = rclpy.Context(), rclpy.Context()
    rclpy.init(context=talker_ctx, domain_id=domain_id)
    rclpy.init(context=listener_ctx, domain_id=domain_id)
    try:
        talker = rclpy.create_node("bitrl_msgs_test_talker", context=talker_ctx)
        listener = rclpy.create_node("bitrl_msgs_test_listener", context=listener_ctx)
        executor = SingleThreadedExecutor(context=listener_ctx)
        executor.add_node(listener)
        received = []
        listener.create_subscription(Observation, topic, received.append, 10)
        pub = talker.create_publisher(Observation, topic, 10)

        deadline = time.monotonic() + 10.0
        while (pub.get_subscription_count() == 0 or listener.count_publishers(topic) == 0) and \
                time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert pub.get_subscription_count() > 0, "subscription not matched within 10 s (DDS discovery on localhost)"
        assert listener.count_publishers(topic) > 0, "publisher not discovered by the listener within 10 s"

        sent = _filled()[0]
        sent.header.stamp = talker.get_clock().now().to_msg()
        pub.publish(sent)
        deadline = time.monotonic() + 10.0
        while not received and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert received, "published Observation not received within 10 s"
        assert received[0] == sent
        assert received[0].mission == "go to the red ball" and received[0].truncated is True
        executor.shutdown()
        talker.destroy_node()
        listener.destroy_node()
    finally:
        rclpy.shutdown(context=talker_ctx)
        rclpy.shutdown(context=listener_ctx)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
