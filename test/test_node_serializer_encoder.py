"""state_serializer and ternary_encoder, each alone on real DDS (localhost) with real messages."""
from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from bitrl_msgs.msg import EncodedState, Observation, SerializedState  # noqa: E402
from bitrl_ros.backbone import load_backbone, load_tokenizer  # noqa: E402
from bitrl_ros.errors import ConfigError  # noqa: E402
from bitrl_ros.nodes.base import PIPELINE_QOS  # noqa: E402
from bitrl_ros.nodes.state_serializer import StateSerializerNode  # noqa: E402
from bitrl_ros.nodes.ternary_encoder import TernaryEncoderNode  # noqa: E402
from bitrl_ros.serialize import get_serializer  # noqa: E402
from ros_harness import InProcessGraph, unique_ns, wait_for  # noqa: E402

BACKBONE = "minilm-ternary-ptq"


class Probe(Node):
    """Publishes `in_type` on `in_topic`, records every `out_type` arriving on `out_topic`."""

    def __init__(self, ns, in_type, in_topic, out_type, out_topic, **kw):
        super().__init__("probe", namespace=ns, **kw)
        self.received = []
        self.pub = self.create_publisher(in_type, in_topic, PIPELINE_QOS)
        self.sub = self.create_subscription(out_type, out_topic, self.received.append, PIPELINE_QOS)

    def matched(self) -> bool:
        return self.pub.get_subscription_count() >= 1 and self.sub.get_publisher_count() >= 1


def _params(**values):
    return [Parameter(k, value=v) for k, v in values.items()]


def _obs(values, episode=0, step=0, **kw):
    msg = Observation(episode=episode, step=step, **kw)
    msg.header.stamp.sec, msg.header.stamp.nanosec = 100 + step, 5000
    msg.header.frame_id = "CartPole-v1"
    msg.values = [float(v) for v in values]
    return msg


def _endpoints_matched(node: Node, in_topic: str, out_topic: str) -> bool:
    """The node's own subscription on ``in_topic`` has matched a publisher and its publisher on ``out_topic`` a
    subscriber. Discovery is not symmetric: on a loaded machine one side can match before the other, and a
    volatile writer that has not matched a reader yet drops what it writes.
    """
    def last(name):
        return name.rsplit("/", 1)[-1]
    return (any(s.get_publisher_count() >= 1 for s in node.subscriptions if last(s.topic_name) == in_topic)
            and any(p.get_subscription_count() >= 1 for p in node.publishers if last(p.topic_name) == out_topic))


def _pair(node_cls, ns, overrides, probe_args):
    under_test = InProcessGraph(lambda ctx: node_cls(context=ctx, namespace=ns, parameter_overrides=overrides))
    probe = InProcessGraph(lambda ctx: Probe(ns, *probe_args, context=ctx))
    if not wait_for(lambda: probe.node.matched() and _endpoints_matched(under_test.node, probe_args[1], probe_args[3])):
        probe.close()
        under_test.close()
        pytest.fail("publishers/subscribers did not match within the wait")
    return under_test, probe


@pytest.fixture
def serializer_pair():
    made = []

    def make(**overrides):
        ns = unique_ns("ser")
        pair = _pair(StateSerializerNode, ns, _params(**{"env": "CartPole-v1", "backbone": BACKBONE, **overrides}),
                     (Observation, "observation", SerializedState, "serialized_state"))
        made.extend(pair)
        return pair

    yield make
    for s in reversed(made):
        s.close()


