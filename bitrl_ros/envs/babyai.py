"""BabyAI (the `minigrid` package) as flat observations plus a mission string.

minigrid's observation is a dict: ``image`` (7 x 7 x 3, the egocentric symbolic view: object, colour and state
index per cell, indexed ``image[x, y]``; the agent sits at x=3, y=6 facing up, so smaller y is further ahead),
``direction`` (0 east, 1 south, 2 west, 3 north) and ``mission`` (text). `MissionObservation` flattens image and
direction into one float vector (``VIEW_VALUES`` values, field order x, y, channel, then direction), the layout
the ROS bridge publishes in ``Observation.values``, and puts the mission in ``info["mission"]`` at every reset
and step (so a SAME_STEP vector env hands the new episode's mission with its first observation, and the finished
episode's in ``final_info``), and ``info["success"]`` on an episode's last step (BabyAI pays only on success).
The text renderer is ``serialize/grid_text.py``. This module (the layout) needs no gymnasium; the wrapper is in
``babyai_env.py``.
"""
from __future__ import annotations

import numpy as np

VIEW = 7
CHANNELS = ("object", "color", "state")
VIEW_VALUES = VIEW * VIEW * len(CHANNELS) + 1  # + direction
AGENT_X, AGENT_Y = VIEW // 2, VIEW - 1

# minigrid.core.constants, fixed by the package (checked against it in the tests).
OBJECTS = ("unseen", "empty", "wall", "floor", "door", "key", "ball", "box", "goal", "lava", "agent")
COLORS = ("red", "green", "blue", "purple", "yellow", "grey")
DOOR_STATES = ("open", "closed", "locked")
DIRECTIONS = ("east", "south", "west", "north")

# The bag-of-words vocabulary of BabyAI missions (the `mlp` baseline's mission encoding): every word the
# GoTo / Pickup / Open / PutNext / sequence grammars use.
MISSION_WORDS = ("go", "to", "the", "a", "pick", "up", "open", "put", "next", "and", "then", "after", "you",
                 "door", "key", "ball", "box", "object", "on", "your", "left", "right", "in", "front", "of",
                 "behind") + COLORS

FIELD_NAMES = tuple(f"x{x}y{y}_{c}" for x in range(VIEW) for y in range(VIEW) for c in CHANNELS) + ("direction",)
TEXT_FIELDS = ("mission", "self", "objects")
MAX_INDEX = np.array([len(OBJECTS) - 1, len(COLORS) - 1, len(DOOR_STATES) - 1], dtype=np.float32)


def flatten(obs: dict) -> np.ndarray:
    image = np.asarray(obs["image"], dtype=np.float32)
    if image.shape != (VIEW, VIEW, len(CHANNELS)):
        raise ValueError(f"BabyAI image of shape {image.shape}, expected {(VIEW, VIEW, len(CHANNELS))}")
    return np.concatenate([image.reshape(-1), [float(obs["direction"])]]).astype(np.float32)
