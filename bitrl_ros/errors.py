"""Exceptions with messages meant for users: each names the file, field or parameter at fault."""


class BitrlError(Exception):
    """Base class for every error bitrl_ros raises on purpose."""


class InvalidObservation(BitrlError, ValueError):
    """An observation is empty, has the wrong length, or holds NaN/Inf."""


class ModelFileError(BitrlError):
    """A backbone file (safetensors, config.json, tokenizer.json) is missing, corrupt or inconsistent."""


class CheckpointError(BitrlError):
    """A training checkpoint is missing, corrupt or does not match the agent it is loaded into."""


class ConfigError(BitrlError, ValueError):
    """A YAML file or parameter is unreadable or out of its allowed range."""


class BagError(BitrlError):
    """A rosbag2 bag is missing, truncated, corrupt, or holds a message type that cannot be decoded."""
