"""The native engine's ternary kernels: the C++ self-test compiled with the system g++ (every x86 path this CPU
runs, bit-exact against scalar), and the Python bindings (bit-exact against numpy / bitlinear) once the extension
module is built. ARM NEON is covered by `make test-arm` (cross-compiled, run under qemu-aarch64).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
import shutil
import subprocess

import numpy as np
import pytest
import torch

from bitrl_ros.backbone import bitlinear

ROOT = Path(__file__).resolve().parents[1]
NATIVE = ROOT / "bitrl_ros" / "backbone" / "engines" / "native"
# The same sources as the Makefile's test-native-cpp / test-arm: every kernels*.cpp plus the self-test.
SOURCES = sorted(NATIVE.glob("kernels*.cpp")) + [NATIVE / "tests" / "test_kernels.cpp"]
# The module name can be overridden to test a differently built copy of the same bindings.
MODULE = os.environ.get("BITRL_NATIVE_KERNELS_MODULE", "bitrl_ros.backbone.engines.native._native")


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
def test_cpp_kernel_selftest_native():
    out_dir = ROOT / "build" / "native"
    out_dir.mkdir(parents=True, exist_ok=True)
    exe = out_dir / "test_kernels"
    deps = SOURCES + sorted(NATIVE.glob("kernels*.h"))
    if not exe.exists() or exe.stat().st_mtime < max(p.stat().st_mtime for p in deps):
        subprocess.run(["g++", "-O2", "-std=c++17", "-Wall", "-Wextra", *map(str, SOURCES), "-o",
                        str(exe)], check=True, capture_output=True, text=True)
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    lines = run.stdout.strip().splitlines()
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert lines[-1].endswith(" passed, 0 failed"), lines[-1]
    assert int(lines[-1].split()[0]) > 100


@pytest.fixture(scope="module")
def nk():
    try:
        mod = importlib.import_module(MODULE)
    except ImportError as e:
        pytest.skip(f"native extension {MODULE} is not built ({e}); build it to run the Python-level kernel tests")
    if not hasattr(mod, "gemm_i32"):
        pytest.skip(f"{mod.__file__} predates the kernel bindings (no gemm_i32): rebuild the extension")
    return mod


def _ternary(rng, out, inp):
    return rng.integers(-1, 2, size=(out, inp), dtype=np.int8)


def test_isa_queries(nk):
    names = nk.isa_names()
    assert names == ["scalar", "avx2", "avx512vnni", "neon"]
    avail = nk.available_isas()
    assert avail[0] == "scalar" and nk.best_isa() in avail
    assert all(nk.isa_available(n) == (n in avail) for n in names)
    with pytest.raises(ValueError):
        nk.isa_available("sse9")


@pytest.mark.parametrize("out,inp", [(1, 1), (3, 127), (2, 129), (5, 300), (1536, 384)])
def test_pack_roundtrip_and_size(nk, out, inp):
    rng = np.random.default_rng(out * 1000 + inp)
    w = _ternary(rng, out, inp)
    p = nk.pack(w, 0.5)
    assert (p.out, getattr(p, "in"), p.in_padded, p.scale) == (out, inp, -(-inp // 128) * 128, 0.5)
    assert p.bytes == out * p.in_padded // 4
    np.testing.assert_array_equal(nk.unpack(p), w)
    q = nk.PackedTernary.from_codes(p.codes, out, inp, 0.5)
    np.testing.assert_array_equal(nk.unpack(q), w)
    with pytest.raises(ValueError):
        nk.pack(np.full((1, 3), 2, dtype=np.int8), 1.0)


@pytest.mark.parametrize("inp", [384, 512, 1024, 1536, 2560, 6912])
def test_two_bits_per_weight(nk, inp):
    p = nk.pack(np.zeros((4, inp), dtype=np.int8), 1.0)
    assert p.bits_per_weight == pytest.approx(2.0)


@pytest.mark.parametrize("tokens,inp", [(1, 1), (3, 130), (33, 384), (2, 1000), (4, 1536)])
def test_quantize_matches_bitlinear_on_every_isa(nk, tokens, inp):
    g = torch.Generator().manual_seed(tokens + inp)
    x = torch.randn(tokens, inp, generator=g) * 3
    if tokens > 1:
        x[1] = 0.0
    xq_ref, sc_ref = bitlinear.quantize_activations(x)
    for isa in nk.available_isas():
        xq, sc, xs = nk.quantize_activations(x.numpy(), isa=isa)
        assert xq.shape == (tokens, -(-inp // 128) * 128)
        np.testing.assert_array_equal(xq[:, :inp], xq_ref.numpy(), err_msg=isa)
        assert not xq[:, inp:].any()
        np.testing.assert_array_equal(sc, sc_ref.numpy()[:, 0], err_msg=isa)
        np.testing.assert_array_equal(xs, xq.astype(np.int64).sum(1), err_msg=isa)


@pytest.mark.parametrize("out,inp,tokens", [(1, 1, 1), (1, 129, 2), (7, 300, 5), (33, 640, 33), (65, 2560, 4)])
def test_gemm_bit_exact_every_isa(nk, out, inp, tokens):
    rng = np.random.default_rng(out + inp + tokens)
    w = _ternary(rng, out, inp)
    p = nk.pack(w, 0.25)
    xq = rng.integers(-128, 128, size=(tokens, inp), dtype=np.int8)
    ref = xq.astype(np.int64) @ w.astype(np.int64).T
    xpad = np.zeros((tokens, p.in_padded), dtype=np.int8)
    xpad[:, :inp] = xq
    x_sum = xpad.astype(np.int64).sum(1).astype(np.int32)
    for isa in nk.available_isas():
        np.testing.assert_array_equal(nk.gemm_i32(p, xpad, x_sum, isa), ref, err_msg=isa)
        np.testing.assert_array_equal(nk.gemm_i32(p, xq, None, isa), ref, err_msg=isa)  # unpadded rows too
        x_scale = np.linspace(0.5, 2.0, tokens, dtype=np.float32)
        bias = np.arange(out, dtype=np.float32) * 0.01
        y = nk.gemm_f32(p, xpad, x_sum, x_scale, bias, isa)
        np.testing.assert_allclose(y, ref * (np.float32(0.25) / x_scale[:, None]) + bias, rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(nk.gemm_i32(p, xpad[0]), ref[0])  # 1-D = one token, best ISA
    for isa in set(nk.isa_names()) - set(nk.available_isas()):
        with pytest.raises(ValueError):
            nk.gemm_i32(p, xpad, x_sum, isa)
