"""State -> text, deterministically, with the character span of every field's value.

Every value is first quantized to an integer number of units, by one of three number schemes:

- ``fixed``:  units of the field's last decimal (``EnvSpec.field_decimals``, shifted by
              ``precision - spec.default_precision``): CartPole (0.014, -0.231, 0.05, 0.409) -> 1 -23 5 41.
- ``scaled``: ``SCALED_UNITS`` units per fitted field scale (``serialize/field_scales.json``, the 99th percentile
              of |value| over random-policy rollouts, fitted once per env by ``bitrl fit-scales``), so that every
              field spends about +-100 units on the range it actually visits instead of one fixed number of
              decimals (MountainCar's velocity, +-0.07, gets ~200 values instead of ~15).
- ``digits``: the ``fixed`` units written digit by digit ("-23" -> "- 2 3"), one token per digit.

and written in one of three formats, which all carry exactly the same information:

- ``compact``:    the integers themselves, space separated: "1 -23 5 41". Integers 0..341 are single MiniLM
                  WordPiece tokens, so a 17-dim MuJoCo state stays near 30 tokens.
- ``structured``: "x=0.01 x_dot=-0.23 theta=0.05 theta_dot=0.41" (fixed-point decimals, short field names).
- ``natural``:    a short English sentence, e.g. "cart at 0.01 moving -0.23, pole angle 0.05 turning 0.41".

(``scaled`` writes its unit counts as integers in every format; ``digits`` separates compact fields with "|".)
``render`` returns the text and, per field, the (start, end) character span of its value, which the tokenizer
turns into a token-to-field alignment for the per-field readout. Quantized values are clipped to +-CLIP_UNITS,
counted in ``stats["clipped"]``. Zero is always written unsigned ("0.00", never "-0.00").
"""

from __future__ import annotations

import string

import numpy as np

from bitrl_ros.envs.registry import EnvSpec, get_spec
from bitrl_ros.serialize.validate import validate_observation
from bitrl_ros.settings import FORMATS, NUMBER_SCHEMES

CLIP_UNITS = 9999
SCALED_UNITS = 100  # units per fitted field scale in the `scaled` scheme


def _decimal(units: int, decimals: int) -> str:
    if decimals == 0:
        return str(units)
    whole, frac = divmod(abs(units), 10**decimals)
    sign = "-" if units < 0 else ""
    return f"{sign}{whole}.{frac:0{decimals}d}"


def _digits(text: str) -> str:
    """'-0.23' -> '- 0 . 2 3': one token per character."""
    return " ".join(text)


def _natural_template(spec: EnvSpec) -> str:
    """A sentence with one {i} placeholder per field, in field order."""
    if spec.env_id.startswith("CartPole"):
        return "cart at {0} moving {1}, pole angle {2} turning {3}"
    if spec.env_id.startswith("Acrobot"):
        return "link one cos {0} sin {1}, link two cos {2} sin {3}, speeds {4} and {5}"
    if spec.env_id.startswith("MountainCar"):
        return "car at {0} moving {1}"
    if spec.family == "mujoco":
        # Layout (see envs.registry): rootz, rooty, joint angles..., rootx_dot, rootz_dot, rooty_dot, joint speeds...
        n_joints = (spec.obs_dim - 5) // 2
        angles = " ".join(f"{spec.field_names[2 + j]} {{{2 + j}}}" for j in range(n_joints))
        speeds = " ".join(f"{{{5 + n_joints + j}}}" for j in range(n_joints))
        vx, vz, vp = (2 + n_joints + k for k in range(3))
        return (f"torso height {{0}} pitch {{1}}, joints {angles}, "
                f"torso velocity x {{{vx}}} z {{{vz}}} pitch {{{vp}}}, joint speeds {speeds}")
    return ", ".join(f"{name} is {{{i}}}" for i, name in enumerate(spec.field_names))


def _fill(template: str, values: list[str]) -> tuple[str, tuple[tuple[int, int], ...]]:
    """Substitute {i} placeholders, recording where each value lands."""
    pieces, spans, pos = [], [None] * len(values), 0
    for literal, field, _, _ in string.Formatter().parse(template):
        pieces.append(literal)
        pos += len(literal)
        if field is not None:
            value = values[int(field)]
            spans[int(field)] = (pos, pos + len(value))
            pieces.append(value)
            pos += len(value)
    return "".join(pieces), tuple(spans)


