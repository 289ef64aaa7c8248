"""The SmartHome-Light gymnasium env (its definition and rules: smarthome.py)."""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from bitrl_ros.envs.smarthome import (ASLEEP, AWAKE, daylight, ENERGY, ENV_SPLITS, HELDOUT_RULE_SETS, HELDOUT_RULES,
                                      instruction, judge, LEVELS, NUM_ACTIONS, ROOMS, schedule, SPLITS, START_HOUR,
                                      STEP_HOURS, STEPS, SUCCESS_COMFORT, TRAIN_RULE_SETS, VIOLATION_COST, WEATHER)


class SmartHomeLight(gym.Env):
    metadata = {"render_modes": []}
    max_steps = STEPS

    def __init__(self, split: str = "train"):
        if split not in SPLITS:
            raise ValueError(f"unknown SmartHome-Light split {split!r}; expected one of {', '.join(SPLITS)}")
        self.split = split
        self.rule_sets = HELDOUT_RULE_SETS if split in HELDOUT_RULES else TRAIN_RULE_SETS
        high = np.array([24.0, 1.0, len(WEATHER) - 1] + [ASLEEP] * len(ROOMS) + [len(LEVELS) - 1.0] * len(ROOMS),
                        dtype=np.float32)
        self.observation_space = gym.spaces.Box(np.zeros_like(high), high, dtype=np.float32)
        self.action_space = gym.spaces.Discrete(NUM_ACTIONS)

    # The day's state: self.k (quarter hour), self.where (schedule), self.lights, self.weather, self.rules.
    def _hour(self) -> float:
        return START_HOUR + self.k * STEP_HOURS

    def _obs(self) -> np.ndarray:
        here, state = self.where[self.k], ASLEEP if self.asleep[self.k] else AWAKE
        occupied = [float(state) if here == r else 0.0 for r in range(len(ROOMS))]
        return np.array([self._hour(), daylight(self._hour(), self.weather), self.weather, *occupied, *self.lights],
                        dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        rng = self.np_random
        self.rules = self.rule_sets[rng.integers(len(self.rule_sets))]
        self.mission = instruction(self.rules, rng, self.split)
        self.weather = int(rng.integers(len(WEATHER)))
        self.where, self.asleep = schedule(rng)
        self.lights = np.zeros(len(ROOMS), dtype=np.float32)
        self.k = 0
        self.need = self.lit = self.violations = 0
        return self._obs(), {"mission": self.mission}

    def step(self, action):
        action = int(action)
        if not 0 <= action < NUM_ACTIONS:
            raise ValueError(f"SmartHome-Light action {action} outside 0..{NUM_ACTIONS - 1}")
        if action:
            room, level = divmod(action - 1, len(LEVELS))
            self.lights[room] = level
        hour = self._hour()
        before = self.where[self.k - 1] if self.k else self.where[0]
        need, lit, comfort, what = judge(hour, self.where[self.k], not self.asleep[self.k], before, self.lights,
                                         self.rules, daylight(hour, self.weather))
        reward = comfort - sum(ENERGY[int(v)] for v in self.lights) - VIOLATION_COST * len(what)
        self.need, self.lit, self.violations = self.need + need, self.lit + lit, self.violations + len(what)
        self.k += 1
        done = self.k >= STEPS
        info = {"mission": self.mission, "violations": what}
        if done:
            comfort = self.lit / self.need if self.need else 1.0
            info.update({"success": bool(self.violations == 0 and comfort >= SUCCESS_COMFORT), "comfort": comfort,
                         "day_violations": self.violations})
            self.k = STEPS - 1  # the observation after the last step repeats the last quarter hour
        return self._obs(), float(reward), done, False, info


def register() -> None:
    for env_id, split in ENV_SPLITS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=SmartHomeLight, kwargs={"split": split})  # the day ends it: no TimeLimit
