"""SmartHome-Light: dynamics and reward on scripted days, the held-out instruction split, the text renderer, and a
short real training run through `bitrl train`.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from bitrl_ros.config import load_train_config
from bitrl_ros.envs import get_spec, make_env, smarthome
from bitrl_ros.errors import ConfigError, InvalidObservation
from bitrl_ros.serialize import get_serializer
from bitrl_ros.train import Trainer

ENV, HELDOUT = "SmartHome-Light-v0", "SmartHome-Light-Heldout-v0"


def _wanted(env) -> np.ndarray:
    """The light level every room should have now, from the env's own state (what a perfect agent knows)."""
    u = env.unwrapped
    hour, here, awake = u._hour(), u.where[u.k], not u.asleep[u.k]
    wanted = np.zeros(len(smarthome.ROOMS))
    if here >= 0 and awake and smarthome.daylight(hour, u.weather) < smarthome.DARK:
        if not ("baby_dark" in u.rules and here == smarthome.BEDROOM and hour >= smarthome.BABY_HOUR):
            reading = "read_bright" in u.rules and here == smarthome.LIVING and hour >= smarthome.DINNER[1]
            wanted[here] = 2 if reading or "prefer_dim" not in u.rules else 1
    return wanted


def _oracle_action(env) -> int:
    """One light change per step: a light that would break a rule now first (its grace step is over), then the
    resident's room, then the rest.
    """
    u = env.unwrapped
    wanted = _wanted(env)
    here, before = u.where[u.k], u.where[u.k - 1] if u.k else u.where[0]

    def urgency(room):
        return 0 if u.lights[room] > wanted[room] and room not in (here, before) else 1 if room == here else 2

    for room in sorted(range(len(smarthome.ROOMS)), key=urgency):
        if u.lights[room] != wanted[room]:
            return 1 + 3 * room + int(wanted[room])
    return 0


def _day(env_id: str, seed: int, policy):
    env = make_env(env_id, seed)
    env.reset(seed=seed)
    total, violations = 0.0, []
    while True:
        _, reward, terminated, truncated, info = env.step(policy(env))
        total += reward
        violations += info["violations"]
        if terminated or truncated:
            assert terminated and not truncated
            return env, total, violations, info


@pytest.mark.parametrize("env_id", [ENV, HELDOUT])
def test_a_rule_following_day_succeeds_and_lights_left_on_fail(env_id):
    successes = 0
    for seed in range(30):
        env, total, violations, info = _day(env_id, seed, _oracle_action)
        assert violations == [] and info["day_violations"] == 0, (seed, env.unwrapped.mission, violations)
        assert info["comfort"] >= 0.9 and info["success"]
        successes += 1
        # The same day with every light on full: violations whenever a rule forbids it, and a lower return.
        env2, total2, violations2, info2 = _day(env_id, seed, lambda e: 1 + 3 * (e.unwrapped.k % 4) + 2)
        assert total2 < total
        if set(env.unwrapped.rules) & {"dark_empty", "baby_dark", "prefer_dim"}:
            assert violations2 and not info2["success"]
            assert {v.split(":")[0] for v in violations2} <= set(env.unwrapped.rules)
    assert successes == 30


def test_an_empty_dark_room_costs_nothing_and_a_violation_is_penalised():
    env = make_env(ENV, 0)
    u = env.unwrapped
    env.reset(seed=0)
    u.rules, u.k = ("dark_empty",), 0
    u.where[:] = smarthome.KITCHEN
    u.asleep[:] = False
    u.weather = 0
    _, reward, *_ = env.step(1 + 3 * smarthome.KITCHEN + 1)  # dim in the occupied kitchen at 06:00 (dark)
    assert reward == pytest.approx(0.10 - 0.02)
    _, reward, *_ = env.step(0)  # nothing changes: the same comfort and energy, the empty rooms dark for free
    assert reward == pytest.approx(0.08)
    _, reward, _, _, info = env.step(1 + 3 * smarthome.BEDROOM + 1)  # a light in the empty bedroom
    assert reward == pytest.approx(0.10 - 0.04 - 0.5) and info["violations"] == ["dark_empty:bedroom"]


def test_heldout_wordings_and_rule_sets_never_reach_training():
    rng = np.random.default_rng(0)
    train = {smarthome.instruction(rules, rng, "train") for _ in range(200) for rules in smarthome.TRAIN_RULE_SETS}
    held_phrases = [p for _, held in smarthome.PARAPHRASES.values() for p in held] + list(smarthome.NO_RULE[1])
    assert not any(p in t for p in held_phrases for t in train)
    assert not set(smarthome.TRAIN_RULE_SETS) & set(smarthome.HELDOUT_RULE_SETS)
    missions = set()
    for seed in range(100):
        env = make_env(ENV, seed)
        _, info = env.reset(seed=seed)
        missions.add(info["mission"])
        assert env.unwrapped.rules in smarthome.TRAIN_RULE_SETS
    assert missions <= train and len(missions) > 10
    env = make_env(HELDOUT, 0)
    for seed in range(50):
        _, info = env.reset(seed=seed)
        assert env.unwrapped.rules in smarthome.HELDOUT_RULE_SETS and info["mission"] not in train
    # The baseline's vocabulary holds training words only: some held-out words are unknown to it.
    held_words = set(re.findall(r"[a-z]+", " ".join(held_phrases)))
    assert held_words - set(get_spec(ENV).mission_words)
    assert get_spec(ENV).mission_words == get_spec(HELDOUT).mission_words


