"""The environments bitrl_ros knows, what their observations mean, and how to build them reproducibly.

Vector envs use ``gymnasium.vector.AutoresetMode.SAME_STEP``: when sub-env i terminates or truncates, ``step``
returns the *reset* observation of the next episode in ``obs[i]`` and the last observation of the finished
episode in ``infos["final_obs"][i]`` (mask ``infos["_final_obs"]``; the finished episode's info dict is in
``infos["final_info"]``). A PPO trainer bootstraps truncated episodes from ``infos["final_obs"]``.
Finished-episode statistics come from ``RecordEpisodeStatistics``: ``infos["episode"]["r"]`` (return),
``infos["episode"]["l"]`` (length), ``infos["episode"]["t"]`` (wall time), valid where ``infos["_episode"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TYPE_CHECKING
import warnings

if TYPE_CHECKING:
    import gymnasium as gym

# gymnasium is imported where envs are built, not with the specs: the nodes that only read specs (serializer,
# encoder) stay ~11 MB smaller.
FINAL_OBS_KEY = "final_obs"
FINAL_INFO_KEY = "final_info"
EPISODE_KEY = "episode"


@dataclass(frozen=True)
class EnvSpec:
    env_id: str
    family: str  # "classic" | "mujoco" | "babyai" | "smarthome" | "cooking"
    obs_dim: int
    field_names: tuple[str, ...]
    action_kind: str  # "discrete" | "continuous"
    solved_return: float | None
    default_precision: int
    max_episode_steps: int
    # Decimals per field at default_precision. Each field's decimals are picked so its usual range stays within
    # +-341 units of the last decimal: every integer 0..341 is a single WordPiece token in the MiniLM vocabulary,
    # which is what keeps the compact format short. Empty means default_precision for every field.
    field_decimals: tuple[int, ...] = ()
    # Language-conditioned envs: the text is rendered from the whole view plus a mission, not one value per field,
    # so the per-field readouts read these named segments of the text instead of field_names.
    text_fields: tuple[str, ...] = ()
    # The mission's bag-of-words vocabulary (the `mlp` baseline's mission encoding); empty: the env has no mission.
    mission_words: tuple[str, ...] = ()
    # The env says whether each episode succeeded (info["success"] on its last step): success rates are reported.
    reports_success: bool = False
    # The mission holds this many newline-separated segments, each with its own bag of words for the `mlp`
    # baseline (TextWorld Cooking: recipe, situation, one per command slot); 1: the mission is one text.
    mission_segments: int = 1
    # The actions are command slots whose texts are the mission's last command_slots segments, scored by the
    # policy head one by one (0: a plain categorical or Gaussian policy).
    command_slots: int = 0

    def __post_init__(self):
        if len(self.field_names) != self.obs_dim:
            raise ValueError(f"{self.env_id}: {len(self.field_names)} field names for obs_dim {self.obs_dim}")
        if not self.field_decimals:
            object.__setattr__(self, "field_decimals", (self.default_precision,) * self.obs_dim)
        if len(self.field_decimals) != self.obs_dim:
            raise ValueError(f"{self.env_id}: {len(self.field_decimals)} field decimals for obs_dim {self.obs_dim}")

    @property
    def readout_fields(self) -> tuple[str, ...]:
        """What a per-field readout gives one vector each: the text segments, or the observation fields."""
        return self.text_fields or self.field_names

    @property
    def raw_dim(self) -> int:
        """Width of the raw observation the heads can see: the values, plus the mission's bag of words."""
        return self.obs_dim + len(self.mission_words) * self.mission_segments


# MuJoCo layouts follow the gymnasium docs: qpos without the root x position, then qvel.
# "_dot" marks a time derivative (linear or angular velocity), as in CartPole's x_dot.
_CHEETAH_JOINTS = ("bthigh", "bshin", "bfoot", "fthigh", "fshin", "ffoot")
_HOPPER_JOINTS = ("thigh", "leg", "foot")
_WALKER_JOINTS = ("thigh", "leg", "foot", "thigh_left", "leg_left", "foot_left")


def _mujoco_fields(joints: tuple[str, ...]) -> tuple[str, ...]:
    positions = ("rootz", "rooty") + joints
    velocities = ("rootx_dot", "rootz_dot", "rooty_dot") + tuple(j + "_dot" for j in joints)
    return positions + velocities


def _classic(env_id, fields, action_kind, solved, steps, decimals=()):
    return EnvSpec(env_id, "classic", len(fields), fields, action_kind, solved, 2, steps, tuple(decimals))


def _mujoco(env_id, joints, solved):
    fields = _mujoco_fields(joints)
    # Positions and angles stay within a few units (2 decimals); velocities reach tens (1 decimal).
    decimals = tuple(1 if f.endswith("_dot") else 2 for f in fields)
    return EnvSpec(env_id, "mujoco", len(fields), fields, "continuous", solved, 2, 1000, decimals)


_SPECS: dict[str, EnvSpec] = {
    s.env_id: s
    for s in [
        _classic("CartPole-v1", ("x", "x_dot", "theta", "theta_dot"), "discrete", 475.0, 500),
        # Acrobot's angular velocities reach 4*pi and 9*pi; MountainCar's velocity stays within +-0.07.
        _classic(
            "Acrobot-v1", ("cos1", "sin1", "cos2", "sin2", "w1", "w2"), "discrete", -100.0, 500, (2, 2, 2, 2, 1, 1)
        ),
        _classic("MountainCar-v0", ("pos", "vel"), "discrete", -110.0, 200, (2, 3)),
        *[_mujoco(f"HalfCheetah-{v}", _CHEETAH_JOINTS, 4800.0) for v in ("v4", "v5")],
        *[_mujoco(f"Hopper-{v}", _HOPPER_JOINTS, 3800.0) for v in ("v4", "v5")],
        *[_mujoco(f"Walker2d-{v}", _WALKER_JOINTS, None) for v in ("v4", "v5")],
    ]
}


