"""SmartHome-Light: light a home through one simulated day as a household instruction in plain words asks.

The paper names this task without defining it; this is the project's definition (README "SmartHome-Light").

- **Home**: four rooms (living room, kitchen, bedroom, bathroom), one resident, each room's light off / dim / full.
- **Day**: 06:00 to 24:00 in steps of 15 minutes (72 steps). Daylight follows the sun (0 before 06:30 and after
  19:00, a half sine between) times the day's weather (sunny 1.0, cloudy 0.6, rainy 0.3).
- **Resident** (drawn per episode): in the bedroom until waking (06:30-07:30), 15 minutes in the bathroom, the
  kitchen until leaving (08:00-09:00); out until coming back (17:00-18:00), or home all day one day in four (living
  room, kitchen for lunch 12:00-13:00); the living room until dinner, the kitchen for dinner (18:30-19:30), the
  living room until bedtime (22:00-23:00) but for 15 minutes in the bathroom just before it, then the bedroom:
  awake (reading) for 30 minutes, then asleep. Asleep (at night and before waking) needs no light.
- **Instruction** (the mission): 1-3 household rules, each said in one of several paraphrases, joined in words:
  ``dark_empty`` (keep empty rooms dark), ``read_bright`` (after dinner the living room is for reading: full light
  when someone is there), ``baby_dark`` (a baby sleeps in the bedroom after 20:00: light off there), ``prefer_dim``
  (save energy: full light only where a rule asks for it), or no rule at all ("keep the people at home
  comfortable"). The ``train`` split draws from the training paraphrases and rule sets; the ``heldout`` split only
  from paraphrases and rule sets that training never sees; ``heldout_wording`` (training rule sets in held-out
  paraphrases) and ``heldout_rules`` (held-out rule sets in training paraphrases) change one of the two.
- **Actions** (13): 0 does nothing; ``1 + 3 * room + level`` sets a room's light (level 0 off, 1 dim, 2 full).
- **Observation** (11 values): hour (6.0-23.75), daylight (0-1), weather (0 sunny, 1 cloudy, 2 rainy), occupancy
  of each room (0 empty, 1 someone awake, 2 someone asleep), light level of each room (0/1/2); the instruction in
  ``info["mission"]``.
- **Reward** per step, after the action, for the current quarter hour: for the room that *needs light* (someone
  awake there while daylight is under 0.3, unless a rule wants it dark) +0.10 if dim, +0.15 if full (comfort);
  minus energy (0.02 per dim room, 0.05 per full one); minus 0.5 per rule violation. Without rules, full light
  where needed and none elsewhere is best; ``prefer_dim`` makes it dim, ``baby_dark`` dark in the bedroom at
  bedtime, ``read_bright`` full in the living room after dinner even under ``prefer_dim``. A room counts as empty for
  ``dark_empty`` (and the reading light as no longer asked for) once nobody has been in it for a full step, so that
  one action per step can follow the resident.
- **Episode** ends (terminated) after the 24:00 step; **success**: a day without a single violation and at least
  80% of the room-steps that needed light lit (``info["success"]`` on the last step).

This module (the rules, the day, the judge) needs no gymnasium; the env class is in ``smarthome_env.py``.
"""
from __future__ import annotations

import math

import numpy as np

ROOMS = ("living room", "kitchen", "bedroom", "bathroom")
LIVING, KITCHEN, BEDROOM, BATHROOM = range(len(ROOMS))
LEVELS = ("off", "dim", "full")
ENERGY = (0.0, 0.02, 0.05)
WEATHER = ("sunny", "cloudy", "rainy")
WEATHER_LIGHT = (1.0, 0.6, 0.3)
START_HOUR, STEP_HOURS, STEPS = 6.0, 0.25, 72
SUNRISE, SUNSET = 6.5, 19.0
DARK = 0.3                 # daylight under this: an occupied room needs light
DINNER = (18.5, 19.5)
BABY_HOUR = 20.0
COMFORT = (0.0, 0.10, 0.15)  # per level, in a room that needs light
VIOLATION_COST = 0.5
AWAKE, ASLEEP = 1, 2  # occupancy values
SUCCESS_COMFORT = 0.8

FIELD_NAMES = ("hour", "daylight", "weather") + tuple(f"occupied_{r.replace(' ', '_')}" for r in ROOMS) + tuple(
    f"light_{r.replace(' ', '_')}" for r in ROOMS)
TEXT_FIELDS = ("mission", "clock") + tuple(ROOMS)  # the per-field readouts' segments (serialize/home_text.py)
NUM_ACTIONS = 1 + len(ROOMS) * len(LEVELS)

RULES = ("dark_empty", "read_bright", "baby_dark", "prefer_dim")
# (training paraphrases, held-out paraphrases) per rule; the held-out ones never reach a training episode.
PARAPHRASES = {
    "dark_empty": (("keep empty rooms dark", "turn off the lights in rooms nobody is in",
                    "no light in empty rooms"),
                   ("do not leave a light on where no one is", "rooms without people should stay unlit")),
    "read_bright": (("someone reads in the living room after dinner: keep it bright",
                     "after dinner the living room needs full light for reading"),
                    ("after the evening meal whoever sits in the living room is reading and wants maximum light",)),
    "baby_dark": (("the baby sleeps in the bedroom after 8 pm", "after 20:00 the bedroom must stay dark for the baby"),
                  ("from eight in the evening the little one is asleep in the bedroom, so no light there",)),
    "prefer_dim": (("save energy: prefer dim", "use dim light instead of full light"),
                   ("we want a low electricity bill, so lights should be soft rather than bright",)),
}
NO_RULE = (("keep the people at home comfortable",), ("just make sure nobody sits in the dark",))
# Rule sets: training sees these ...
TRAIN_RULE_SETS = ((), ("dark_empty",), ("read_bright",), ("baby_dark",), ("prefer_dim",),
                   ("dark_empty", "read_bright"), ("dark_empty", "baby_dark"), ("read_bright", "prefer_dim"),
                   ("dark_empty", "read_bright", "baby_dark"))
