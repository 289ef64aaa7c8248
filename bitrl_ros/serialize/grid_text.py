"""BabyAI's egocentric symbolic view + mission -> one short English text, deterministically.

    "go to the red ball. facing east, carrying nothing. walls: 5 ahead, 3 left, 2 right.
     red ball 2 ahead, one left; grey key 1 ahead, two right; closed blue door 4 ahead."

Order: the mission, the agent's heading and what it carries, how far the nearest wall is straight ahead / left /
right (omitted where none is in view), then every visible object (keys, balls, boxes, doors with their state,
goals, lava), nearest first (by steps, then further ahead, then left to right). Steps count cells from the
agent: "2 ahead, one left" is two cells forward and one to the left (the side in words, see ``_where``). Nothing
here depends on anything but the observation, so the same view always gives the same text; a text over the token
budget is cut at the end by the tokenizer (counted there), which drops the farthest objects first.

The per-field readouts read three segments (``EnvSpec.text_fields``): the mission, the agent's own state, and
the objects in pieces, one per object: under ``features.context=field`` each object is encoded alone, so the
embedding cache sees a few hundred distinct object phrases instead of one text per view.
"""
from __future__ import annotations

import numpy as np

from bitrl_ros.envs import babyai
from bitrl_ros.errors import InvalidObservation
from bitrl_ros.serialize.mission import MissionRenderer, normalize_mission
from bitrl_ros.serialize.validate import validate_observation

FORMAT = "grid_text"
_SCENERY = {"unseen", "empty", "wall", "floor", "agent"}


def _cells(values: np.ndarray) -> np.ndarray:
    return np.rint(values[: babyai.VIEW_VALUES - 1]).astype(int).reshape(babyai.VIEW, babyai.VIEW, 3)


def _name(cell) -> str:
    obj, color, state = (int(v) for v in cell)
    kind = babyai.OBJECTS[obj] if 0 <= obj < len(babyai.OBJECTS) else "thing"
    if kind in ("goal", "lava"):
        return kind
    colour = babyai.COLORS[color] if 0 <= color < len(babyai.COLORS) else "odd"
    if kind == "door":
        door_state = babyai.DOOR_STATES[state] if 0 <= state < len(babyai.DOOR_STATES) else "odd"
        return f"{door_state} {colour} door"
    return f"{colour} {kind}"


_SIDE_STEPS = ("", "one", "two", "three")  # the view is 7 wide: at most 3 to a side


def _where(ahead: int, side: int) -> str:
    """Ahead in digits, to the side in words: "2 ahead, one left". With digits on both axes "2 ahead 1 left" and
    "1 ahead 2 left" hold the same tokens, and their mean-pooled features are nearly the same (cosine 0.97).
    """
    parts = [f"{ahead} ahead"] if ahead else []
    if side:
        parts.append(f"{_SIDE_STEPS[abs(side)]} {'left' if side < 0 else 'right'}")
    return ", ".join(parts) or "here"


def _wall_distance(cells: np.ndarray, dx: int, dy: int) -> int | None:
    x, y = babyai.AGENT_X + dx, babyai.AGENT_Y + dy
    steps = 1
    while 0 <= x < babyai.VIEW and 0 <= y < babyai.VIEW:
        if babyai.OBJECTS[cells[x, y, 0]] == "wall":
            return steps
        x, y, steps = x + dx, y + dy, steps + 1
    return None


def view_parts(values: np.ndarray) -> tuple[str, list[str]]:
    """(the agent's own state: heading, what it carries, the walls; every visible object, nearest first)."""
    cells = _cells(values)
    direction = int(np.rint(values[-1]))
    heading = babyai.DIRECTIONS[direction] if 0 <= direction < len(babyai.DIRECTIONS) else "nowhere"
    held = cells[babyai.AGENT_X, babyai.AGENT_Y]
    carrying = "nothing" if babyai.OBJECTS[held[0]] in _SCENERY else f"a {_name(held)}"
    status = f"facing {heading}, carrying {carrying}"
    walls = [(label, _wall_distance(cells, dx, dy)) for label, dx, dy in
             (("ahead", 0, -1), ("left", -1, 0), ("right", 1, 0))]
    walls = [f"{d} {label}" for label, d in walls if d is not None]
    if walls:
        status += ". walls: " + ", ".join(walls)
    seen = []
    for x in range(babyai.VIEW):
        for y in range(babyai.VIEW):
            if (x, y) == (babyai.AGENT_X, babyai.AGENT_Y) or babyai.OBJECTS[cells[x, y, 0]] in _SCENERY:
                continue
            ahead, side = babyai.AGENT_Y - y, x - babyai.AGENT_X
            seen.append((ahead + abs(side), -ahead, side, f"{_name(cells[x, y])} {_where(ahead, side)}"))
    return status, [text for *_, text in sorted(seen)] or ["no objects in view"]


def view_text(values: np.ndarray) -> tuple[str, tuple[int, int], tuple[tuple[int, int], ...]]:
    """("status. object; object.", the status's span, one span per object)."""
    status, objects = view_parts(values)
    text, pieces = f"{status}.", []
    for i, obj in enumerate(objects):
        text += " " if i == 0 else "; "
        pieces.append((len(text), len(text) + len(obj)))
        text += obj
    return f"{text}.", (0, len(status)), tuple(pieces)


def describe_view(values: np.ndarray) -> str:
    return view_text(values)[0]


class GridTextRenderer(MissionRenderer):
    """The serializer of the BabyAI family."""

    family = "babyai"
    fmt = FORMAT

    def _check(self, values: np.ndarray) -> None:
        cells = values[: babyai.VIEW_VALUES - 1].reshape(-1, 3)
        bad = np.flatnonzero(((cells < 0) | (cells > babyai.MAX_INDEX)).any(axis=1))
        if bad.size:
            raise InvalidObservation(f"{self.spec.env_id}: view cell {int(bad[0])} holds {cells[bad[0]].tolist()}, "
                                     f"outside the object/colour/state indices "
                                     f"(0..{babyai.MAX_INDEX.astype(int).tolist()})")

    def describe_state(self, values: np.ndarray) -> str:
        self._check(values)
        return describe_view(values)

    def render(self, obs, validated: bool = False, mission: str = ""):
        """(text, spans): the mission, the agent's own state, and the visible objects as one field in pieces (one
        per object, each read alone and summed under ``features.context=field``: a set, whatever the order).
        """
        values = obs if validated else validate_observation(obs, self.spec)
        self._check(values)
        self.stats["serialized"] += 1
        view, (start, end), pieces = view_text(values)
        goal = normalize_mission(mission) or "no mission"
        shift = len(goal) + 2
        return f"{goal}. {view}", ((0, len(goal)), (start + shift, end + shift),
                                   tuple((a + shift, b + shift) for a, b in pieces))
