"""A foreign bag (written with rosbags and standard Kilted types, as another tool would) maps onto observations
through a YAML topic mapping, and replays through the bag_replay node onto `observation` over real DDS.
"""
import threading

import numpy as np
import pytest

from bitrl_ros.bag.sources import iter_observations, read_observations
from bitrl_ros.bag.typestore import make_typestore
from bitrl_ros.envs import get_spec
from bitrl_ros.errors import BagError

N = 50                 # JointState messages at 20 Hz
PERIOD_NS = 50_000_000
T0_NS = 1_700_000_000_000_000_000
IMU_FROM = 2           # /imu_vec starts 10 ms before JointState number 2: records start there
JOINTS = ["j0", "j1", "j2"]

MAPPING = """\
observation:
  - {topic: /joint_states, type: sensor_msgs/msg/JointState, fields: [position, velocity], select: [j1]}
  - {topic: /imu_vec, type: std_msgs/msg/Float32MultiArray, fields: [data], select: [0, 2]}
reward: {topic: /reward, field: data}
sync: newest
"""


def _pos(i):
    return np.array([0.1 * i, 0.2 * i, 0.3 * i], np.float64)


def _vel(i):
    return np.array([-1.0 * i, -2.0 * i, -3.0 * i], np.float64)


def _imu(i):
    return np.array([i + 0.25, 100.0 + i, i + 0.5], np.float32)


def _expected():
    """(values, reward, t_ns, stamp_ns) per mapped record; the newest /imu_vec and /reward at each JointState."""
    out = []
    for i in range(IMU_FROM, N):
        vals = np.array([_pos(i)[1], _vel(i)[1], _imu(i)[0], _imu(i)[2]], np.float32)
        out.append((vals, float(i) * 0.5, T0_NS + i * PERIOD_NS, 5_000_000_000 + i * PERIOD_NS))
    return out


def _write_foreign(path):
    from rosbags.rosbag2 import Writer

    ts = make_typestore()
    T, H = ts.types["builtin_interfaces/msg/Time"], ts.types["std_msgs/msg/Header"]
    JS, FMA = ts.types["sensor_msgs/msg/JointState"], ts.types["std_msgs/msg/Float32MultiArray"]
    Layout, Dim = ts.types["std_msgs/msg/MultiArrayLayout"], ts.types["std_msgs/msg/MultiArrayDimension"]
    F32 = ts.types["std_msgs/msg/Float32"]
    with Writer(path, version=9) as w:
        cj = w.add_connection("/joint_states", JS.__msgtype__, typestore=ts)
        ci = w.add_connection("/imu_vec", FMA.__msgtype__, typestore=ts)
        cr = w.add_connection("/reward", F32.__msgtype__, typestore=ts)
        for i in range(N):
            t = T0_NS + i * PERIOD_NS
            if i >= IMU_FROM:
                layout = Layout(dim=[Dim(label="imu", size=3, stride=3)], data_offset=0)
                w.write(ci, t - 10_000_000, ts.serialize_cdr(FMA(layout=layout, data=_imu(i)), FMA.__msgtype__))
            w.write(cr, t - 5_000_000, ts.serialize_cdr(F32(data=np.float32(i * 0.5)), F32.__msgtype__))
            sec, nsec = divmod(5_000_000_000 + i * PERIOD_NS, 1_000_000_000)
            js = JS(header=H(stamp=T(sec=sec, nanosec=nsec), frame_id="base"), name=JOINTS,
                    position=_pos(i), velocity=_vel(i), effort=np.zeros(3))
            w.write(cj, t, ts.serialize_cdr(js, JS.__msgtype__))
    return path


@pytest.fixture
def foreign(tmp_path):
    bag = _write_foreign(tmp_path / "foreign")
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING)
    return bag, mapping


