"""Per-field scales for the `scaled` number scheme: fitted once per env from random-policy rollouts, stored in
field_scales.json next to this module (committed), deterministic for a given seed and step count.

A field's scale is the QUANTILE of |value| over the visited states (at least MIN_SCALE), so that the serializer
writes the range each field actually visits as about +-SCALED_UNITS integer units.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bitrl_ros.envs.registry import get_spec, list_envs, NUMERIC_FAMILIES

SCALES_FILE = Path(__file__).resolve().parent / "field_scales.json"
QUANTILE = 0.99
MIN_SCALE = 1e-3
FIT_STEPS = 20_000
FIT_SEED = 0


def fit_field_scales(env_id: str, steps: int = FIT_STEPS, seed: int = FIT_SEED) -> list[float]:
    from bitrl_ros.serialize.report import rollout_states

    states = rollout_states(env_id, steps, seed)
    scales = np.maximum(np.quantile(np.abs(states), QUANTILE, axis=0), MIN_SCALE)
    return [float(f"{s:.6g}") for s in scales]  # rounded so that the JSON file reads the same everywhere


def _read() -> dict:
    if not SCALES_FILE.is_file():
        return {}
    return json.loads(SCALES_FILE.read_text())


def load_field_scales(env_id: str) -> list[float]:
    spec = get_spec(env_id)
    entry = _read().get(env_id)
    if entry is None:
        raise ValueError(f"no fitted field scales for {env_id} in {SCALES_FILE}; run `bitrl fit-scales {env_id}`")
    if list(entry["fields"]) != list(spec.field_names):
        raise ValueError(f"{SCALES_FILE}: the fields of {env_id} are {entry['fields']}, the registry has "
                         f"{list(spec.field_names)}; refit with `bitrl fit-scales {env_id}`")
    return [float(s) for s in entry["scales"]]


def write_field_scales(env_ids=None, steps: int = FIT_STEPS, seed: int = FIT_SEED, log=print) -> Path:
    data = _read()
    for env_id in env_ids or list_envs(NUMERIC_FAMILIES):
        scales = fit_field_scales(env_id, steps, seed)
        data[env_id] = {"fields": list(get_spec(env_id).field_names), "scales": scales, "quantile": QUANTILE,
                        "steps": steps, "seed": seed, "policy": "uniform random"}
        log(f"{env_id}: " + " ".join(f"{n}={s:g}" for n, s in zip(get_spec(env_id).field_names, scales)))
    from bitrl_ros.fileio import atomic_write_text

    atomic_write_text(SCALES_FILE, json.dumps(dict(sorted(data.items())), indent=1) + "\n")
    return SCALES_FILE