# ... and only the held-out split these combinations.
HELDOUT_RULE_SETS = (("baby_dark", "prefer_dim"), ("dark_empty", "prefer_dim"), ("read_bright", "baby_dark"),
                     ("dark_empty", "baby_dark", "prefer_dim"))
CONNECTORS = (("; ", " and "), ("; also ", ", and "))  # how rules are joined: training / held-out
# The held-out split changes both at once; the other two change one each, to tell which of them an agent fails on.
SPLITS = ("train", "heldout", "heldout_wording", "heldout_rules")
HELDOUT_WORDING = ("heldout", "heldout_wording")  # the splits that word their rules with held-out paraphrases
HELDOUT_RULES = ("heldout", "heldout_rules")      # the splits that draw held-out rule sets
ENV_SPLITS = {"SmartHome-Light-v0": "train", "SmartHome-Light-Heldout-v0": "heldout",
              "SmartHome-Light-HeldoutWording-v0": "heldout_wording",
              "SmartHome-Light-HeldoutRules-v0": "heldout_rules"}


def _words(texts) -> tuple[str, ...]:
    import re

    return tuple(sorted({w for t in texts for w in re.findall(r"[a-z]+", t.lower())}))


def training_texts() -> list[str]:
    """Every phrase a training instruction can contain (the `mlp` baseline's bag-of-words vocabulary)."""
    return [p for train, _ in PARAPHRASES.values() for p in train] + list(NO_RULE[0]) + list(CONNECTORS[0])


MISSION_WORDS = _words(training_texts())


def instruction(rules: tuple[str, ...], rng: np.random.Generator, split: str) -> str:
    """One wording of a rule set: a paraphrase per rule (of the split), joined with the split's connectors."""
    held = split in HELDOUT_WORDING
    if not rules:
        options = NO_RULE[held]
        return options[rng.integers(len(options))]
    phrases = [PARAPHRASES[r][held][rng.integers(len(PARAPHRASES[r][held]))] for r in rules]
    joiner, last = CONNECTORS[held]
    return phrases[0] if len(phrases) == 1 else joiner.join(phrases[:-1]) + last + phrases[-1]


def daylight(hour: float, weather: int) -> float:
    if not SUNRISE < hour < SUNSET:
        return 0.0
    return WEATHER_LIGHT[weather] * math.sin(math.pi * (hour - SUNRISE) / (SUNSET - SUNRISE))


def _slot(hour: float) -> int:
    return int(round((hour - START_HOUR) / STEP_HOURS))


def schedule(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(the resident's room at each of the STEPS quarter hours (-1: out), asleep then)."""
    wake, leave = rng.choice([6.5, 7.0, 7.5]), rng.choice([8.0, 8.5, 9.0])
    back, bed = rng.choice([17.0, 17.5, 18.0]), rng.choice([22.0, 22.5, 23.0])
    home_all_day = rng.random() < 0.25
    where = np.full(STEPS, -1, dtype=int)
    asleep = np.zeros(STEPS, dtype=bool)
    for k in range(STEPS):
        h = START_HOUR + k * STEP_HOURS
        asleep[k] = h < wake or h >= bed + 0.5
        if h < wake:
            where[k] = BEDROOM
        elif h < wake + STEP_HOURS:
            where[k] = BATHROOM
        elif h < leave:
            where[k] = KITCHEN
        elif h < back:
            where[k] = (KITCHEN if 12.0 <= h < 13.0 else LIVING) if home_all_day else -1
        elif h < DINNER[0]:
            where[k] = LIVING
        elif h < DINNER[1]:
            where[k] = KITCHEN
        elif h < bed - STEP_HOURS:
            where[k] = LIVING
        elif h < bed:
            where[k] = BATHROOM
        else:
            where[k] = BEDROOM
    return where, asleep


def judge(hour: float, here: int, awake: bool, before: int, lights: np.ndarray, rules: tuple[str, ...],
          light_now: float) -> tuple[int, int, float, list[str]]:
    """(rooms needing light, of those lit, comfort reward, what was violated) for one quarter hour."""
    need = lit = 0
    comfort = 0.0
    violations = []
    for room in range(len(ROOMS)):
        level = int(lights[room])
        wants_dark = "baby_dark" in rules and room == BEDROOM and hour >= BABY_HOUR
        # One step of grace after the resident leaves (dark_empty, and prefer_dim for the reading light): one
        # action per step can only follow them room by room.
        wants_full = "read_bright" in rules and room == LIVING and LIVING in (here, before) and hour >= DINNER[1]
        if here == room and awake and light_now < DARK and not wants_dark:
            need += 1
            lit += level >= 1
            comfort += COMFORT[level]
        if "dark_empty" in rules and level and room != here and room != before:
            violations.append(f"dark_empty:{ROOMS[room]}")
        if wants_dark and level:
            violations.append(f"baby_dark:{ROOMS[room]}")
        if wants_full and here == LIVING and level != 2:
            violations.append(f"read_bright:{ROOMS[room]}")
        if "prefer_dim" in rules and level == 2 and not wants_full:
            violations.append(f"prefer_dim:{ROOMS[room]}")
    return need, lit, comfort, violations