def _check(records):
    exp = _expected()
    assert len(records) == len(exp) == N - IMU_FROM
    for k, (r, (vals, rew, t_ns, stamp)) in enumerate(zip(records, exp)):
        assert (r.episode, r.step) == (0, k)
        np.testing.assert_array_equal(r.values, vals)
        assert r.values.dtype == np.float32
        assert r.reward == pytest.approx(rew)
        assert r.t_ns == t_ns and r.stamp_ns == stamp
        assert not (r.terminated or r.truncated)


def test_mapping_yields_observations(foreign):
    bag, mapping = foreign
    records = list(iter_observations(bag, mapping=mapping))
    _check(records)
    assert len(records[0].values) == get_spec("CartPole-v1").obs_dim
    # the same mapping as a dict, and the example mapping file shape
    import yaml
    _check(read_observations(bag, mapping=yaml.safe_load(MAPPING)))


def test_example_mapping_file_loads():
    from bitrl_ros.bag.foreign import load_mapping

    m = load_mapping("config/foreign_bag.example.yaml")
    assert [e["topic"] for e in m["observation"]] == ["/joint_states", "/imu_vec"]


def test_bad_mapping_names_file_and_key(foreign, tmp_path):
    bag, _ = foreign
    bad_topic = tmp_path / "bad_topic.yaml"
    bad_topic.write_text(MAPPING.replace("/imu_vec", "/imu_nope"))
    with pytest.raises(BagError) as e:
        list(iter_observations(bag, mapping=bad_topic))
    assert "bad_topic.yaml" in str(e.value) and "/imu_nope" in str(e.value) and "observation[1]" in str(e.value)

    bad_field = tmp_path / "bad_field.yaml"
    bad_field.write_text(MAPPING.replace("[position, velocity]", "[position, torque]"))
    with pytest.raises(BagError) as e:
        list(iter_observations(bag, mapping=bad_field))
    assert "bad_field.yaml" in str(e.value) and "'torque'" in str(e.value) and "/joint_states" in str(e.value)

    no_obs = tmp_path / "no_obs.yaml"
    no_obs.write_text("reward: {topic: /reward}\n")
    with pytest.raises(BagError, match="no_obs.yaml.*'observation'"):
        list(iter_observations(bag, mapping=no_obs))


def test_foreign_bag_replays_over_dds(foreign):
    import rclpy
    from rclpy.parameter import Parameter

    from bitrl_msgs.msg import Observation
    from bitrl_ros.nodes.bag_replay import BagReplayNode
    from bitrl_ros.nodes.base import PIPELINE_QOS
    from ros_harness import InProcessGraph, unique_ns, wait_for

    bag, mapping = foreign
    ns = unique_ns("foreign")
    seen, lock = [], threading.Lock()

    def watch(ctx):
        node = rclpy.node.Node("watch", namespace=ns, context=ctx)
        qos = rclpy.qos.QoSProfile(depth=1000, reliability=PIPELINE_QOS.reliability)

        def cb(m):
            with lock:
                seen.append((m.episode, m.step, np.asarray(m.values, np.float32), m.reward,
                             m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec, m.header.frame_id))
        node.create_subscription(Observation, "observation", cb, qos)
        return node

    params = [Parameter("bag", value=str(bag)), Parameter("mapping", value=str(mapping)),
              Parameter("rate", value=100.0), Parameter("publish_clock", value=False)]
    watcher = InProcessGraph(watch)
    try:
        player = InProcessGraph(lambda ctx: BagReplayNode(context=ctx, namespace=ns, parameter_overrides=params))
        try:
            assert player.node.finished.wait(15.0), "replay did not finish"
            assert wait_for(lambda: len(seen) >= N - IMU_FROM, timeout=5.0)
        finally:
            player.close()
    finally:
        watcher.close()
    assert player.node.replayed == N - IMU_FROM
    exp = _expected()
    assert len(seen) == len(exp)
    for k, ((ep, st, vals, rew, stamp, frame), (evals, erew, _, estamp)) in enumerate(zip(seen, exp)):
        assert (ep, st) == (0, k)
        np.testing.assert_array_equal(vals, evals)
        assert rew == pytest.approx(erew) and stamp == estamp and frame == "CartPole-v1"
