"""The TextWorld Cooking games, generated offline by textworld's own generator with fixed seeds and cached.

Game i of a level's training pool has seed ``1000 * level + i`` (the generator's ``train`` food split); held-out
game i has seed ``1000 * level + 500 + i`` (its ``test`` split). Games live under ``$BITRL_TEXTWORLD_GAMES``
(default ``~/.cache/bitrl_ros/textworld``) as ``L<level>-<split>-<seed>.z8`` with textworld's ``.json`` beside it;
a missing one is generated on first use (a few seconds each, progress on stderr). Nothing is downloaded.
"""
from __future__ import annotations

import os
from pathlib import Path
import shutil
import sys
import tempfile

from bitrl_ros.envs.cooking import HELDOUT_GAMES, LEVELS, TRAIN_GAMES

SPLITS = {"train": 0, "heldout": 500}  # our split name -> seed offset; the generator's food split below
_FOOD_SPLIT = {"train": "train", "heldout": "test"}


def games_dir() -> Path:
    return Path(os.environ.get("BITRL_TEXTWORLD_GAMES") or Path.home() / ".cache" / "bitrl_ros" / "textworld")


def game_seeds(level: int, split: str, count: int | None = None) -> list[int]:
    if level not in LEVELS or split not in SPLITS:
        raise ValueError(f"cooking level {level!r} / split {split!r}: levels {sorted(LEVELS)}, splits {list(SPLITS)}")
    count = (TRAIN_GAMES if split == "train" else HELDOUT_GAMES) if count is None else count
    return [1000 * level + SPLITS[split] + i for i in range(count)]


def game_files(level: int, split: str, count: int | None = None) -> list[Path]:
    """The game files of a level's pool, generating the missing ones."""
    out = []
    for seed in game_seeds(level, split, count):
        path = games_dir() / f"L{level}-{split}-{seed}.z8"
        if not (path.exists() and path.with_suffix(".json").exists()):
            print(f"bitrl: generating TextWorld Cooking level {level} {split} game seed {seed} -> {path}",
                  file=sys.stderr, flush=True)
            generate(level, split, seed, path)
        out.append(path)
    return out


def generate(level: int, split: str, seed: int, path: Path) -> Path:
    """Generate one game with textworld's tw-cooking generator into path (.z8 and .json), atomically."""
    import textworld
    from textworld.challenges.tw_cooking import cooking as tw_cooking

    path.parent.mkdir(parents=True, exist_ok=True)
    settings = {**LEVELS[level], "drop": False, "recipe_seed": 0, "split": _FOOD_SPLIT[split]}
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        options = textworld.GameOptions()
        options.seeds = seed
        options.path = str(Path(tmp) / path.name)
        options.file_ext = ".z8"
        options.force_recompile = True
        game = tw_cooking.make(settings, options)
        built = Path(textworld.generator.compile_game(game, options))
        # The .json first: a .z8 in place means its game is complete.
        shutil.move(str(built.with_suffix(".json")), str(path.with_suffix(".json")))
        shutil.move(str(built), str(path))
    return path