NUMERIC_FAMILIES = ("classic", "mujoco")  # states that are numbers only, one text value per field


def list_envs(families: tuple[str, ...] | None = None) -> list[str]:
    """Every registered env id, or those of the given families (e.g. NUMERIC_FAMILIES)."""
    return [env_id for env_id, spec in _SPECS.items() if families is None or spec.family in families]


def get_spec(env_id: str) -> EnvSpec:
    try:
        return _SPECS[env_id]
    except KeyError:
        raise ValueError(f"unknown env_id {env_id!r}; valid ids: {', '.join(_SPECS)}") from None


def _babyai(env_id, max_steps):
    from bitrl_ros.envs import babyai

    return EnvSpec(env_id, "babyai", babyai.VIEW_VALUES, babyai.FIELD_NAMES, "discrete", None, 0, max_steps,
                   text_fields=babyai.TEXT_FIELDS, mission_words=babyai.MISSION_WORDS, reports_success=True)


def _smarthome(env_id):
    from bitrl_ros.envs import smarthome

    return EnvSpec(env_id, "smarthome", len(smarthome.FIELD_NAMES), smarthome.FIELD_NAMES, "discrete", None, 2,
                   smarthome.STEPS, text_fields=smarthome.TEXT_FIELDS, mission_words=smarthome.MISSION_WORDS,
                   reports_success=True)


def _smarthome_ids():
    from bitrl_ros.envs import smarthome

    return tuple(smarthome.ENV_SPLITS)


def _cooking(level, heldout=False):
    from bitrl_ros.envs import cooking

    return EnvSpec(f"TextWorld-Cooking-L{level}{'-Heldout' if heldout else ''}-v0", "cooking",
                   len(cooking.FIELD_NAMES), cooking.FIELD_NAMES, "discrete", None, 0, cooking.MAX_STEPS[level],
                   text_fields=cooking.TEXT_FIELDS, mission_words=cooking.MISSION_WORDS, reports_success=True,
                   mission_segments=cooking.MISSION_SEGMENTS, command_slots=cooking.COMMAND_SLOTS)


_SPECS.update({s.env_id: s for s in [_babyai("BabyAI-GoToRedBall-v0", 64), _babyai("BabyAI-GoToLocal-v0", 64),
                                     *[_smarthome(env_id) for env_id in _smarthome_ids()],
                                     *[_cooking(level, heldout) for level in (1, 2, 3) for heldout in (False, True)]]})
LANGUAGE_FAMILIES = ("babyai", "smarthome", "cooking")  # states that carry a mission in words


def _make_raw(env_id: str) -> gym.Env:
    import gymnasium as gym

    spec = get_spec(env_id)
    # Families built by a package of their own, each with its wrapper module's make(env_id).
    packaged = {"babyai": ("babyai_env", "minigrid"), "cooking": ("cooking_env", "textworld")}
    if spec.family in packaged:
        import importlib

        module, package = packaged[spec.family]
        try:
            return importlib.import_module(f"bitrl_ros.envs.{module}").make(env_id)
        except ImportError as exc:
            raise RuntimeError(f"cannot build {env_id}: the {package} package is missing ({exc}); "
                               "`make setup` installs it") from exc
    if spec.family == "smarthome":
        from bitrl_ros.envs import smarthome_env

        smarthome_env.register()
    with warnings.catch_warnings():
        # The v4 MuJoCo envs still build and run under gymnasium 1.4 but warn that v5 exists.
        warnings.filterwarnings("ignore", message=".*is out of date.*")
        try:
            env = gym.make(env_id)
        except (gym.error.Error, ImportError, OSError) as exc:
            raise RuntimeError(f"cannot build {env_id} ({spec.family} family): {exc}") from exc
    if env.observation_space.shape != (spec.obs_dim,):
        raise RuntimeError(
            f"{env_id} observation shape {env.observation_space.shape} does not match the registry ({spec.obs_dim},)"
        )
    return env


def make_env(env_id: str, seed: int | None = None) -> gym.Env:
    """One env with episode statistics (``info["episode"]`` at episode end), reset once with ``seed``.

    Call ``reset()`` (no seed) to continue from the seeded RNG, or ``reset(seed=seed)`` again: both reproduce.
    """
    from gymnasium.wrappers import RecordEpisodeStatistics

    env = RecordEpisodeStatistics(_make_raw(env_id))
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


def make_vec_env(env_id: str, num_envs: int, seed: int | None = None,
                 wrapper: Callable[[gym.Env], gym.Env] | None = None) -> gym.vector.VectorEnv:
    """``num_envs`` copies in a SyncVectorEnv (SAME_STEP autoreset, see module doc) with episode statistics.

    Sub-env i is seeded with ``seed + i``; the action space with ``seed``. wrapper: applied to each sub-env
    (e.g. envs.faults.SensorGlitch, to see what a faulty sensor does to learning).
    """
    from gymnasium.vector import AutoresetMode, SyncVectorEnv
    from gymnasium.wrappers.vector import RecordEpisodeStatistics as VectorRecordEpisodeStatistics

    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    get_spec(env_id)
    wrap = wrapper or (lambda env: env)
    envs = SyncVectorEnv([lambda: wrap(_make_raw(env_id)) for _ in range(num_envs)],
                         autoreset_mode=AutoresetMode.SAME_STEP)
    envs = VectorRecordEpisodeStatistics(envs)
    envs.reset(seed=seed)
    envs.action_space.seed(seed)
    return envs