def test_serializer_publishes_text_and_token_ids(serializer_pair):
    node, probe = (s.node for s in serializer_pair())
    ser = get_serializer("CartPole-v1", "compact", None)
    tok = load_tokenizer(BACKBONE)
    states = [[0.01, -0.2, 0.03, 0.4], [1.5, 0.0, -0.1, -2.25]]
    for step, values in enumerate(states):
        probe.pub.publish(_obs(values, episode=3, step=step, terminated=step == 1))
    assert wait_for(lambda: len(probe.received) == 2)
    for step, (values, out) in enumerate(zip(states, probe.received)):
        text = ser(np.array(values, dtype=np.float32).astype(np.float64))
        assert out.text == text
        assert list(out.token_ids) == tok.encode_batch([text], 64)[0]
        _, spans = ser.render(np.array(values, dtype=np.float32).astype(np.float64))
        assert list(out.token_fields) == tok.encode_aligned([text], [spans], 64)[1][0]
        assert sorted(set(out.token_fields)) == [-1, 0, 1, 2, 3]  # every field has tokens; specials have none
        assert (out.episode, out.step) == (3, step)
        assert (out.header.stamp.sec, out.header.stamp.nanosec, out.header.frame_id) == (100 + step, 5000,
                                                                                         "CartPole-v1")
        assert out.truncated_tokens == 0
    assert node.published_count == 2 and node.invalid_count == 0


def test_serializer_refuses_invalid_observations(serializer_pair):
    node, probe = (s.node for s in serializer_pair())
    probe.pub.publish(_obs([0.0, float("nan"), 0.0, 0.0], step=0))
    probe.pub.publish(_obs([0.0, 0.0, 0.0], step=1))       # wrong length
    probe.pub.publish(_obs([], step=2))                    # empty
    probe.pub.publish(_obs([0.0, 0.0, 0.0, 0.0], step=3))  # the marker: valid
    assert wait_for(lambda: len(probe.received) >= 1 and node.invalid_count >= 3)
    assert [m.step for m in probe.received] == [3]
    assert node.invalid_count == 3
    assert "is empty" in node.last_invalid_reason


def test_serializer_counts_truncated_tokens(serializer_pair):
    node, probe = (s.node for s in serializer_pair(format="structured", max_tokens=8))
    probe.pub.publish(_obs([0.01, -0.2, 0.03, 0.4]))
    assert wait_for(lambda: len(probe.received) == 1)
    out = probe.received[0]
    full = load_tokenizer(BACKBONE).count_tokens(out.text)
    assert len(out.token_ids) == 8 and out.truncated_tokens == full - 8 > 0
    assert node.truncated_count == 1 and node.truncated_tokens_total == full - 8


def test_serializer_mlp_backbone_publishes_text_without_tokens(serializer_pair):
    _, probe = (s.node for s in serializer_pair(backbone="mlp"))
    probe.pub.publish(_obs([0.01, -0.2, 0.03, 0.4]))
    assert wait_for(lambda: len(probe.received) == 1)
    assert probe.received[0].text and len(probe.received[0].token_ids) == 0


@pytest.mark.parametrize("name, value, allowed", [("format", "json", "compact | structured | natural"),
                                                  ("max_tokens", 1, "int in [4, 512]"),
                                                  ("precision", 9, "int in [-1, 6]")])
def test_serializer_refuses_invalid_parameters(name, value, allowed):
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        with pytest.raises(ConfigError) as err:
            StateSerializerNode(context=ctx, namespace=unique_ns("bad"), parameter_overrides=_params(**{name: value}))
        assert f"'{name}' = {value!r}" in str(err.value) and allowed in str(err.value)
    finally:
        rclpy.shutdown(context=ctx)


@pytest.mark.slow
def test_encoder_matches_backbone_and_reports_cache_hits():
    ns = unique_ns("enc")
    enc, probe = _pair(TernaryEncoderNode, ns, _params(backbone=BACKBONE, pooling="mean"),
                       (SerializedState, "serialized_state", EncodedState, "encoded_state"))
    try:
        node = enc.node
        assert node.feature_dim == 384
        reference = load_backbone(BACKBONE, cache_mb=0)
        ids = load_tokenizer(BACKBONE).encode_batch(["12 -3 40 7", "1 2 3 4"], 64)
        sent = [ids[0], ids[1], ids[0]]  # the third is the first state again: a cache hit
        for step, tokens in enumerate(sent):
            msg = SerializedState(episode=2, step=step, text="x")
            msg.header.stamp.sec = 7 + step
            msg.token_ids = tokens
            probe.node.pub.publish(msg)
        assert wait_for(lambda: len(probe.node.received) == 3)
        for step, (tokens, out) in enumerate(zip(sent, probe.node.received)):
            expect = reference.encode_tokens([tokens], "mean")[0]
            assert np.allclose(np.asarray(out.embedding), expect, atol=1e-5)
            assert (out.episode, out.step, out.header.stamp.sec) == (2, step, 7 + step)
            assert out.backbone_id == BACKBONE and out.encode_ms >= 0.0
        assert [m.cache_hit for m in probe.node.received] == [False, False, True]
        assert node.cache_stats()["hits"] == 1 and len(node.encode_ms) == 3
    finally:
        probe.close()
        enc.close()


