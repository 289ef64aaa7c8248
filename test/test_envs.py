import gymnasium as gym
import numpy as np
import pytest

from bitrl_ros.envs import FINAL_OBS_KEY, get_spec, list_envs, make_env, make_vec_env
from bitrl_ros.envs.registry import LANGUAGE_FAMILIES

EXPECTED = [
    "CartPole-v1", "Acrobot-v1", "MountainCar-v0",
    "HalfCheetah-v4", "HalfCheetah-v5", "Hopper-v4", "Hopper-v5", "Walker2d-v4", "Walker2d-v5",
    "BabyAI-GoToRedBall-v0", "BabyAI-GoToLocal-v0", "SmartHome-Light-v0", "SmartHome-Light-Heldout-v0",
    "SmartHome-Light-HeldoutWording-v0", "SmartHome-Light-HeldoutRules-v0",
    *[f"TextWorld-Cooking-L{level}{split}-v0" for level in (1, 2, 3) for split in ("", "-Heldout")],
]
# Cooking levels 2 and 3 would generate 60 games first (test_cooking plays level 1's).
BUILT = [e for e in EXPECTED if not e.startswith(("TextWorld-Cooking-L2", "TextWorld-Cooking-L3"))]


def test_registry_lists_every_env():
    assert list_envs() == EXPECTED


def test_unknown_env_names_valid_ids():
    with pytest.raises(ValueError, match="unknown env_id 'Nope-v0'.*CartPole-v1.*Walker2d-v5"):
        get_spec("Nope-v0")


@pytest.mark.parametrize("env_id", BUILT)
def test_spec_matches_real_env(env_id, monkeypatch):
    if env_id.startswith("TextWorld"):
        from test_cooking import GAMES

        pytest.importorskip("textworld")
        monkeypatch.setenv("BITRL_TEXTWORLD_GAMES", str(GAMES))
    spec = get_spec(env_id)
    env = make_env(env_id, seed=0)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (spec.obs_dim,) == (len(spec.field_names),) == (len(spec.field_decimals),)
    assert len(set(spec.field_names)) == spec.obs_dim
    kind = "discrete" if isinstance(env.action_space, gym.spaces.Discrete) else "continuous"
    assert kind == spec.action_kind
    if spec.family in LANGUAGE_FAMILIES:  # these envs end their episodes themselves, at max_steps
        assert spec.max_episode_steps == env.unwrapped.max_steps
    else:
        assert spec.max_episode_steps == gym.spec(env_id).max_episode_steps
    if spec.family != "cooking":  # built by our wrapper, not registered with gymnasium
        assert spec.solved_return == gym.spec(env_id).reward_threshold
    env.close()


def _rollout(env_id, num_envs, seed, steps):
    envs = make_vec_env(env_id, num_envs, seed)
    obs, _ = envs.reset()
    seen = [obs]
    for _ in range(steps):
        obs, *_ = envs.step(envs.action_space.sample())
        seen.append(obs)
    envs.close()
    return np.array(seen)


@pytest.mark.parametrize("env_id,steps", [("CartPole-v1", 150), ("HalfCheetah-v5", 20), ("BabyAI-GoToLocal-v0", 100)])
def test_vec_env_seeding_is_reproducible(env_id, steps):
    a = _rollout(env_id, 3, seed=7, steps=steps)
    b = _rollout(env_id, 3, seed=7, steps=steps)
    c = _rollout(env_id, 3, seed=8, steps=steps)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_truncation_exposes_final_obs_and_episode_stats():
    envs = make_vec_env("MountainCar-v0", 2, seed=0)
    obs, _ = envs.reset()
    for t in range(200):
        last = obs
        obs, reward, terminated, truncated, infos = envs.step(np.zeros(2, dtype=np.int64))  # push left: never solves
    assert truncated.all() and not terminated.any()
    assert infos["_" + FINAL_OBS_KEY].all()
    final = np.stack(infos[FINAL_OBS_KEY])
    assert final.shape == (2, 2) and not np.array_equal(final, last)
    np.testing.assert_array_equal(obs[:, 1], 0.0)  # SAME_STEP: obs already holds the next episode's reset state
    assert infos["_episode"].all()
    np.testing.assert_array_equal(infos["episode"]["l"], [200, 200])
    np.testing.assert_array_equal(infos["episode"]["r"], [-200.0, -200.0])
    envs.close()
