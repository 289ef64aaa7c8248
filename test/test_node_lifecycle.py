"""The managed (lifecycle) nodes: ternary_encoder and policy_value through configure / activate / deactivate /
cleanup in order, refusals out of order (from this process and through the standard change_state service),
policy_value resuming its checkpoint at configure, and the safe action at deactivate. Real rclpy and DDS.
"""
from __future__ import annotations

import time

from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
import numpy as np
import pytest
from rclpy.node import Node

from bitrl_msgs.msg import EncodedState, SerializedState
from bitrl_ros.backbone import load_tokenizer
from bitrl_ros.errors import BitrlError
from bitrl_ros.nodes.managed import LifecycleError
from bitrl_ros.nodes.ternary_encoder import TernaryEncoderNode
from ros_harness import InProcessGraph, unique_ns, wait_for
from test_node_policy_value import harness, run_cartpole, SMALL_PPO  # noqa: F401 (harness is a fixture)
from test_node_serializer_encoder import _pair, _params, BACKBONE

QUIET_S = 0.5  # how long a stopped node is watched for messages it must not send


def _state(probe, step: int) -> None:
    ids = load_tokenizer(BACKBONE).encode_batch(["1 2 3 4"], 64)[0]
    msg = SerializedState(episode=0, step=step, text="1 2 3 4")
    msg.token_ids = ids
    probe.node.pub.publish(msg)


def test_encoder_goes_through_its_transitions_in_order_and_refuses_them_out_of_order():
    params = _params(backbone=BACKBONE, pooling="mean", autostart=False)
    enc, probe = _pair(TernaryEncoderNode, unique_ns("lc_enc"), params,
                       (SerializedState, "serialized_state", EncodedState, "encoded_state"))
    try:
        node = enc.node
        assert node.lifecycle_state == "unconfigured" and node.backbone is None  # nothing loaded yet
        _state(probe, 0)
        time.sleep(QUIET_S)
        assert probe.node.received == []
        with pytest.raises(LifecycleError, match=r"cannot activate while unconfigured \(allowed: configure, "
                                                 r"shutdown\)"):
            node.change("activate")
        node.change("configure")
        assert node.lifecycle_state == "inactive" and node.backbone is not None and node.feature_dim == 384
        _state(probe, 1)
        time.sleep(QUIET_S)
        assert probe.node.received == []  # configured but inactive: nothing encoded
        with pytest.raises(LifecycleError, match="cannot configure while inactive"):
            node.change("configure")
        node.change("activate")
        _state(probe, 2)
        assert wait_for(lambda: len(probe.node.received) == 1)
        assert probe.node.received[0].step == 2 and len(probe.node.received[0].embedding) == 384
        node.change("deactivate")
        _state(probe, 3)
        time.sleep(QUIET_S)
        assert len(probe.node.received) == 1
        node.change("cleanup")
        assert node.lifecycle_state == "unconfigured" and node.backbone is None  # freed
        node.change("configure")  # and loads again
        node.change("activate")
        _state(probe, 4)
        assert wait_for(lambda: len(probe.node.received) == 2)
    finally:
        probe.close()
        enc.close()


def test_a_failing_configure_leaves_the_node_unconfigured_with_the_reason():
    enc = InProcessGraph(lambda ctx: TernaryEncoderNode(context=ctx, namespace=unique_ns("lc_bad"),
                                                        parameter_overrides=_params(backbone="/no/such/model",
                                                                                    autostart=False)))
    try:
        with pytest.raises(BitrlError, match="ternary_encoder: invalid value for 'backbone'"):
            enc.node.change("configure")
        assert enc.node.lifecycle_state == "unconfigured"
        assert "backbone" in str(enc.node.transition_error)
    finally:
        enc.close()


class LifecycleClient(Node):
    def __init__(self, target: str, **kw):
        super().__init__("lifecycle_client", **kw)
        self.change = self.create_client(ChangeState, f"{target}/change_state")
        self.get = self.create_client(GetState, f"{target}/get_state")

    def call(self, client, request):
        assert client.wait_for_service(timeout_sec=15)
        future = client.call_async(request)
        assert wait_for(future.done)
        return future.result()

    def transition(self, transition_id: int) -> bool:
        return self.call(self.change, ChangeState.Request(transition=Transition(id=transition_id))).success

    def state(self) -> str:
        return self.call(self.get, GetState.Request()).current_state.label


