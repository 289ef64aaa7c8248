"""Missions (natural-language instructions) as the pipeline reads them: normalized text, or a bag of words."""
from __future__ import annotations

import functools
import re

import numpy as np

from bitrl_ros.envs.registry import EnvSpec
from bitrl_ros.serialize.validate import validate_observation


def normalize_mission(mission: str) -> str:
    """Lower case, single spaces, no trailing full stop: the same instruction always reads the same."""
    return re.sub(r"\s+", " ", str(mission)).strip().rstrip(".").lower()


_CLAUSE_BREAK = re.compile(r"\s*;\s*|,?\s+and\s+")


def clause_spans(text: str) -> tuple[tuple[int, int], ...]:
    """(start, end) of each clause of an instruction: the text split at semicolons and at "and" (with or without
    a comma before it); empty pieces are dropped. A plain splitter, not a parser: it knows no rule or wording.
    """
    spans, start = [], 0
    for m in _CLAUSE_BREAK.finditer(text):
        if m.start() > start:
            spans.append((start, m.start()))
        start = m.end()
    if len(text) > start:
        spans.append((start, len(text)))
    return tuple(spans)


@functools.lru_cache(maxsize=8)
def _word_index(words: tuple[str, ...]) -> dict[str, int]:
    return {w: i for i, w in enumerate(words)}


def bag_of_words(missions, words: tuple[str, ...], segments: int = 1) -> np.ndarray:
    """[N, segments * len(words)] word counts of each mission over a fixed vocabulary; other words are ignored
    (that is the baseline's weakness on new phrasings). segments > 1: the mission holds that many lines, each
    counted in its own block (an empty mission: all zero).
    """
    index = _word_index(tuple(words))  # built once per vocabulary, not on every call of the 40 Hz path
    width = len(words)
    out = np.zeros((len(missions), segments * width), dtype=np.float32)
    for row, mission in enumerate(missions):
        lines = [str(mission)] if segments == 1 else str(mission).split("\n")
        if segments > 1 and lines != [""] and len(lines) != segments:
            raise ValueError(f"a mission of {len(lines)} lines, the bag of words counts {segments} segments")
        for block, line in enumerate(lines):
            for word in re.findall(r"[a-z]+", line.lower()):
                if word in index:
                    out[row, block * width + index[word]] += 1.0
    return out


class MissionRenderer:
    """Base of the language-conditioned families' serializers (the interface of serialize.Serializer, plus the
    mission): the text is "<mission>. <the state in words>", and the per-field readouts read those two segments.
    Subclasses set ``family`` and ``fmt`` and write ``describe_state``.
    """

    family = ""
    fmt = ""
    numbers = "none"

    def __init__(self, spec: EnvSpec):
        if spec.family != self.family:
            raise ValueError(f"the {self.fmt} renderer is for the {self.family} family, not {spec.env_id}")
        self.spec = spec
        self.stats = {"serialized": 0, "clipped": 0}

    def describe_state(self, values: np.ndarray) -> str:
        raise NotImplementedError

    def render(self, obs, validated: bool = False, mission: str = "") -> tuple[str, tuple[tuple[int, int], ...]]:
        """(text, (start, end) character spans of the mission and of the state description)."""
        values = obs if validated else validate_observation(obs, self.spec)
        state = self.describe_state(values)
        self.stats["serialized"] += 1
        goal = normalize_mission(mission) or "no mission"
        text = f"{goal}. {state}"
        return text, ((0, len(goal)), (len(goal) + 2, len(text)))

    def __call__(self, obs, validated: bool = False, mission: str = "") -> str:
        return self.render(obs, validated, mission)[0]

    def render_batch(self, obs_2d, validated: bool = False, missions=None):
        arr = np.asarray(obs_2d, dtype=np.float64)
        missions = [""] * len(arr) if missions is None else list(missions)
        return [self.render(row, validated, m) for row, m in zip(arr, missions)]

    def batch(self, obs_2d, validated: bool = False, missions=None) -> list[str]:
        return [text for text, _ in self.render_batch(obs_2d, validated, missions)]

    def describe(self) -> dict:
        return {"format": self.fmt, "numbers": self.numbers}
