"""The records read from bags, as plain dataclasses, and the small helpers every bag source shares.

ROS-free, and imports nothing else of bitrl_ros.bag: reader.py, foreign.py and episodes.py build on it.
`Record.from_msg(t_ns, msg)` takes a decoded message of the record's MSGTYPE (a rosbags typestore object, or
anything with the same fields).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np


def topic_matches(bag_topic: str, wanted: str) -> bool:
    """`observation`, `/observation` and a namespaced `/ns/observation` all match the wanted `observation`."""
    b, w = bag_topic.strip("/"), wanted.strip("/")
    return b == w or b.endswith("/" + w)


def stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


@dataclass
class ObsRecord:
    MSGTYPE: ClassVar[str] = "bitrl_msgs/msg/Observation"
    t_ns: int                 # bag (receive) timestamp, ns
    episode: int
    step: int
    values: np.ndarray        # float32
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    mission: str = ""
    stamp_ns: int | None = None  # header stamp (sim time in lockstep); None when the source has none

    @classmethod
    def from_msg(cls, t_ns: int, m) -> ObsRecord:
        return cls(t_ns=t_ns, episode=int(m.episode), step=int(m.step), values=np.asarray(m.values, dtype=np.float32),
                   reward=float(m.reward), terminated=bool(m.terminated), truncated=bool(m.truncated),
                   mission=str(m.mission), stamp_ns=stamp_ns(m.header))


@dataclass
class ActionRecord:
    MSGTYPE: ClassVar[str] = "bitrl_msgs/msg/Action"
    t_ns: int
    episode: int
    step: int
    discrete: int
    continuous: np.ndarray    # float32, empty for Discrete spaces
    log_prob: float
    value: float
    safe_action: bool
    policy_version: int = 0

    @classmethod
    def from_msg(cls, t_ns: int, m) -> ActionRecord:
        return cls(t_ns=t_ns, episode=int(m.episode), step=int(m.step), discrete=int(m.discrete),
                   continuous=np.asarray(m.continuous, dtype=np.float32), log_prob=float(m.log_prob),
                   value=float(m.value), safe_action=bool(m.safe_action), policy_version=int(m.policy_version))


@dataclass
class EncodedRecord:
    MSGTYPE: ClassVar[str] = "bitrl_msgs/msg/EncodedState"
    t_ns: int
    episode: int
    step: int
    embedding: np.ndarray     # float32
    observation: np.ndarray   # float32 (may be empty)
    backbone_id: str = ""
    cache_hit: bool = False

    @classmethod
    def from_msg(cls, t_ns: int, m) -> EncodedRecord:
        return cls(t_ns=t_ns, episode=int(m.episode), step=int(m.step),
                   embedding=np.asarray(m.embedding, dtype=np.float32),
                   observation=np.asarray(m.observation, dtype=np.float32), backbone_id=str(m.backbone_id),
                   cache_hit=bool(m.cache_hit))
