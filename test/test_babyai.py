"""BabyAI: the flat observation + mission layout, the grid text renderer on hand-built views, the bag-of-words
baseline encoding, missions through the vector env, and short real training runs through `bitrl train`.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("minigrid")

from bitrl_ros.config import load_train_config  # noqa: E402
from bitrl_ros.envs import babyai, get_spec, make_env, make_vec_env  # noqa: E402
from bitrl_ros.errors import InvalidObservation  # noqa: E402
from bitrl_ros.features import StateEncoder  # noqa: E402
from bitrl_ros.serialize import get_serializer  # noqa: E402
from bitrl_ros.serialize.grid_text import describe_view  # noqa: E402
from bitrl_ros.serialize.mission import bag_of_words, normalize_mission  # noqa: E402
from bitrl_ros.train import missions_of, Trainer  # noqa: E402

ENV = "BabyAI-GoToRedBall-v0"
OBJ = {name: i for i, name in enumerate(babyai.OBJECTS)}
C = {name: i for i, name in enumerate(babyai.COLORS)}


def _view(direction: int = 0) -> np.ndarray:
    """An empty room seen from the agent: floor everywhere, nothing carried."""
    image = np.zeros((babyai.VIEW, babyai.VIEW, 3), dtype=np.float32)
    image[:, :, 0] = OBJ["empty"]
    return image, direction


def _values(image, direction) -> np.ndarray:
    return babyai.flatten({"image": image, "direction": direction})


def test_constants_match_minigrid():
    from minigrid.core.constants import COLOR_TO_IDX, DIR_TO_VEC, OBJECT_TO_IDX, STATE_TO_IDX

    assert list(babyai.OBJECTS) == sorted(OBJECT_TO_IDX, key=OBJECT_TO_IDX.get)
    assert list(babyai.COLORS) == sorted(COLOR_TO_IDX, key=COLOR_TO_IDX.get)
    assert list(babyai.DOOR_STATES) == sorted(STATE_TO_IDX, key=STATE_TO_IDX.get)
    assert len(DIR_TO_VEC) == len(babyai.DIRECTIONS) and tuple(DIR_TO_VEC[0]) == (1, 0)  # 0 is east


def test_renderer_says_left_right_ahead_and_what_is_carried():
    image, direction = _view(direction=1)
    image[1, 4] = (OBJ["ball"], C["red"], 0)      # 2 ahead, 2 left
    image[4, 6] = (OBJ["key"], C["grey"], 0)      # beside the agent, 1 right
    image[3, 2] = (OBJ["door"], C["blue"], 2)     # 4 ahead, locked
    image[3, 6] = (OBJ["key"], C["yellow"], 0)    # the agent's own cell: what it carries
    image[:, 0] = (OBJ["wall"], C["grey"], 0)     # a wall 6 ahead
    text = describe_view(_values(image, direction))
    # Nearest first; at equal steps (4) the one further ahead first.
    assert text == ("facing south, carrying a yellow key. walls: 6 ahead. grey key one right; "
                    "locked blue door 4 ahead; red ball 2 ahead, two left.")
    # Mirrored, the ball is on the right.
    image[1, 4], image[5, 4] = (OBJ["empty"], 0, 0), (OBJ["ball"], C["red"], 0)
    assert "red ball 2 ahead, two right" in describe_view(_values(image, direction))


def test_renderer_is_deterministic_and_splits_mission_self_and_objects():
    image, direction = _view()
    image[0, 6] = (OBJ["wall"], C["grey"], 0)
    ser = get_serializer(ENV, "structured")  # the format does not apply: BabyAI has one renderer
    values = _values(image, direction)
    text, spans = ser.render(values, mission="  Go to the RED ball. ")
    assert text == "go to the red ball. facing east, carrying nothing. walls: 3 left. no objects in view."
    assert [text[a:b] for a, b in spans[:2]] == ["go to the red ball", "facing east, carrying nothing. walls: 3 left"]
    assert [text[a:b] for a, b in spans[2]] == ["no objects in view"]
    image[2, 5] = (OBJ["ball"], C["red"], 0)
    image[3, 3] = (OBJ["box"], C["green"], 0)
    two, spans = ser.render(_values(image, direction), mission="go to the red ball")
    assert [two[a:b] for a, b in spans[2]] == ["red ball 1 ahead, one left", "green box 3 ahead"]
    assert two.endswith("red ball 1 ahead, one left; green box 3 ahead.")
    assert ser.render(values.copy(), mission="go to the red ball")[0] == text
    assert ser.describe() == {"format": "grid_text", "numbers": "none"}
    bad = values.copy()
    bad[0] = 42  # no such object index
    with pytest.raises(InvalidObservation, match="view cell 0"):
        ser.render(bad, mission="go")


def test_bag_of_words_counts_known_words_and_ignores_others():
    bow = bag_of_words(["Go to the red ball", "fetch the crimson sphere"], babyai.MISSION_WORDS)
    assert bow.shape == (2, len(babyai.MISSION_WORDS))
    words = dict(zip(babyai.MISSION_WORDS, bow[0]))
    assert words["go"] == words["red"] == words["ball"] == 1 and bow[0].sum() == 5
    assert bow[1].sum() == 1  # only "the"
    assert normalize_mission("Pick up  a KEY.") == "pick up a key"


def test_vector_env_hands_each_observation_its_mission():
    spec = get_spec("BabyAI-GoToLocal-v0")
    envs = make_vec_env(spec.env_id, 2, seed=3)
    obs, infos = envs.reset(seed=3)
    assert obs.shape == (2, spec.obs_dim) and len(missions_of(infos, spec)) == 2
    assert all(m.startswith("go to") for m in missions_of(infos, spec))
    finished = False
    for _ in range(200):
        obs, _, term, trunc, infos = envs.step(envs.action_space.sample())
        assert len(missions_of(infos, spec)) == 2
        if (term | trunc).any():
            i = int(np.flatnonzero(term | trunc)[0])
            assert str(infos["final_info"]["mission"][i]).startswith("go to")
            finished = True
    assert finished
    envs.close()
    env = make_env(spec.env_id, seed=0)
    assert env.observation_space.contains(env.reset(seed=0)[0])
    assert missions_of({"mission": ["x"]}, get_spec("CartPole-v1")) is None


def test_state_encoder_needs_the_missions_and_appends_words_for_mlp():
    spec = get_spec(ENV)
    obs, info = make_env(ENV, seed=0).reset(seed=0)
    enc = StateEncoder(spec, None, None)
    with pytest.raises(ValueError, match="need their missions"):
        enc(obs[None])
    feats = enc(obs[None], [info["mission"]])
    assert feats.shape == (1, spec.obs_dim + len(babyai.MISSION_WORDS)) == (1, enc.feature_dim)
    assert feats[0, spec.obs_dim + babyai.MISSION_WORDS.index("red")] == 1


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["mlp", "minilm-bitnet-distilled"])
def test_short_training_run_reports_success_and_records_the_layout(tmp_path, backbone):
    cfg = load_train_config(overrides={"env": ENV, "backbone": backbone, "total_steps": 512, "eval_episodes": 3,
                                       "ppo.num_steps": 64, "ppo.update_epochs": 1, "features.max_tokens": 128})
    result = Trainer(cfg, run_dir=tmp_path / backbone, progress=False).run()
    assert result.global_step == 512 and result.episodes > 0
    assert 0.0 <= result.success_rate <= 1.0 and 0.0 <= result.eval_success_rate <= 1.0
    state = json.loads((tmp_path / backbone / "checkpoint" / "state.json").read_text())
    layout = state["extra"]["feature_layout"]
    assert layout["mission_words"] == list(babyai.MISSION_WORDS)
    if backbone == "mlp":
        assert state["feature_dim"] == babyai.VIEW_VALUES + len(babyai.MISSION_WORDS)
    else:
        assert layout["readout_fields"] == 3 and layout["serializer"]["format"] == "grid_text"
        assert result.mean_tokens > 20 and result.cache_hit_rate is not None


@pytest.mark.slow
def test_the_ros_graph_carries_the_mission_from_bridge_to_text(tmp_path):
    pytest.importorskip("rclpy")
    import uuid

    from bitrl_ros.bag.reader import iter_messages
    from bitrl_ros.bag.sources import read_observations
    from bitrl_ros.runner import run, RunOptions
    from test_graph import CONFIG

    bag = tmp_path / "bag"
    summary = run(RunOptions(config=CONFIG, steps=200, namespace="t_babyai_" + uuid.uuid4().hex[:8], progress=False,
                             record=bag, overrides={
                                 "env": ENV, "max_tokens": 128, "policy_value.ppo.num_steps": 64,
                                 "policy_value.ppo.update_epochs": 1,
                                 "policy_value.checkpoint_dir": str(tmp_path / "ckpt")}))
    assert summary["steps"] == 200 and summary["updates"] >= 1 and summary["fallbacks"] == 0
    assert 0.0 <= summary["success_rate"] <= 1.0  # 200 steps of 64-step episodes: at least 3 ended
    observations = read_observations(bag)
    missions = {(o.episode, o.step): o.mission for o in observations}
    assert observations and set(missions.values()) <= {"go to the red ball", "go to a red ball"}
    states = [m for topic, _, m in iter_messages(bag) if topic.endswith("/serialized_state")]
    assert len(states) >= 180
    assert all(m.text.startswith(missions[(m.episode, m.step)] + ". facing ") for m in states)
    layout = json.loads((tmp_path / "ckpt" / "state.json").read_text())["extra"]["feature_layout"]
    assert layout["mission_words"] == list(babyai.MISSION_WORDS) and layout["readout_fields"] == 3
