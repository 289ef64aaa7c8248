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
    entries = mapping["observation"]
    if not isinstance(entries, list):
        raise BagError(f"{source}: 'observation' must be a list of {{topic, fields}} entries, got {entries!r}")
    for k, entry in enumerate(entries):
        _check_entry(entry, f"{source}: observation[{k}]", "fields", list)
    if mapping.get("reward") is not None:
        _check_entry(mapping["reward"], f"{source}: reward", "field", str)
    return mapping


def _check_entry(entry, where: str, fields_key: str, fields_type: type) -> None:
    """One mapped topic: a topic name, the message fields to read (names), an optional select list."""
    if not isinstance(entry, dict) or not isinstance(entry.get("topic"), str) or not entry["topic"]:
        raise BagError(f"{where}: needs a 'topic' name, got {entry!r}")
    fields = entry.get(fields_key)
    if fields is not None and not (isinstance(fields, fields_type) and (
            fields_type is str or (fields and all(isinstance(f, str) for f in fields)))):
        wanted = "a field name" if fields_type is str else "a list of field names"
        raise BagError(f"{where}.{fields_key}: must be {wanted}, got {fields!r}")
    select = entry.get("select")
    if select is not None and not (isinstance(select, list) and select and all(
            isinstance(s, (str, int)) and not isinstance(s, bool) for s in select)):
        raise BagError(f"{where}.select: must be a list of indices or joint names, got {select!r}")


def _vector(msg, entry, where: str) -> np.ndarray:
    parts = []
    for f in entry.get("fields", ["data"]):
        if not hasattr(msg, f):
            raise BagError(f"{where}.fields: {entry['topic']} ({getattr(msg, '__msgtype__', type(msg).__name__)}) "
                           f"has no field {f!r}")
        try:
            v = np.atleast_1d(np.asarray(getattr(msg, f), dtype=np.float32))
        except (TypeError, ValueError):
            raise BagError(f"{where}.fields: {entry['topic']} field {f!r} is not numeric") from None
        sel = entry.get("select")
        if sel:
            names = list(getattr(msg, "name", []) or [])
            try:
                v = v[[names.index(s) if isinstance(s, str) else s for s in sel]]
            except (ValueError, IndexError):
                raise BagError(f"{where}.select: {sel!r} does not match {entry['topic']}'s {v.size} values "
                               f"(names: {names})") from None
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
                field = reward.get("field", "data")
                try:
                    last_reward = float(getattr(msg, field))
                except (AttributeError, TypeError, ValueError):
                    raise BagError(f"{source}: reward.field: {reward['topic']} "
                                   f"({getattr(msg, '__msgtype__', type(msg).__name__)}) has no numeric field "
                                   f"{field!r}") from None
                continue
            i = next(k for k, e in enumerate(entries) if topic_matches(topic, e["topic"]))
            newest[i] = _vector(msg, entries[i], f"{source}: observation[{i}]")
            if i != 0 or any(v is None for v in newest):
                continue
            header = getattr(msg, "header", None)
            yield ObsRecord(t_ns=t_ns, episode=0, step=step, values=np.concatenate(newest), reward=last_reward,
                            stamp_ns=stamp_ns(header) if header is not None else None)
            step += 1
