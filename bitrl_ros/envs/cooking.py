"""TextWorld Cooking (the `textworld` package's `tw-cooking` challenge) as the package reads it. This module is
the layout and needs no textworld; the env is ``cooking_env.py``, the games ``cooking_games.py``.

A state is language only, so the observation travels in the mission string (``info["mission"]``), one segment per
line, ``MISSION_SEGMENTS`` of them:

    line 0   the recipe ("ingredients: white onion. directions: roast the white onion, prepare meal")
    line 1   the situation, written from the game's facts: the room, what the agent carries (with how it is cut and
             cooked), each container and supporter in sight with its state and contents, the score
    line 2+  the ``COMMAND_SLOTS`` commands the agent may choose from this step

The commands are the game's admissible commands less the ones that only show text the situation already holds
(``examine ...``, ``look``, ``inventory``), cut at ``COMMAND_SLOTS`` (counted) in a fixed priority order by verb
(``COMMAND_ORDER``), then listed alphabetically. Fewer commands are repeated cyclically to fill every slot, so
each of the ``Discrete(COMMAND_SLOTS)`` actions is always a real command; a repeated command weighs more in a
uniform policy, which a scoring policy learns away. The agent reads the recipe rather than having to examine the
cookbook first: the recipe is the task's instruction.

``Observation.values`` carry two numbers, the score and the maximum score (``FIELD_NAMES``). The `mlp` baseline
reads them with a bag of words of every segment over ``MISSION_WORDS`` (the words of the training split's foods,
the kitchen's furniture, rooms and verbs), so it sees which words each command slot holds but nothing of a word
outside that vocabulary (the held-out games' foods).

Levels (``LEVELS``): settings of textworld's generator, easiest first. Training games come from its ``train``
food split, held-out games from its ``test`` split (foods training never sees).
"""
from __future__ import annotations

COMMAND_SLOTS = 10
MISSION_SEGMENTS = 2 + COMMAND_SLOTS
FIELD_NAMES = ("score", "max_score")
TEXT_FIELDS = ("recipe", "situation") + tuple(f"command_{i}" for i in range(COMMAND_SLOTS))

# Commands whose only effect is to print what the situation line already says.
INFORMATION_COMMANDS = ("examine", "look", "inventory")
# Which commands survive when there are more than COMMAND_SLOTS: the recipe's own steps first.
COMMAND_ORDER = ("prepare", "eat", "cook", "slice", "dice", "chop", "take", "open", "go", "drop", "close", "put",
                 "insert", "unlock", "lock")

# The tw-cooking generator's settings (textworld.challenges.tw_cooking.make). recipe: ingredients in the
# recipe; take: of them to fetch; go: rooms; cook / cut / open: skills the recipe needs.
LEVELS = {
    1: {"recipe": 1, "take": 1, "go": 1, "cook": False, "cut": False, "open": False},
    2: {"recipe": 1, "take": 1, "go": 1, "cook": True, "cut": False, "open": False},
    3: {"recipe": 2, "take": 2, "go": 1, "cook": True, "cut": True, "open": False},
}
MAX_STEPS = {1: 30, 2: 40, 3: 60}
# Game pools: seeds of the training games and of the held-out games, per level (generated once, then cached).
TRAIN_GAMES = 20
HELDOUT_GAMES = 10

# The bag-of-words vocabulary of the `mlp` baseline: the words of textworld's train-split food names, furniture,
# rooms, cooking and cutting states and their verbs, and the command verbs.
MISSION_WORDS = (
    "apple", "backyard", "banana", "bathroom", "bbq", "bed", "bedroom", "bell", "black", "block", "carrot", "chair",
    "cheese", "chicken", "chop", "chopped", "cilantro", "cookbook", "corridor", "counter", "dice", "diced",
    "driveway", "flour", "fridge", "fried", "fry", "garden", "grill", "grilled", "hot", "kitchen", "knife", "leg",
    "livingroom", "of", "oil", "olive", "onion", "orange", "oven", "pantry", "parsley", "patio", "pepper", "pork",
    "potato", "purple", "raw", "red", "roast", "roasted", "salt", "shed", "shelf", "showcase", "slice", "sliced",
    "sofa", "stove", "street", "supermarket", "table", "toilet", "toolbox", "uncut", "water", "white", "wing",
    "workbench", "yellow",
    "take", "from", "drop", "eat", "prepare", "meal", "cook", "with", "open", "close", "go", "north", "south",
    "east", "west", "put", "on", "insert", "into", "carrying", "nothing", "closed", "empty", "score",
)


