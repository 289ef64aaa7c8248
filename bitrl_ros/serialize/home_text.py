"""SmartHome-Light's state + household instruction -> one short English text, deterministically.

    "keep empty rooms dark. 19:45, rainy, daylight 0.10. living room: someone awake, light dim. kitchen: empty,
     light off. bedroom: empty, light off. bathroom: empty, light off."

The per-field readouts read two segments (``EnvSpec.text_fields``): the instruction and the home description.
"""
from __future__ import annotations

import numpy as np

from bitrl_ros.envs import smarthome
from bitrl_ros.errors import InvalidObservation
from bitrl_ros.serialize.mission import MissionRenderer

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

    def describe_state(self, values: np.ndarray) -> str:
        env_id, rooms = self.spec.env_id, len(smarthome.ROOMS)
        hour, light, weather = float(values[0]), float(values[1]), values[2]
        minutes = int(round(hour * 60)) % (24 * 60)
        parts = [f"{minutes // 60:02d}:{minutes % 60:02d}, "
                 f"{_index(weather, smarthome.WEATHER, 'weather', env_id)}, daylight {light:.2f}."]
        for r, room in enumerate(smarthome.ROOMS):
            who = _index(values[3 + r], _OCCUPANCY, smarthome.FIELD_NAMES[3 + r], env_id)
            level = _index(values[3 + rooms + r], smarthome.LEVELS, smarthome.FIELD_NAMES[3 + rooms + r], env_id)
            parts.append(f"{room}: {who}, light {level}.")
        return " ".join(parts)
