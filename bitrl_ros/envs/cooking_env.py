"""TextWorld Cooking as a gymnasium env (layout and text: cooking.py; games: cooking_games.py).

Each reset picks one game of the pool with the env's RNG and plays it in textworld's Z-machine player. Reward:
the game's points as a fraction of its maximum (a solved game returns 1.0), so every level pays on one scale.
An episode ends when the game does (won: the meal eaten; lost: a wrong step the game punishes) or after
MAX_STEPS[level] commands (truncated). ``info["success"]`` on the last step: the game was won.
"""
from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np

from bitrl_ros.envs.cooking import (COMMAND_SLOTS, describe_situation, join_mission, MAX_STEPS, recipe_line,
                                    select_commands)
from bitrl_ros.envs.cooking_games import game_files


class CookingEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, level: int = 1, split: str = "train", games: int | None = None):
        self.level, self.split = level, split
        self.games = game_files(level, split, games)
        self.max_steps = MAX_STEPS[level]
        self.action_space = gym.spaces.Discrete(COMMAND_SLOTS)
        self.observation_space = gym.spaces.Box(0.0, 100.0, (2,), dtype=np.float32)
        self._players: dict = {}
        self._game = None
        self.commands_cut = 0  # admissible commands that did not fit the slots, over the env's life

    def _player(self, path):
        if path not in self._players:
            import textworld

            infos = textworld.EnvInfos(admissible_commands=True, facts=True, extras=["recipe"], score=True,
                                       max_score=True, won=True, lost=True)
            with warnings.catch_warnings():
                # jericho does not know these games; textworld keeps their score and moves itself.
                warnings.filterwarnings("ignore", message=".*is not fully supported.*")
                self._players[path] = textworld.start(str(path), request_infos=infos)
        return self._players[path]

    def _observe(self, state):
        self._score, self._max_score = float(state.score), float(max(state.max_score, 1))
        facts = [(f.name, tuple((a.name, a.type) for a in f.arguments)) for f in state.facts]
        self._slots, cut = select_commands(state.admissible_commands or [])
        self.commands_cut += cut
        mission = join_mission(self._recipe, describe_situation(facts, self._score, self._max_score), self._slots)
        return np.array([self._score, self._max_score], dtype=np.float32), mission

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._game = self._player(self.games[int(self.np_random.integers(len(self.games)))])
        state = self._game.reset()
        self._recipe = recipe_line(state["extra.recipe"])
        self._steps = 0
        obs, self._mission = self._observe(state)
        return obs, {"mission": self._mission}

    def step(self, action):
        if self._game is None:
            raise RuntimeError("step() before reset()")
        previous = self._score
        state, _, done = self._game.step(self._slots[int(action)])
        self._steps += 1
        obs, self._mission = self._observe(state)
        terminated = bool(done)
        truncated = not terminated and self._steps >= self.max_steps
        info = {"mission": self._mission}
        if terminated or truncated:
            info["success"] = bool(state.won)
        return obs, (self._score - previous) / self._max_score, terminated, truncated, info

    def close(self):
        for player in self._players.values():
            player.close()
        self._players.clear()


def make(env_id: str) -> gym.Env:
    """TextWorld-Cooking-L<level>[-Heldout]-v0."""
    name = env_id.split("-")
    level = int(name[2].lstrip("L"))
    return CookingEnv(level, "heldout" if "Heldout" in name else "train")