def select_commands(admissible) -> tuple[list[str], int]:
    """(the COMMAND_SLOTS commands of the slots, how many admissible commands did not fit)."""
    useful = sorted({str(c).strip().lower() for c in admissible} - {""},
                    key=lambda c: (_rank(c), c))
    useful = [c for c in useful if c.split()[0] not in INFORMATION_COMMANDS]
    cut = max(len(useful) - COMMAND_SLOTS, 0)
    # The priority decides only what survives the cut; the slots list the survivors alphabetically, so a slot's
    # position says nothing about which command the recipe needs.
    useful = sorted(useful[:COMMAND_SLOTS])
    if not useful:  # a finished game admits nothing; the slots still hold a command the game answers
        useful = ["look"]
    return [useful[i % len(useful)] for i in range(COMMAND_SLOTS)], cut


def _rank(command: str) -> int:
    verb = command.split()[0]
    return COMMAND_ORDER.index(verb) if verb in COMMAND_ORDER else len(COMMAND_ORDER)


def join_mission(recipe: str, situation: str, commands) -> str:
    """The mission string of one state (module doc): recipe, situation, then the command slots, one per line."""
    lines = [recipe, situation, *commands]
    if len(lines) != MISSION_SEGMENTS or any("\n" in line for line in lines):
        raise ValueError(f"a cooking state needs the recipe, the situation and {COMMAND_SLOTS} one-line commands")
    return "\n".join(lines)


def split_mission(mission: str) -> list[str]:
    """The MISSION_SEGMENTS lines of a mission string, or ValueError naming what is wrong."""
    lines = str(mission).split("\n")
    if len(lines) != MISSION_SEGMENTS:
        raise ValueError(f"a cooking mission holds {MISSION_SEGMENTS} lines (recipe, situation, {COMMAND_SLOTS} "
                         f"commands), got {len(lines)}")
    return lines


# Fact names of textworld's cooking logic that describe a food's preparation, in the order they are written.
CUT_STATES = ("chopped", "sliced", "diced")
COOKED_STATES = ("fried", "roasted", "grilled", "burned")
_HOLDER_TYPES = ("c", "s", "oven", "stove", "toaster", "bbq")  # what other things are in or on


def recipe_line(recipe_text: str) -> str:
    """The cookbook's text (textworld's extra "recipe") -> "ingredients: a, b. directions: x, y"."""
    section, parts = None, {"ingredients": [], "directions": []}
    for line in str(recipe_text).splitlines():
        line = line.strip().lower()
        if line.rstrip(":") in parts:
            section = line.rstrip(":")
        elif line and section:
            parts[section].append(line)
    return f"ingredients: {', '.join(parts['ingredients'])}. directions: {', '.join(parts['directions'])}"


def describe_situation(facts, score: float, max_score: float) -> str:
    """The game's facts [(name, ((argument name, argument type), ...)), ...] -> one line: where the agent is, what
    it carries, what is in sight, the score. Deterministic (sorted), short: no flavour text.
    """
    props: dict[str, set] = {}
    for name, args in facts:
        props.setdefault(name, set()).add(tuple(a for a, _ in args))
    types = {a: t for _, args in facts for a, t in args}
    room = next((r for p, r in props.get("at", ()) if p == "P"), "somewhere")

    def food(name: str) -> str:
        states = [s for s in CUT_STATES + COOKED_STATES if (name,) in props.get(s, ())]
        return " ".join(states + [name])

    carried = sorted(o for o, where in props.get("in", ()) if where == "I")
    parts = [f"in the {room}", "carrying " + (", ".join(food(o) for o in carried) if carried else "nothing")]
    holders = sorted(x for x, r in props.get("at", ()) if r == room and types.get(x) in _HOLDER_TYPES)
    for holder in holders:
        contents = sorted(o for rel in ("in", "on") for o, h in props.get(rel, ()) if h == holder)
        state = "closed" if (holder,) in props.get("closed", ()) else ""
        inside = ", ".join(food(o) for o in contents) if contents else "empty"
        parts.append(f"{holder} {state}".strip() + ("" if state == "closed" else f": {inside}"))
    parts.append(f"score {score:g} of {max_score:g}")
    return "; ".join(parts)
