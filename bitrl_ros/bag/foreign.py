"""Foreign bags (standard messages recorded by other tools) -> ObsRecords through a YAML topic mapping.

    observation:
      - {topic: /joint_states, type: sensor_msgs/msg/JointState, fields: [position, velocity], select: [0, 1]}
      - {topic: /imu_vec, type: std_msgs/msg/Float32MultiArray, fields: [data]}
    reward: {topic: /reward, field: data}     # optional
    sync: newest                              # newest of each topic at the pace of the first topic

Every message of the first observation topic emits one ObsRecord: the concatenation of the newest message of
each mapped topic (records start once every topic has been seen). `select` keeps entries by index or, for
messages with a `name` list (JointState), by joint name. All records belong to episode 0, step = index.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bitrl_ros.bag.reader import open_bag
from bitrl_ros.bag.records import ObsRecord, stamp_ns, topic_matches
from bitrl_ros.errors import BagError


def _source(mapping) -> str:
    return f"bag mapping {mapping}" if isinstance(mapping, (str, Path)) else "bag mapping"


def load_mapping(mapping) -> dict:
    source = _source(mapping)
    if isinstance(mapping, (str, Path)):
        from bitrl_ros.config import read_yaml
        mapping = read_yaml(mapping)
    if not isinstance(mapping, dict) or not mapping.get("observation"):
        raise BagError(f"{source}: needs an 'observation' list of {{topic, fields}} entries, got {mapping!r}")
    return mapping


def _vector(msg, entry, where: str) -> np.ndarray:
    parts = []
    for f in entry.get("fields", ["data"]):
        if not hasattr(msg, f):
            raise BagError(f"{where}.fields: {entry['topic']} ({getattr(msg, '__msgtype__', type(msg).__name__)}) "
                           f"has no field {f!r}")
        v = np.atleast_1d(np.asarray(getattr(msg, f), dtype=np.float32))
        sel = entry.get("select")
        if sel:
            names = list(getattr(msg, "name", []) or [])
            idx = [names.index(s) if isinstance(s, str) else int(s) for s in sel]
            v = v[idx]
        parts.append(v)
    return np.concatenate(parts).astype(np.float32)


def iter_mapped_observations(path, mapping):
    source = _source(mapping)
    m = load_mapping(mapping)
    entries = m["observation"]
    reward = m.get("reward")
    topics = [e["topic"] for e in entries] + ([reward["topic"]] if reward else [])
    newest: list = [None] * len(entries)
    last_reward = 0.0
    step = 0
    with open_bag(path) as bag:
        for k, e in enumerate(entries):
            if not bag.select([e["topic"]]):
                raise BagError(f"{source}: observation[{k}].topic {e['topic']!r} is not in bag {bag.path} "
                               f"(topics: {', '.join(bag.topics)})")
        for topic, t_ns, msg in bag.messages(topics):
            if reward and topic_matches(topic, reward["topic"]):
                last_reward = float(getattr(msg, reward.get("field", "data")))
                continue
            i = next(k for k, e in enumerate(entries) if topic_matches(topic, e["topic"]))
            newest[i] = _vector(msg, entries[i], f"{source}: observation[{i}]")
            if i != 0 or any(v is None for v in newest):
                continue
            header = getattr(msg, "header", None)
            yield ObsRecord(t_ns=t_ns, episode=0, step=step, values=np.concatenate(newest), reward=last_reward,
                            stamp_ns=stamp_ns(header) if header is not None else None)
            step += 1
