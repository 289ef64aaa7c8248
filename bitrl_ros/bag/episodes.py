"""A bitrl bag's decisions, by episode, for offline policy evaluation (`bitrl eval-bag`), read in one pass.

The conventions (the reward of step t is that of the observation at t + 1; how episodes end; safe actions) are
in ope.py's docstring. Reading: a duplicate observation of a step keeps the last copy, a step acted on more than
once keeps its first policy action (`first_policy_actions`), missing steps inside an episode are counted (`gaps`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bitrl_ros.bag.reader import Bag
from bitrl_ros.bag.records import ActionRecord, EncodedRecord, ObsRecord, topic_matches
from bitrl_ros.errors import BagError


@dataclass
class Decision:
    """One recorded state acted on, with the reward that followed it."""

    episode: int
    step: int
    values: np.ndarray
    embedding: np.ndarray | None
    reward: float
    action: object | None          # int for discrete, float32 array for continuous, None if not recorded
    log_prob: float
    value: float
    safe: bool
    mission: str = ""              # language-conditioned envs: the instruction the state came with


@dataclass
class Episode:
    episode: int
    decisions: list = field(default_factory=list)
    ended: str = "bag_end"          # "terminated" | "truncated" | "bag_end"
    starts_at_zero: bool = True
    gaps: int = 0                   # missing steps inside the episode


@dataclass
class Recording:
    """What evaluation reads from a bag: its episodes and the env its observations name."""

    episodes: list[Episode]
    env_id: str = ""                # Observation.header.frame_id of the first observation ('' when absent)

    @property
    def decisions(self) -> list[Decision]:
        return [d for e in self.episodes for d in e.decisions]


def first_policy_actions(actions) -> dict:
    """(episode, step) -> action: the first non-safe action of a step (holds repeat it; a later watchdog action
    with the same header does not replace it), else the last safe one.
    """
    out = {}
    for a in actions:
        key = (a.episode, a.step)
        old = out.get(key)
        if old is None or (old.safe_action and not a.safe_action):
            out[key] = a
        elif old.safe_action and a.safe_action:
            out[key] = a
    return out


def read_recording(bag: Bag, discrete: bool, obs_topic: str = "observation", action_topic: str = "action",
                   encoded_topic: str = "encoded_state") -> Recording:
    """The episodes of decisions of an open bitrl bag, from one pass over its observation, action and (when
    recorded) encoded_state topics.
    """
    bag.require(obs_topic, ObsRecord.MSGTYPE)
    topics = [obs_topic, action_topic] + ([encoded_topic] if bag.select([encoded_topic]) else [])
    observations, actions, encoded, env_id = [], [], {}, None
    for topic, t_ns, m in bag.messages(topics):
        if topic_matches(topic, obs_topic):
            observations.append(ObsRecord.from_msg(t_ns, m))
            env_id = str(m.header.frame_id) if env_id is None else env_id
        elif topic_matches(topic, action_topic):
            actions.append(ActionRecord.from_msg(t_ns, m))
        else:
            e = EncodedRecord.from_msg(t_ns, m)
            encoded[(e.episode, e.step)] = e
    if not observations:
        raise BagError(f"bag {bag.path}: no messages on topic {obs_topic!r}")
    bag.require(action_topic, ActionRecord.MSGTYPE)
    return Recording(split_episodes(observations, first_policy_actions(actions), encoded, discrete), env_id or "")


def split_episodes(observations: list[ObsRecord], actions: dict, encoded: dict, discrete: bool) -> list[Episode]:
    """Episodes of decisions from observations and the (episode, step)-keyed actions and encoded states."""
    by_episode: dict[int, dict[int, ObsRecord]] = {}
    for o in observations:
        by_episode.setdefault(o.episode, {})[o.step] = o  # a duplicate observation keeps the last copy
    return [_episode(ep, by_episode[ep], actions, encoded, discrete) for ep in sorted(by_episode)]


def _episode(ep: int, steps: dict[int, ObsRecord], actions: dict, encoded: dict, discrete: bool) -> Episode:
    order = sorted(steps)
    e = Episode(episode=ep, starts_at_zero=order[0] == 0)
    for i, s in enumerate(order):
        o = steps[s]
        if o.terminated or o.truncated:
            e.ended = "terminated" if o.terminated else "truncated"
            break
        if i + 1 >= len(order):
            break  # bag end: no reward follows this state
        nxt = order[i + 1]
        e.gaps += nxt - s - 1
        e.decisions.append(_decision(o, steps[nxt].reward, actions.get((ep, s)), encoded.get((ep, s)), discrete))
    return e


def _decision(o: ObsRecord, reward: float, a: ActionRecord | None, enc: EncodedRecord | None,
              discrete: bool) -> Decision:
    action = None
    if a is not None:
        action = int(a.discrete) if discrete else np.asarray(a.continuous, dtype=np.float32)
    return Decision(episode=o.episode, step=o.step, values=np.asarray(o.values, dtype=np.float32),
                    embedding=None if enc is None else enc.embedding, reward=float(reward), action=action,
                    log_prob=float(a.log_prob) if a is not None else float("nan"),
                    value=float(a.value) if a is not None else float("nan"),
                    safe=bool(a.safe_action) if a is not None else False, mission=o.mission)
