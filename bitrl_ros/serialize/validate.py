"""Reject observations that must not reach the serializer or the optimizer, naming the field at fault."""

from __future__ import annotations

import numpy as np

from bitrl_ros.envs.registry import EnvSpec
from bitrl_ros.errors import InvalidObservation


def validate_observation(obs, spec: EnvSpec) -> np.ndarray:
    """Return ``obs`` as a 1-D float64 array of length ``spec.obs_dim``, or raise InvalidObservation."""
    try:
        arr = np.asarray(obs, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidObservation(f"observation is not numeric: {exc}") from None
    if arr.size == 0:
        raise InvalidObservation("observation is empty")
    if arr.ndim != 1:
        raise InvalidObservation(f"observation has shape {arr.shape}, {spec.env_id} expects a flat vector")
    if arr.shape[0] != spec.obs_dim:
        raise InvalidObservation(
            f"observation has length {arr.shape[0]}, {spec.env_id} expects {spec.obs_dim} "
            f"({', '.join(spec.field_names)})"
        )
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        i = int(bad[0])
        what = "NaN" if np.isnan(arr[i]) else ("+Inf" if arr[i] > 0 else "-Inf")
        more = f" (and {bad.size - 1} more non-finite fields)" if bad.size > 1 else ""
        raise InvalidObservation(f"observation field '{spec.field_names[i]}' (index {i}) is {what}{more}")
    return arr
