"""Where replayed and evaluated observations come from: a bitrl bag's Observation topic, or a foreign bag
(standard messages) through a YAML topic mapping (see foreign.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from bitrl_ros.bag.foreign import iter_mapped_observations
from bitrl_ros.bag.reader import iter_records
from bitrl_ros.bag.records import ObsRecord


def iter_observations(path: str | Path, topic: str = "observation", mapping=None) -> Iterator[ObsRecord]:
    """Yield the ObsRecords of a bitrl bag's Observation topic, or of a foreign bag through a mapping (a dict
    or the path of a YAML file, see bitrl_ros.bag.foreign).
    """
    if mapping is not None:
        return iter_mapped_observations(path, mapping)
    return iter_records(path, topic, ObsRecord)


def read_observations(path, topic: str = "observation", mapping=None) -> list[ObsRecord]:
    return list(iter_observations(path, topic, mapping))
