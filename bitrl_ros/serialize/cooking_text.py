"""TextWorld Cooking's state (its mission string, envs/cooking.py) -> one text, with a span per segment:

    "ingredients: white onion. directions: roast the white onion, prepare meal. in the kitchen; carrying nothing;
     fridge: white onion, red onion; oven: empty; ... ; score 0 of 3. take white onion from fridge; close fridge; ..."

The per-field readouts read MISSION_SEGMENTS segments (``EnvSpec.text_fields``): the recipe, the situation, and
each command slot, so the command-scoring policy head gets one vector per command (encoded on its own with
``features.context=field``, the default; read within the whole state text with ``state``). The values (score,
maximum score) are validated; the situation line already says them.
"""
from __future__ import annotations

from bitrl_ros.envs.cooking import split_mission
from bitrl_ros.errors import InvalidObservation
from bitrl_ros.serialize.mission import MissionRenderer, normalize_mission
from bitrl_ros.serialize.validate import validate_observation

FORMAT = "cooking_text"


class CookingTextRenderer(MissionRenderer):
    family = "cooking"
    fmt = FORMAT

    def render(self, obs, validated: bool = False, mission: str = ""):
        if not validated:
            validate_observation(obs, self.spec)
        try:
            segments = [normalize_mission(s) for s in split_mission(mission)]
        except ValueError as exc:
            raise InvalidObservation(f"{self.spec.env_id}: {exc}") from None
        self.stats["serialized"] += 1
        text, spans = "", []
        for i, segment in enumerate(segments):
            sep = "" if i == 0 else (". " if i <= 2 else "; ")
            start = len(text) + len(sep)
            text = text + sep + segment
            spans.append((start, len(text)))
        return text, tuple(spans)
