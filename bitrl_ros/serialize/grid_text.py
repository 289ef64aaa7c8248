"""BabyAI's egocentric symbolic view + mission -> one short English text, deterministically.

    "go to the red ball. facing east, carrying nothing. walls: 5 ahead, 3 left, 2 right.
     red ball 2 ahead 1 left, grey key 1 ahead 2 right, closed blue door 4 ahead."

Order: the mission, the agent's heading and what it carries, how far the nearest wall is straight ahead / left /
right (omitted where none is in view), then every visible object (keys, balls, boxes, doors with their state,
goals, lava), nearest first (by steps, then further ahead, then left to right). Steps count cells from the
agent: "2 ahead 1 left" is two cells forward and one to the left. Nothing here depends on anything but the
observation, so the same view always gives the same text; a text over the token budget is cut at the end by the
tokenizer (counted there), which drops the farthest objects first.

The per-field readouts read two segments (``EnvSpec.text_fields``): the mission and the view description.
"""
from __future__ import annotations

import numpy as np

from bitrl_ros.envs import babyai
from bitrl_ros.errors import InvalidObservation
from bitrl_ros.serialize.mission import MissionRenderer

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


def _where(ahead: int, side: int) -> str:
    parts = [f"{ahead} ahead"] if ahead else []
    if side:
        parts.append(f"{abs(side)} {'left' if side < 0 else 'right'}")
    return " ".join(parts) or "here"


def _wall_distance(cells: np.ndarray, dx: int, dy: int) -> int | None:
    x, y = babyai.AGENT_X + dx, babyai.AGENT_Y + dy
    steps = 1
    while 0 <= x < babyai.VIEW and 0 <= y < babyai.VIEW:
        if babyai.OBJECTS[cells[x, y, 0]] == "wall":
            return steps
        x, y, steps = x + dx, y + dy, steps + 1
    return None


def describe_view(values: np.ndarray) -> str:
    cells = _cells(values)
    direction = int(np.rint(values[-1]))
    heading = babyai.DIRECTIONS[direction] if 0 <= direction < len(babyai.DIRECTIONS) else "nowhere"
    held = cells[babyai.AGENT_X, babyai.AGENT_Y]
    carrying = "nothing" if babyai.OBJECTS[held[0]] in _SCENERY else f"a {_name(held)}"
    sentences = [f"facing {heading}, carrying {carrying}."]
    walls = [(label, _wall_distance(cells, dx, dy)) for label, dx, dy in
             (("ahead", 0, -1), ("left", -1, 0), ("right", 1, 0))]
    walls = [f"{d} {label}" for label, d in walls if d is not None]
    if walls:
        sentences.append("walls: " + ", ".join(walls) + ".")
    seen = []
    for x in range(babyai.VIEW):
        for y in range(babyai.VIEW):
            if (x, y) == (babyai.AGENT_X, babyai.AGENT_Y) or babyai.OBJECTS[cells[x, y, 0]] in _SCENERY:
                continue
            ahead, side = babyai.AGENT_Y - y, x - babyai.AGENT_X
            seen.append((ahead + abs(side), -ahead, side, f"{_name(cells[x, y])} {_where(ahead, side)}"))
    if seen:
        sentences.append(", ".join(text for *_, text in sorted(seen)) + ".")
    else:
        sentences.append("no objects in view.")
    return " ".join(sentences)


class GridTextRenderer(MissionRenderer):
    """The serializer of the BabyAI family."""

    family = "babyai"
    fmt = FORMAT

    def describe_state(self, values: np.ndarray) -> str:
        cells = values[: babyai.VIEW_VALUES - 1].reshape(-1, 3)
        bad = np.flatnonzero(((cells < 0) | (cells > babyai.MAX_INDEX)).any(axis=1))
        if bad.size:
            raise InvalidObservation(f"{self.spec.env_id}: view cell {int(bad[0])} holds {cells[bad[0]].tolist()}, "
                                     f"outside the object/colour/state indices "
                                     f"(0..{babyai.MAX_INDEX.astype(int).tolist()})")
        return describe_view(values)