def test_the_one_sided_heldout_splits_change_the_wording_or_the_rule_sets_only():
    rng = np.random.default_rng(0)
    train = {smarthome.instruction(rules, rng, "train") for _ in range(200) for rules in smarthome.TRAIN_RULE_SETS}
    held_phrases = [p for _, held in smarthome.PARAPHRASES.values() for p in held] + list(smarthome.NO_RULE[1])
    for env_id, rule_sets, held_wording in (("SmartHome-Light-HeldoutWording-v0", smarthome.TRAIN_RULE_SETS, True),
                                            ("SmartHome-Light-HeldoutRules-v0", smarthome.HELDOUT_RULE_SETS, False)):
        env = make_env(env_id, 0)
        assert get_spec(env_id).mission_words == get_spec(ENV).mission_words
        for seed in range(60):
            _, info = env.reset(seed=seed)
            rules, mission = env.unwrapped.rules, info["mission"]
            assert rules in rule_sets
            # Every rule is said in a held-out paraphrase, or every one in a training paraphrase.
            said = [p for r in rules for p in smarthome.PARAPHRASES[r][held_wording] if p in mission]
            assert len(said) == len(rules), (env_id, mission)
            assert any(p in mission for p in held_phrases) == held_wording
            if rules and not held_wording:
                assert mission not in train  # a combination training never says


def test_renderer_is_deterministic_and_refuses_impossible_states():
    ser = get_serializer(ENV)
    values = np.array([19.75, 0.1, 2, 1, 0, 0, 0, 1, 0, 0, 0], dtype=np.float64)
    text, spans = ser.render(values, mission="Keep empty rooms dark.")
    assert text == ("keep empty rooms dark. 19:45, rainy, daylight 0.10. living room: someone awake, light dim. "
                    "kitchen: empty, light off. bedroom: empty, light off. bathroom: empty, light off.")
    assert [text[slice(*s)] for s in spans[0]] == ["keep empty rooms dark"]
    assert [text[slice(*s)] for s in spans[1:]] == [
        "19:45, rainy, daylight 0.10", "living room: someone awake, light dim", "kitchen: empty, light off",
        "bedroom: empty, light off", "bathroom: empty, light off"]
    assert len(spans) == len(get_spec(ENV).readout_fields) == 6
    assert ser.render(values.copy(), mission="keep empty rooms dark")[0] == text
    # The instruction comes in pieces, its clauses; the connectors belong to no piece.
    mission = "Keep empty rooms dark; also save energy: prefer dim, and no light in empty rooms"
    text, spans = ser.render(values, mission=mission)
    assert [text[slice(*s)] for s in spans[0]] == ["keep empty rooms dark", "also save energy: prefer dim",
                                                   "no light in empty rooms"]
    values[8] = 1.5
    with pytest.raises(InvalidObservation, match="light_kitchen"):
        ser.render(values, mission="x")


def test_clauses_encoded_alone_add_up_whatever_their_order():
    """features.context=field reads the instruction as the sum of its clauses, each encoded on its own: a set."""
    from bitrl_ros.backbone import load_backbone
    from bitrl_ros.features import StateEncoder

    backbone = load_backbone("minilm-bitnet-distilled", cache_mb=8)
    encoder = StateEncoder(get_spec(ENV), get_serializer(ENV), backbone, "fields", context="field")
    values = np.array([[19.75, 0.1, 2, 1, 0, 0, 0, 1, 0, 0, 0]] * 4)
    a, b = "keep empty rooms dark", "save energy: prefer dim"
    feats = encoder(values, [f"{a}; {b}", f"{b} and {a}", a, b]).reshape(4, 6, -1)
    np.testing.assert_allclose(feats[0], feats[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(feats[0, 0], feats[2, 0] + feats[3, 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(feats[0, 1:], feats[2, 1:])  # the home reads the same whatever the instruction
    joint = StateEncoder(get_spec(ENV), get_serializer(ENV), backbone, "fields")
    joint = joint(values[:2], [f"{a}; {b}", f"{b} and {a}"])
    assert np.abs(joint[0] - joint[1]).max() > 1e-3  # read within the text, the order shows


@pytest.mark.slow
def test_short_training_run_through_bitrl_train(tmp_path):
    cfg = load_train_config(overrides={"env": ENV, "total_steps": 576, "eval_episodes": 1, "ppo.num_steps": 72,
                                       "ppo.update_epochs": 1, "features.max_tokens": 128})
    result = Trainer(cfg, run_dir=tmp_path / "run", progress=False).run()
    assert result.episodes == 8 and result.success_rate is not None and result.eval_success_rate is not None
    assert result.mean_tokens > 40


def test_eval_env_must_look_like_the_training_env():
    cfg = load_train_config(overrides={"env": ENV, "eval_env": HELDOUT})
    assert cfg.eval_env == HELDOUT
    with pytest.raises(ConfigError, match="eval_env.*observation, actions and mission vocabulary"):
        load_train_config(overrides={"env": "CartPole-v1", "eval_env": HELDOUT})
    with pytest.raises(ConfigError, match="eval_env"):
        load_train_config(overrides={"env": ENV, "eval_env": "Nope-v0"})
