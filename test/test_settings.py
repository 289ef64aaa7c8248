"""One declaration per setting (bitrl_ros.settings): train config, PPOConfig and node parameters agree."""
import math

import pytest
import yaml

from bitrl_ros import settings
from bitrl_ros.config import DEFAULT_CONFIG, load_train_config
from bitrl_ros.errors import ConfigError
from bitrl_ros.params import read_ros_params, SCHEMAS, validate_params
from bitrl_ros.rl.config import PPOConfig
from bitrl_ros.settings import Setting


def test_shipped_train_yaml_states_the_declared_defaults():
    train = yaml.safe_load(DEFAULT_CONFIG.read_text())["train"]
    sections = {"serializer": settings.SERIALIZER, "features": settings.FEATURES, "normalize": settings.NORMALIZE,
                "guard": settings.GUARD, "ppo": settings.PPO}
    for s in settings.TRAIN:
        assert train[s.name] == s.default, s.name
    for section, declared in sections.items():
        for s in declared:
            if s.name in train[section]:
                assert train[section][s.name] == s.default, f"{section}.{s.name}"
            else:  # left out of the YAML only where the default is "off" or needs no explaining
                assert s.name in ("pooling", "norm_adv", "clip_vloss", "target_kl", "anneal_lr", "total_timesteps",
                                  "adam_eps", "hidden_sizes"), f"{section}.{s.name} missing from train.yaml"
    assert load_train_config().ppo == train["ppo"]


def test_shipped_agent_yaml_states_every_nodes_declared_defaults():
    params = read_ros_params("config/agent.yaml")
    # The one value the shipped graph sets on purpose: its replay waits for the agent's three listeners.
    graph_choice = {("bag_replay", "min_subscribers"): 3}
    for node, schema in SCHEMAS.items():
        for s in schema:
            if s.name in params[node]:
                assert params[node][s.name] == graph_choice.get((node, s.name), s.default), f"{node}.{s.name}"


def test_node_and_train_feature_defaults_are_the_same_declaration():
    train = load_train_config()
    node = validate_params("policy_value", {})
    assert node["readout"] == train.features.readout and node["proj_dim"] == train.features.proj_dim
    assert node["balance"] == train.features.balance and node["raw_skip"] == train.features.raw_skip
    assert node["format"] == train.serializer.format and node["numbers"] == train.serializer.numbers
    assert node["precision"] == -1 and train.serializer.precision is None  # the node's spelling of null
    for name in settings.NODE_PPO:
        if name not in settings.NODE_PPO_DEFAULTS:
            assert node[f"ppo.{name}"] == getattr(PPOConfig(), name), name


def _edges(s: Setting):
    """Values just at and beyond each end of a numeric range."""
    out = []
    for bound in (s.low, s.high):
        if bound is None:
            continue
        step = 1 if s.type is int else max(abs(bound), 1.0) * 1e-9
        out += [bound, bound - step, bound + step]
    return [s.type(v) for v in out]


@pytest.mark.parametrize("name", settings.NODE_PPO)
def test_node_ppo_ranges_are_ppoconfigs(name):
    declared = settings.by_name(settings.PPO)[name]
    for value in _edges(declared):
        fields = {"num_envs": 1, "num_steps": 1_000_000, "minibatch_size": 1, name: value}
        try:
            PPOConfig(**fields)
            train_ok = True
        except ConfigError:
            train_ok = False
        try:
            validate_params("policy_value", {f"ppo.{k}": v for k, v in fields.items() if k != "num_envs"})
            node_ok = True
        except ConfigError:
            node_ok = False
        assert train_ok == node_ok, (name, value, train_ok, node_ok)


def test_setting_check_ranges_types_and_null():
    s = Setting("x", 0.5, "a fraction", 0.0, 1.0, low_open=True)
    assert s.allowed() == "float in (0, 1]"
    assert s.check(1, "here") == 1.0 and type(s.check(1, "here")) is float  # an int widened to the float
    for bad in (0.0, 1.5, math.nan, "0.5", True, None):
        with pytest.raises(ConfigError, match=r"here: invalid value for 'x' = .* \(allowed: float in \(0, 1\]\)"):
            s.check(bad, "here")
    # What PyYAML (YAML 1.1) leaves a string: an exponent without a dot, from a config file or --set.
    assert s.check("5e-1", "here") == 0.5 and s.check("1.0E-2", "here") == 0.01
    for bad in ("5e-1x", "e-1", "5e", "2e0"):
        with pytest.raises(ConfigError):
            s.check(bad, "here")
    n = Setting("k", None, "optional count", 0, 6, nullable=True, kind=int)
    assert n.check(None, "w") is None and n.allowed() == "int in [0, 6] or null"
    with pytest.raises(ConfigError):
        n.check(2.0, "w")  # a float is not an int
    ros = n.as_ros_parameter()
    assert (ros.default, ros.low, ros.nullable) == (-1, -1, False) and ros.check(-1, "node") == -1


def test_config_classes_have_one_field_per_setting():
    from bitrl_ros.config import FeatureConfig, NormalizeConfig, SerializerConfig, TrainConfig

    for cls, declared in ((FeatureConfig, settings.FEATURES), (SerializerConfig, settings.SERIALIZER),
                          (NormalizeConfig, settings.NORMALIZE), (PPOConfig, settings.PPO)):
        assert list(cls.__dataclass_fields__) == [s.name for s in declared]
    assert list(TrainConfig.__dataclass_fields__)[:len(settings.TRAIN)] == [s.name for s in settings.TRAIN]
