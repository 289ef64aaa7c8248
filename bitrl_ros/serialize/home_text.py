"""SmartHome-Light's state + household instruction -> one short English text, deterministically.

    "keep empty rooms dark. 19:45, rainy, daylight 0.10. living room: someone awake, light dim. kitchen: empty,
     light off. bedroom: empty, light off. bathroom: empty, light off."

The per-field readouts read six segments (``EnvSpec.text_fields``): the instruction (in pieces, its clauses), the
clock and each room.
"""
from __future__ import annotations

import numpy as np

from bitrl_ros.envs import smarthome
from bitrl_ros.errors import InvalidObservation
from bitrl_ros.serialize.mission import clause_spans, MissionRenderer, normalize_mission
from bitrl_ros.serialize.validate import validate_observation

FORMAT = "home_text"
_OCCUPANCY = ("empty", "someone awake", "someone asleep")


def _index(value: float, names: tuple[str, ...], field: str, env_id: str) -> str:
    i = int(np.rint(value))
    if not 0 <= i < len(names) or abs(value - i) > 1e-3:
        raise InvalidObservation(f"{env_id}: observation field '{field}' is {value:g}, expected one of "
                                 f"0..{len(names) - 1}")
    return names[i]


class HomeTextRenderer(MissionRenderer):
    family = "smarthome"
    fmt = FORMAT

    def segments(self, values: np.ndarray) -> list[str]:
        """The state in words: the clock (time, weather, daylight), then one segment per room."""
        env_id, rooms = self.spec.env_id, len(smarthome.ROOMS)
        hour, light, weather = float(values[0]), float(values[1]), values[2]
        minutes = int(round(hour * 60)) % (24 * 60)
        parts = [f"{minutes // 60:02d}:{minutes % 60:02d}, "
                 f"{_index(weather, smarthome.WEATHER, 'weather', env_id)}, daylight {light:.2f}"]
        for r, room in enumerate(smarthome.ROOMS):
            who = _index(values[3 + r], _OCCUPANCY, smarthome.FIELD_NAMES[3 + r], env_id)
            level = _index(values[3 + rooms + r], smarthome.LEVELS, smarthome.FIELD_NAMES[3 + rooms + r], env_id)
            parts.append(f"{room}: {who}, light {level}")
        return parts

    def describe_state(self, values: np.ndarray) -> str:
        return " ".join(f"{part}." for part in self.segments(values))

    def render(self, obs, validated: bool = False, mission: str = ""):
        """(text, spans): the instruction, in pieces (its clauses, mission.clause_spans), then the clock and each
        room, one span each (smarthome.TEXT_FIELDS).
        """
        values = obs if validated else validate_observation(obs, self.spec)
        self.stats["serialized"] += 1
        goal = normalize_mission(mission) or "no mission"
        text, spans = f"{goal}.", [clause_spans(goal)]
        for part in self.segments(values):
            start = len(text) + 1
            text = f"{text} {part}."
            spans.append((start, len(text) - 1))
        return text, tuple(spans)