@pytest.mark.slow
def test_encoder_with_a_critic_backbone_publishes_both_readouts():
    ns = unique_ns("encc")
    enc, probe = _pair(TernaryEncoderNode, ns, _params(backbone=BACKBONE, critic_backbone="minilm-int8",
                                                       pooling="mean"),
                       (SerializedState, "serialized_state", EncodedState, "encoded_state"))
    try:
        assert enc.node.feature_dim == 2 * 384
        tokens = load_tokenizer(BACKBONE).encode_batch(["12 -3 40 7"], 64)[0]
        probe.node.pub.publish(SerializedState(episode=0, step=0, text="x", token_ids=tokens))
        assert wait_for(lambda: len(probe.node.received) == 1)
        out = np.asarray(probe.node.received[0].embedding)
        policy = load_backbone(BACKBONE, cache_mb=0).encode_tokens([tokens], "mean")[0]
        critic = load_backbone("minilm-int8", cache_mb=0).encode_tokens([tokens], "mean")[0]
        assert np.allclose(out[:384], policy, atol=1e-5) and np.allclose(out[384:], critic, atol=1e-5)
    finally:
        probe.close()
        enc.close()


@pytest.mark.slow
@pytest.mark.parametrize("context", ["state", "field"])
def test_encoder_per_field_readout_uses_the_token_fields(context):
    ns = unique_ns("encf")
    enc, probe = _pair(TernaryEncoderNode, ns, _params(backbone=BACKBONE, readout="fields", context=context),
                       (SerializedState, "serialized_state", EncodedState, "encoded_state"))
    try:
        assert enc.node.feature_dim == 4 * 384
        reference = load_backbone(BACKBONE, cache_mb=0)
        ser, tok = get_serializer("CartPole-v1"), load_tokenizer(BACKBONE)
        text, spans = ser.render([0.02, -1.37, 0.11, -0.4])
        ids, fields = tok.encode_aligned([text], [spans], 64)
        msg = SerializedState(episode=0, step=0, text=text)
        msg.token_ids, msg.token_fields = ids[0], fields[0]
        probe.node.pub.publish(msg)
        bad = SerializedState(episode=0, step=1, text=text)
        bad.token_ids, bad.token_fields = ids[0], fields[0][:-1]  # an alignment that does not fit: dropped
        probe.node.pub.publish(bad)
        assert wait_for(lambda: len(probe.node.received) == 1 and enc.node.error_count == 1)
        np.testing.assert_allclose(np.asarray(probe.node.received[0].embedding),
                                   reference.encode_fields(ids, fields, 4, context)[0], atol=1e-5)
        assert probe.node.received[0].readout == "fields"
    finally:
        probe.close()
        enc.close()


def test_encoder_mlp_passes_through_with_empty_embedding():
    ns = unique_ns("encmlp")
    enc, probe = _pair(TernaryEncoderNode, ns, _params(backbone="mlp"),
                       (SerializedState, "serialized_state", EncodedState, "encoded_state"))
    try:
        probe.node.pub.publish(SerializedState(episode=1, step=4, text="1 2 3 4"))
        assert wait_for(lambda: len(probe.node.received) == 1)
        out = probe.node.received[0]
        assert len(out.embedding) == 0 and (out.episode, out.step) == (1, 4) and out.backbone_id == "mlp"
        assert enc.node.feature_dim == 0 and enc.node.cache_stats() == {}
    finally:
        probe.close()
        enc.close()
