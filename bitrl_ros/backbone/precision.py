"""Weight formats of the backbone precision variants (numpy only): quantize to a packed form, and back.

Every format quantizes one float32 matrix W [out, in] (an encoder linear layer) into the bytes a deployment would
store, and dequantizes those bytes to the float32 matrix the layer then computes with:

  fp16      IEEE half precision, 16 bits per weight.
  int8      symmetric per output channel: one float32 scale per row, s = max|w_row| / 127, q = round(w / s) in
            [-127, 127]; 8 bits per weight plus 32 per row. (The int8 variant also quantizes its activations per
            token, as the ternary layers do: see variants.py.)
  int4-g32  symmetric group-wise: one float16 scale per group of INT4_GROUP consecutive weights of a row,
            s = max|w_group| / 7, q = round(w / s) in [-7, 7], two weights per byte (first in the low nibble, two's
            complement); 4 + 16/32 = 4.5 bits per weight.
  nvfp4     NVIDIA's NVFP4: values in FP4 E2M1 (sign, 2 exponent bits, 1 mantissa bit: +-{0, .5, 1, 1.5, 2, 3, 4,
            6}), one FP8 E4M3 scale per block of 16 consecutive weights of a row, one float32 scale per tensor.
            The tensor scale maps the tensor's amax onto the largest product of the two grids (6 * 448); a block's
            scale is its amax / 6 in units of the tensor scale, rounded to E4M3; each weight is rounded to the
            nearest E2M1 value of w / (block scale * tensor scale), ties to the even code. Two codes per byte
            (first in the low nibble, code = sign << 3 | magnitude index); 4 + 8/16 = 4.5 bits per weight.

Rows whose length is not a multiple of the group or block are padded with zeros before packing (none of the
shipped shapes needs it: 384 and 1536 are multiples of 32).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INT4_GROUP = 32
NVFP4_BLOCK = 16
E2M1_GRID = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=np.float32)
E2M1_MAX = 6.0
E4M3_MAX = 448.0
E4M3_MIN_NORMAL_EXP = -6   # smallest normal: 2^-6; subnormals step 2^-9
E4M3_MANTISSA_BITS = 3
E4M3_BIAS = 7

WEIGHT_FORMATS = ("fp16", "int8", "int4-g32", "nvfp4")


@dataclass
class PackedWeight:
    """One matrix in a weight format: ``arrays`` are the stored bytes (what bits_per_weight counts)."""

    fmt: str
    shape: tuple[int, int]
    arrays: dict[str, np.ndarray]

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    def bits_per_weight(self) -> float:
        return 8.0 * self.nbytes() / (self.shape[0] * self.shape[1])


def quantize(w: np.ndarray, fmt: str) -> PackedWeight:
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D weight matrix, got shape {w.shape}")
    if fmt not in _FORMATS:
        raise ValueError(f"unknown weight format {fmt!r}; expected one of {', '.join(WEIGHT_FORMATS)}")
    return PackedWeight(fmt, w.shape, _FORMATS[fmt][0](w))


def dequantize(p: PackedWeight) -> np.ndarray:
    return _FORMATS[p.fmt][1](p.arrays, p.shape)


def round_trip(w: np.ndarray, fmt: str) -> np.ndarray:
    """What a layer stored in ``fmt`` computes with: dequantize(quantize(w))."""
    return dequantize(quantize(w, fmt))


# fp16 ---------------------------------------------------------------------------------------------------------------

def _fp16_pack(w):
    return {"values": w.astype(np.float16)}


def _fp16_unpack(a, shape):
    return a["values"].astype(np.float32)


# int8, per output channel -------------------------------------------------------------------------------------------

def _int8_pack(w):
    scale = np.abs(w).max(axis=1) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return {"q": q, "scale": scale}


def _int8_unpack(a, shape):
    return a["q"].astype(np.float32) * a["scale"][:, None]


# int4, group-wise ---------------------------------------------------------------------------------------------------

def _groups(w, size):
    """[out, in] -> [out, groups, size], zero padded."""
    out, n = w.shape
    pad = -n % size
    return np.pad(w, ((0, 0), (0, pad))).reshape(out, -1, size)


def pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """uint8 codes 0..15 [out, n] (n even) -> uint8 [out, n / 2], the first code in the low nibble."""
    codes = codes.astype(np.uint8)
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)


def unpack_nibbles(packed: np.ndarray) -> np.ndarray:
    out = np.empty((packed.shape[0], packed.shape[1] * 2), dtype=np.uint8)
    out[:, 0::2], out[:, 1::2] = packed & 0x0F, packed >> 4
    return out


def _int4_pack(w):
    g = _groups(w, INT4_GROUP)
    scale = (np.abs(g).max(axis=2) / 7.0).astype(np.float16)
    scale = np.where(scale > 0, scale, np.float16(1.0))
    q = np.clip(np.rint(g / scale.astype(np.float32)[..., None]), -7, 7).astype(np.int8)
    return {"q": pack_nibbles((q.reshape(w.shape[0], -1) & 0x0F).astype(np.uint8)), "scale": scale}


def _int4_unpack(a, shape):
    nib = unpack_nibbles(a["q"]).astype(np.int8)
    q = np.where(nib > 7, nib - 16, nib).astype(np.float32).reshape(shape[0], -1, INT4_GROUP)
    return (q * a["scale"].astype(np.float32)[..., None]).reshape(shape[0], -1)[:, : shape[1]]


# FP8 E4M3 (the NVFP4 block scales) ---------------------------------------------------------------------------------

def e4m3_round(x: np.ndarray) -> np.ndarray:
    """Non-negative float32 -> the nearest E4M3 value (ties to even mantissa), saturating at 448."""
    x = np.minimum(np.asarray(x, dtype=np.float32), E4M3_MAX)
    exp = np.floor(np.log2(np.maximum(x, np.float32(2.0 ** E4M3_MIN_NORMAL_EXP))))
    step = np.exp2(exp - E4M3_MANTISSA_BITS).astype(np.float32)
    return np.minimum(np.rint(x / step) * step, E4M3_MAX).astype(np.float32)


def e4m3_encode(v: np.ndarray) -> np.ndarray:
    """Non-negative E4M3 values (as e4m3_round returns) -> their bytes (sign 0, 4 exponent bits, 3 mantissa)."""
    v = np.asarray(v, dtype=np.float64)
    normal = v >= 2.0 ** E4M3_MIN_NORMAL_EXP
    exp = np.floor(np.log2(np.where(normal, v, 1.0)))
    mant = np.where(normal, v / np.exp2(exp) * 8 - 8, v / 2.0 ** (E4M3_MIN_NORMAL_EXP - E4M3_MANTISSA_BITS))
    biased = np.where(normal, exp + E4M3_BIAS, 0)
    return ((biased.astype(np.uint8) << E4M3_MANTISSA_BITS) | np.rint(mant).astype(np.uint8)).astype(np.uint8)


def e4m3_decode(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, dtype=np.uint8)
    biased, mant = (b >> E4M3_MANTISSA_BITS) & 0x0F, (b & 0x07).astype(np.float64)
    sign = np.where(b & 0x80, -1.0, 1.0)
    normal = np.exp2(biased.astype(np.float64) - E4M3_BIAS) * (1 + mant / 8)
    sub = mant * 2.0 ** (E4M3_MIN_NORMAL_EXP - E4M3_MANTISSA_BITS)
    return (sign * np.where(biased > 0, normal, sub)).astype(np.float32)


# FP4 E2M1 -----------------------------------------------------------------------------------------------------------

def e2m1_codes(x: np.ndarray) -> np.ndarray:
    """float32 (already scaled) -> 4-bit codes sign << 3 | index of the nearest E2M1 magnitude (ties to the even
    index, which is the even mantissa), saturating at 6.
    """
    x = np.asarray(x, dtype=np.float32)
    mag = np.minimum(np.abs(x), E2M1_MAX)
    dist = np.abs(mag[..., None] - E2M1_GRID)
    best = dist.min(axis=-1, keepdims=True)
    tied = dist == best
    # The nearest index; where two are equally near, the even one (at most two can tie).
    idx = np.argmax(tied & (np.arange(8) % 2 == 0), axis=-1)
    idx = np.where(tied.sum(-1) > 1, idx, np.argmin(dist, axis=-1))
    sign = (np.signbit(x) & (idx > 0)).astype(np.uint8)
    return (sign << 3 | idx.astype(np.uint8)).astype(np.uint8)


def e2m1_values(codes: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes, dtype=np.uint8)
    return np.where(codes & 0x08, -1.0, 1.0).astype(np.float32) * E2M1_GRID[codes & 0x07]


# NVFP4 --------------------------------------------------------------------------------------------------------------

def _nvfp4_pack(w):
    amax = float(np.abs(w).max())
    tensor_scale = np.float32(amax / (E2M1_MAX * E4M3_MAX) if amax > 0 else 1.0)
    g = _groups(w, NVFP4_BLOCK)
    block = e4m3_round(np.abs(g).max(axis=2) / E2M1_MAX / tensor_scale)
    unit = block * tensor_scale
    codes = e2m1_codes(np.where(unit[..., None] > 0, g / np.where(unit > 0, unit, 1.0)[..., None], 0.0))
    return {"codes": pack_nibbles(codes.reshape(w.shape[0], -1)), "block_scale": e4m3_encode(block),
            "tensor_scale": np.array([tensor_scale], dtype=np.float32)}


def _nvfp4_unpack(a, shape):
    vals = e2m1_values(unpack_nibbles(a["codes"])).reshape(shape[0], -1, NVFP4_BLOCK)
    unit = e4m3_decode(a["block_scale"]) * a["tensor_scale"][0]
    return (vals * unit[..., None]).reshape(shape[0], -1)[:, : shape[1]]


_FORMATS = {"fp16": (_fp16_pack, _fp16_unpack), "int8": (_int8_pack, _int8_unpack),
            "int4-g32": (_int4_pack, _int4_unpack), "nvfp4": (_nvfp4_pack, _nvfp4_unpack)}