class Serializer:
    """Callable turning one observation of ``spec``'s env into text; ``batch`` does a 2-D array row by row."""

    def __init__(self, spec: EnvSpec, fmt: str = "compact", precision: int | None = None, numbers: str = "fixed",
                 field_scales=None):
        if fmt not in FORMATS:
            raise ValueError(f"unknown serializer format {fmt!r}; valid formats: {', '.join(FORMATS)}")
        if numbers not in NUMBER_SCHEMES:
            raise ValueError(f"unknown number scheme {numbers!r}; valid schemes: {', '.join(NUMBER_SCHEMES)}")
        if precision is not None and not 0 <= precision <= 6:
            raise ValueError(f"precision must be in 0..6, got {precision}")
        if numbers == "scaled" and precision is not None:
            raise ValueError("precision applies to the fixed and digits number schemes; scaled uses the fitted "
                             "field scales (leave precision null)")
        self.spec = spec
        self.fmt = fmt
        self.numbers = numbers
        self.precision = spec.default_precision if precision is None else precision
        if numbers == "scaled":
            from bitrl_ros.serialize.field_scales import load_field_scales

            scales = np.asarray(load_field_scales(spec.env_id) if field_scales is None else field_scales,
                                dtype=np.float64)
            if scales.shape != (spec.obs_dim,) or not (scales > 0).all():
                raise ValueError(f"{spec.env_id}: field scales must be {spec.obs_dim} positive numbers, got {scales}")
            self.decimals = (0,) * spec.obs_dim
            self._scale = SCALED_UNITS / scales
        else:
            shift = self.precision - spec.default_precision
            self.decimals = tuple(max(d + shift, 0) for d in spec.field_decimals)
            self._scale = 10.0 ** np.array(self.decimals, dtype=np.float64)
        self._template = None if fmt == "compact" else (
            " ".join(f"{name}={{{i}}}" for i, name in enumerate(spec.field_names)) if fmt == "structured"
            else _natural_template(spec))
        self.stats = {"serialized": 0, "clipped": 0}

    def quantize(self, obs, validated: bool = False) -> list[int]:
        """Observation -> integer units per field (see the number schemes), clipped to +-CLIP_UNITS.
        validated=True: the caller already ran validate_observation (float64, right length, finite).
        """
        values = obs if validated else validate_observation(obs, self.spec)
        units = np.rint(values * self._scale)
        clipped = np.abs(units) > CLIP_UNITS
        self.stats["clipped"] += int(clipped.sum())
        # int() also turns -0.0 into 0, so "-0.00" can never appear.
        return [int(u) for u in np.clip(units, -CLIP_UNITS, CLIP_UNITS)]

    def render(self, obs, validated: bool = False) -> tuple[str, tuple[tuple[int, int], ...]]:
        """(text, per-field (start, end) character spans of the values)."""
        units = self.quantize(obs, validated)
        self.stats["serialized"] += 1
        if self.fmt == "compact":
            values = [str(u) for u in units]
            if self.numbers == "digits":
                values = [_digits(v) for v in values]
            sep = " | " if self.numbers == "digits" else " "
            return _fill(sep.join(f"{{{i}}}" for i in range(len(values))), values)
        values = [_decimal(u, d) for u, d in zip(units, self.decimals)]
        if self.numbers == "digits":
            values = [_digits(v) for v in values]
        return _fill(self._template, values)

    def __call__(self, obs, validated: bool = False) -> str:
        return self.render(obs, validated)[0]

    def batch(self, obs_2d, validated: bool = False) -> list[str]:
        return [text for text, _ in self.render_batch(obs_2d, validated)]

    def render_batch(self, obs_2d, validated: bool = False,
                     missions=None) -> list[tuple[str, tuple[tuple[int, int], ...]]]:
        """missions: ignored (numeric states carry none), accepted so that every serializer is called alike."""
        arr = np.asarray(obs_2d, dtype=np.float64)
        if arr.ndim != 2:
            raise ValueError(f"batch expects a 2-D array (n, {self.spec.obs_dim}), got shape {arr.shape}")
        return [self.render(row, validated) for row in arr]

    def describe(self) -> dict:
        """What a checkpoint records of this serializer (so a reader can refuse another one)."""
        out = {"format": self.fmt, "numbers": self.numbers}
        if self.numbers == "scaled":
            out["field_scales"] = [float(s) for s in SCALED_UNITS / self._scale]
        else:
            out["precision"] = self.precision
            out["decimals"] = list(self.decimals)
        return out

    @classmethod
    def from_description(cls, spec: EnvSpec, d: dict) -> "Serializer":
        """The serializer a describe() record names (scaled: with the recorded scales, not today's file)."""
        if spec.mission_words:
            return _text_renderer(spec)
        if d["numbers"] == "scaled":
            return cls(spec, d["format"], None, "scaled", d["field_scales"])
        return cls(spec, d["format"], d["precision"], d["numbers"])


def _text_renderer(spec: EnvSpec):
    """The renderer of a language-conditioned family (state + mission in words)."""
    if spec.family == "babyai":
        from bitrl_ros.serialize.grid_text import GridTextRenderer

        return GridTextRenderer(spec)
    if spec.family == "cooking":
        from bitrl_ros.serialize.cooking_text import CookingTextRenderer

        return CookingTextRenderer(spec)
    from bitrl_ros.serialize.home_text import HomeTextRenderer

    return HomeTextRenderer(spec)


def get_serializer(env_id: str, fmt: str = "compact", precision: int | None = None,
                   numbers: str = "fixed") -> Serializer:
    """The serializer of env_id's family; language-conditioned envs (BabyAI, SmartHome-Light, TextWorld Cooking)
    have one text renderer of their own, which the format, precision and number scheme do not apply to.
    """
    spec = get_spec(env_id)
    if spec.mission_words:
        return _text_renderer(spec)
    return Serializer(spec, fmt, precision, numbers)
