import pytest

from bitrl_ros.errors import ConfigError
from bitrl_ros.params import read_ros_params, SCHEMAS, validate_params


def test_shipped_agent_yaml_is_valid_for_every_node():
    params = read_ros_params("config/agent.yaml")
    for node in SCHEMAS:
        values = validate_params(node, params[node])
        assert values["env"] == "CartPole-v1"
    assert params["policy_value"]["ppo.clip_coef"] == 0.1  # nested YAML flattened to dotted names
    assert params["ternary_encoder"]["backbone"] == params["state_serializer"]["backbone"]  # from /**


@pytest.mark.parametrize("node,name,value,allowed", [
    ("policy_value", "control_rate_hz", 0.0, "float in [1, 1000]"),
    ("policy_value", "safe_action", "brake", "zero | hold"),
    ("policy_value", "ppo.gamma", 2.0, "float in (0, 1]"),
    ("sim_bridge", "mode", "async", "lockstep | realtime"),
    ("ternary_encoder", "cache_mb", -1.0, "float in [0, 4096]"),
    ("state_serializer", "max_tokens", "many", "int in [4, 512]"),
])
def test_invalid_values_name_node_parameter_value_and_range(node, name, value, allowed):
    with pytest.raises(ConfigError) as err:
        validate_params(node, {name: value})
    msg = str(err.value)
    assert node in msg and f"'{name}'" in msg and repr(value) in msg and allowed in msg


def test_unknown_parameter_and_env_are_refused():
    with pytest.raises(ConfigError, match="unknown parameter 'rate'"):
        validate_params("sim_bridge", {"rate": 40})
    with pytest.raises(ConfigError, match="Pong"):
        validate_params("sim_bridge", {"env": "Pong-v5"})


def test_integer_yaml_value_accepted_for_float_parameter():
    assert validate_params("sim_bridge", {"control_rate_hz": 50})["control_rate_hz"] == 50.0


def test_non_ros_yaml_is_refused_with_the_file_name(tmp_path):
    bad = tmp_path / "agent.yaml"
    bad.write_text("policy_value:\n  seed: 3\n")
    with pytest.raises(ConfigError, match="ros__parameters"):
        read_ros_params(bad)
