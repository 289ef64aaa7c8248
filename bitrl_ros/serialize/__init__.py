"""MDP state -> short deterministic text: compact | structured | natural."""

from bitrl_ros.serialize.report import count_tokens, rollout_states, token_report
from bitrl_ros.serialize.serializer import CLIP_UNITS, FORMATS, get_serializer, NUMBER_SCHEMES, Serializer
from bitrl_ros.serialize.validate import validate_observation

__all__ = [
    "CLIP_UNITS",
    "FORMATS",
    "NUMBER_SCHEMES",
    "Serializer",
    "count_tokens",
    "get_serializer",
    "rollout_states",
    "token_report",
    "validate_observation",
]
