"""Broken bags give a BagError naming the file; a recorder killed with SIGKILL leaves a bag that
`reindex` (bitrl bag reindex) makes readable, holding everything flushed before the kill.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from bitrl_ros.bag.reader import open_bag
from bitrl_ros.bag.recorder import BagRecorder, make_qos, reindex
from bitrl_ros.bag.sources import read_observations
from bitrl_ros.bag.typestore import make_typestore
from bitrl_ros.errors import BagError


def _obs(i):
    ts = make_typestore()
    T, H, Obs = (ts.types[n] for n in ("builtin_interfaces/msg/Time", "std_msgs/msg/Header",
                                       "bitrl_msgs/msg/Observation"))
    return Obs(header=H(stamp=T(sec=i, nanosec=0), frame_id="CartPole-v1"), episode=0, step=i,
               values=np.full(4, i, np.float32), mission="", reward=1.0, terminated=False, truncated=False)


def _write(path, storage, n=200):
    with BagRecorder(path, storage) as rec:
        rec.add_topic("/observation", "bitrl_msgs/msg/Observation", make_qos(depth=5))
        for i in range(n):
            rec.write_message("/observation", 1_000 + i, _obs(i))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_roundtrip(tmp_path, storage):
    _write(tmp_path / "b", storage)
    obs = read_observations(tmp_path / "b")
    assert [o.step for o in obs] == list(range(200))
    assert obs[7].values.dtype == np.float32 and obs[7].values[0] == 7


def test_truncated_mcap(tmp_path):
    _write(tmp_path / "b", "mcap", n=2000)
    f = tmp_path / "b" / "b.mcap"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(BagError, match="b.mcap") as e:
        read_observations(tmp_path / "b")
    assert "truncated or corrupt" in str(e.value)


def test_garbage_db3(tmp_path):
    _write(tmp_path / "b", "sqlite3")
    (tmp_path / "b" / "b.db3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(BagError, match="b.db3"):
        read_observations(tmp_path / "b")


def test_missing_metadata(tmp_path):
    _write(tmp_path / "b", "mcap")
    (tmp_path / "b" / "metadata.yaml").unlink()
    with pytest.raises(BagError, match="missing metadata.yaml") as e:
        open_bag(tmp_path / "b")
    assert str(tmp_path / "b") in str(e.value) and "reindex" in str(e.value)


def test_missing_path_and_wrong_topic(tmp_path):
    with pytest.raises(BagError, match="does not exist"):
        open_bag(tmp_path / "nope")
    _write(tmp_path / "b", "mcap", n=3)
    with pytest.raises(BagError, match="no topic 'action'"):
        from bitrl_ros.bag.reader import read_actions
        read_actions(tmp_path / "b")


def test_unknown_type(tmp_path):
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore
    from rosbags.typesys.msg import get_types_from_msg

    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg("int32 x", "acme_msgs/msg/Thing"))
    with Writer(tmp_path / "b", version=9) as w:
        c = w.add_connection("/thing", "acme_msgs/msg/Thing", msgdef="", rihs01="RIHS01_00")
        w.write(c, 1, store.serialize_cdr(store.types["acme_msgs/msg/Thing"](x=1), "acme_msgs/msg/Thing"))
    with pytest.raises(BagError, match="unknown message type 'acme_msgs/msg/Thing'"):
        list(open_bag(tmp_path / "b").messages(["/thing"]))


KILLED = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    import numpy as np
    from bitrl_ros.bag.recorder import BagRecorder, make_qos
    from bitrl_ros.bag.typestore import make_typestore
    ts = make_typestore()
    T, H, O = (ts.types[n] for n in ("builtin_interfaces/msg/Time", "std_msgs/msg/Header",
                                     "bitrl_msgs/msg/Observation"))
    def _obs(i):
        return O(header=H(stamp=T(sec=i, nanosec=0), frame_id="x"), episode=0, step=i,
                 values=np.full(4, i, np.float32), mission="", reward=1.0, terminated=False, truncated=False)
    rec = BagRecorder({path!r}, {storage!r}, flush_interval_s=0.05)
    rec.add_topic("/observation", "bitrl_msgs/msg/Observation", make_qos(depth=5))
    i = 0
    while True:
        rec.write_message("/observation", 1000 + i, _obs(i))
        i += 1
        if i == 300:
            print("ready", flush=True)
        time.sleep(0.001 if i < 300 else 0.01)
""")


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_sigkill_then_reindex(tmp_path, storage):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", KILLED.format(root=root, path=str(path), storage=storage)],
                            stdout=subprocess.PIPE, cwd=root)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.3)  # past several flush intervals
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    with pytest.raises(BagError, match="missing metadata.yaml.*reindex"):
        open_bag(path)
    info = reindex(path)
    assert info["messages"] >= 300
    obs = read_observations(path)
    assert len(obs) == info["messages"]
    assert [o.step for o in obs] == list(range(len(obs)))  # a prefix of what was written, nothing garbled
    with open_bag(path) as bag:
        assert bag.topics["/observation"] == ("bitrl_msgs/msg/Observation", len(obs))
        assert bag.connections[0].msgdef.data.startswith("std_msgs/Header header")
    assert reindex(path)["messages"] == len(obs)  # idempotent
