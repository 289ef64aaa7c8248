import pytest

from bitrl_ros.config import DEFAULT_CONFIG, load_train_config
from bitrl_ros.errors import ConfigError


def test_default_config_loads_with_design_hyperparameters():
    cfg = load_train_config(DEFAULT_CONFIG)
    assert cfg.env == "CartPole-v1"
    assert cfg.ppo["clip_coef"] == 0.1 and cfg.ppo["ent_coef"] == 0.01
    assert cfg.ppo["num_envs"] * cfg.ppo["num_steps"] == 2048


def test_overrides_use_dotted_keys():
    cfg = load_train_config(overrides={"features.pooling": "cls", "ppo.clip_coef": 0.2, "seed": 3})
    # pooling is the old name of readout: it is accepted and becomes the readout
    assert cfg.features.readout == "cls" and cfg.features.pooling is None
    assert cfg.ppo["clip_coef"] == 0.2 and cfg.seed == 3


@pytest.mark.parametrize("key,value,needle", [
    ("features.pooling", "max", "train.features.pooling"),
    ("total_steps", -5, "train.total_steps"),
    ("env", "Pong-v0", "train.env"),
    ("backbone", "gpt-17", "train.backbone"),
    ("serializer.format", "json", "train.serializer.format"),
    ("ppo.clip_coef", 3.0, "clip_coef"),
    ("features.raw_skip", "yes", "train.features.raw_skip"),
])
def test_invalid_values_name_key_value_and_range(key, value, needle):
    with pytest.raises(ConfigError) as err:
        load_train_config(overrides={key: value})
    msg = str(err.value)
    assert needle in msg
    assert repr(value) in msg or str(value) in msg
    assert "allowed" in msg or "range" in msg


def test_unknown_key_is_refused(tmp_path):
    bad = tmp_path / "agent.yaml"
    bad.write_text("train:\n  env: CartPole-v1\n  learning_rat: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rat"):
        load_train_config(bad)


def test_broken_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("train:\n  env: CartPole-v1\n  ppo: {clip_coef: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_train_config(bad)
    assert "broken.yaml" in str(err.value) and "line" in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="nothere.yaml"):
        load_train_config(tmp_path / "nothere.yaml")


def test_a_resume_keeps_the_ppo_settings_the_run_resolved(tmp_path):
    import json

    from bitrl_ros.config import load_run_config

    # A run started when the entropy default was 0.05, from a YAML that did not name it.
    (tmp_path / "config.json").write_text(json.dumps({
        "train": {"env": "CartPole-v1", "backbone": "mlp", "ppo": {"clip_coef": 0.2}},
        "ppo_resolved": {"clip_coef": 0.2, "ent_coef": 0.05, "num_envs": 8, "num_steps": 256}}))
    cfg = load_run_config(tmp_path, {"total_steps": 4096})
    assert cfg.ppo["ent_coef"] == 0.05 and cfg.ppo["clip_coef"] == 0.2 and cfg.total_steps == 4096
    with pytest.raises(ConfigError, match="ppo.ent_coef = 0.05"):
        load_run_config(tmp_path, {"ppo.ent_coef": 0.01})


def test_a_run_from_before_the_field_context_resumes_as_it_ran(tmp_path):
    """A run's config.json without features.context read each field within the state text."""
    import json

    from bitrl_ros.config import load_run_config

    cfg = load_train_config()
    section = cfg.to_dict()
    section["features"].pop("context")
    (tmp_path / "config.json").write_text(json.dumps({"train": section, "ppo_resolved": cfg.ppo}))
    assert load_run_config(tmp_path, {}).features.context == "state"
    assert cfg.features.context == "field"
