"""State -> text, deterministically.

Every value is first quantized to an integer number of units of its field's last decimal
(``EnvSpec.field_decimals``, shifted by ``precision - spec.default_precision``), so that all three formats carry
exactly the same information and the same observation always gives the same text, whatever the locale:

- ``compact``:    the integers themselves, space separated: CartPole (0.014, -0.231, 0.05, 0.409) -> "1 -23 5 41".
                  Integers 0..341 are single MiniLM WordPiece tokens, while "0.01" costs three ("0", ".", "01"),
                  so this keeps a 17-dim MuJoCo state near 30 tokens instead of 60.
- ``structured``: "x=0.01 x_dot=-0.23 theta=0.05 theta_dot=0.41" (fixed-point decimals, short field names).
- ``natural``:    a short English sentence, e.g. "cart at 0.01 moving -0.23, pole angle 0.05 turning 0.41".

Quantized values are clipped to +-CLIP_UNITS units (+-99.99 at 2 decimals, +-999.9 at 1), counted in
``stats["clipped"]``. Zero is always written unsigned ("0.00", never "-0.00").
"""

from __future__ import annotations

import numpy as np

from bitrl_ros.envs.registry import EnvSpec, get_spec
from bitrl_ros.serialize.validate import validate_observation

FORMATS = ("compact", "structured", "natural")
CLIP_UNITS = 9999


def _decimal(units: int, decimals: int) -> str:
    if decimals == 0:
        return str(units)
    whole, frac = divmod(abs(units), 10**decimals)
    sign = "-" if units < 0 else ""
    return f"{sign}{whole}.{frac:0{decimals}d}"


def _natural_classic(spec: EnvSpec, v: list[str]) -> str:
    if spec.env_id.startswith("CartPole"):
        return f"cart at {v[0]} moving {v[1]}, pole angle {v[2]} turning {v[3]}"
    if spec.env_id.startswith("Acrobot"):
        return f"link one cos {v[0]} sin {v[1]}, link two cos {v[2]} sin {v[3]}, speeds {v[4]} and {v[5]}"
    if spec.env_id.startswith("MountainCar"):
        return f"car at {v[0]} moving {v[1]}"
    return ", ".join(f"{name} is {value}" for name, value in zip(spec.field_names, v))


def _natural_mujoco(spec: EnvSpec, v: list[str]) -> str:
    # Layout (see envs.registry): rootz, rooty, joint angles..., rootx_dot, rootz_dot, rooty_dot, joint speeds...
    n_joints = (spec.obs_dim - 5) // 2
    joints = spec.field_names[2 : 2 + n_joints]
    angles = " ".join(f"{name} {value}" for name, value in zip(joints, v[2 : 2 + n_joints]))
    speeds = " ".join(v[5 + n_joints :])
    vx, vz, vpitch = v[2 + n_joints : 5 + n_joints]
    return (
        f"torso height {v[0]} pitch {v[1]}, joints {angles}, "
        f"torso velocity x {vx} z {vz} pitch {vpitch}, joint speeds {speeds}"
    )


class Serializer:
    """Callable turning one observation of ``spec``'s env into text; ``batch`` does a 2-D array row by row."""

    def __init__(self, spec: EnvSpec, fmt: str = "compact", precision: int | None = None):
        if fmt not in FORMATS:
            raise ValueError(f"unknown serializer format {fmt!r}; valid formats: {', '.join(FORMATS)}")
        if precision is not None and not 0 <= precision <= 6:
            raise ValueError(f"precision must be in 0..6, got {precision}")
        self.spec = spec
        self.fmt = fmt
        self.precision = spec.default_precision if precision is None else precision
        shift = self.precision - spec.default_precision
        self.decimals = tuple(max(d + shift, 0) for d in spec.field_decimals)
        self._scale = 10.0 ** np.array(self.decimals, dtype=np.float64)
        self.stats = {"serialized": 0, "clipped": 0}

    def quantize(self, obs, validated: bool = False) -> list[int]:
        """Observation -> integer units of each field's last decimal, clipped to +-CLIP_UNITS.
        validated=True: the caller already ran validate_observation (float64, right length, finite)."""
        values = obs if validated else validate_observation(obs, self.spec)
        units = np.rint(values * self._scale)
        clipped = np.abs(units) > CLIP_UNITS
        self.stats["clipped"] += int(clipped.sum())
        # int() also turns -0.0 into 0, so "-0.00" can never appear.
        return [int(u) for u in np.clip(units, -CLIP_UNITS, CLIP_UNITS)]

    def __call__(self, obs, validated: bool = False) -> str:
        units = self.quantize(obs, validated)
        self.stats["serialized"] += 1
        if self.fmt == "compact":
            return " ".join(str(u) for u in units)
        values = [_decimal(u, d) for u, d in zip(units, self.decimals)]
        if self.fmt == "structured":
            return " ".join(f"{name}={value}" for name, value in zip(self.spec.field_names, values))
        if self.spec.family == "mujoco":
            return _natural_mujoco(self.spec, values)
        return _natural_classic(self.spec, values)

    def batch(self, obs_2d, validated: bool = False) -> list[str]:
        arr = np.asarray(obs_2d, dtype=np.float64)
        if arr.ndim != 2:
            raise ValueError(f"batch expects a 2-D array (n, {self.spec.obs_dim}), got shape {arr.shape}")
        return [self(row, validated) for row in arr]


def get_serializer(env_id: str, fmt: str = "compact", precision: int | None = None) -> Serializer:
    return Serializer(get_spec(env_id), fmt, precision)