def test_transitions_through_the_change_state_service_as_a_lifecycle_manager_drives_them():
    ns = unique_ns("lc_srv")
    enc = InProcessGraph(lambda ctx: TernaryEncoderNode(context=ctx, namespace=ns, parameter_overrides=_params(
        backbone=BACKBONE, pooling="mean", autostart=False)))
    client = InProcessGraph(lambda ctx: LifecycleClient(f"/{ns}/ternary_encoder", context=ctx, namespace=ns))
    try:
        c = client.node
        assert c.state() == "unconfigured"
        assert not c.transition(Transition.TRANSITION_ACTIVATE)  # out of order: refused
        assert c.state() == "unconfigured"
        assert c.transition(Transition.TRANSITION_CONFIGURE) and c.state() == "inactive"
        assert c.transition(Transition.TRANSITION_ACTIVATE) and c.state() == "active"
        assert enc.node.active and enc.node.backbone is not None
        assert c.transition(Transition.TRANSITION_DEACTIVATE) and c.state() == "inactive"
        assert c.transition(Transition.TRANSITION_CLEANUP) and c.state() == "unconfigured"
        assert enc.node.backbone is None
    finally:
        client.close()
        enc.close()


@pytest.mark.slow
def test_policy_configure_resumes_the_checkpoint_before_any_state(harness, tmp_path):  # noqa: F811
    ckpt = tmp_path / "checkpoint"
    h = harness("t_lc_pv_train", checkpoint_dir=str(ckpt), **SMALL_PPO)
    run_cartpole(h, 200, stop=lambda: bool(h.stats))
    assert wait_for(lambda: h.node.updates >= 1 and not h.node.learner.updating)
    h2 = harness("t_lc_pv_resume", checkpoint_dir=str(ckpt), autostart=False, **SMALL_PPO)
    assert h2.node.learner is None
    h2.node.change("configure")  # no state has arrived: the heads come from the layout the checkpoint records
    assert h2.node.learner is not None and h2.node.restored["updates"] >= 1
    assert h2.node.layout.readout == "mean" and h2.node.layout.embedding_dim == 8
    h2.node.change("activate")
    h2.send(3, 0, [0.0, 0.0, 0.01, 0.0])
    assert not h2.action_for(3, 0).safe_action
    # a checkpoint whose layout these parameters do not give: configure refuses it, the node stays unconfigured
    h3 = harness("t_lc_pv_mismatch", checkpoint_dir=str(ckpt), autostart=False, raw_skip=True, **SMALL_PPO)
    with pytest.raises(BitrlError, match="raw"):
        h3.node.change("configure")
    assert h3.node.lifecycle_state == "unconfigured" and h3.node.learner is None


def test_policy_deactivate_publishes_the_safe_action_and_stops_acting(harness, tmp_path):  # noqa: F811
    h = harness("t_lc_pv_deact", checkpoint_dir=str(tmp_path / "checkpoint"), autostart=False, **SMALL_PPO)
    h.send(0, 0, [0.0, 0.0, 0.01, 0.0])
    time.sleep(QUIET_S)
    assert h.actions == []  # unconfigured: no action
    h.node.change("configure")
    h.node.change("activate")
    h.send(0, 1, [0.0, 0.0, 0.01, 0.0])
    assert not h.action_for(0, 1).safe_action
    h.node.change("deactivate")
    assert wait_for(lambda: any(a.safe_action for a in h.actions))
    count = len(h.actions)
    h.send(0, 2, [0.0, 0.0, 0.01, 0.0])
    time.sleep(QUIET_S)
    assert len(h.actions) == count  # inactive: not acted on
    assert np.isfinite(h.node.global_step)
    h.node.change("cleanup")  # writes the checkpoint, frees the heads
    assert (tmp_path / "checkpoint" / "state.json").is_file() and h.node.learner is None
