"""The native (C++) engine agrees with the torch engine, batches like it runs one by one, and stays allocation-free."""

import time

import numpy as np
import pytest
import torch

from bitrl_ros.backbone import load_backbone
from bitrl_ros.backbone.bitlinear import BitLinear
from bitrl_ros.backbone.bitnet import bitnet_tiny_config, BitNetDecoder
from bitrl_ros.backbone.engines import is_ternary, make_engine, TorchEngine
from bitrl_ros.backbone.engines.native import native_available, NativeEncoder, NativeEngineError

AVAILABLE, REASON = native_available()
needs_native = pytest.mark.skipif(not AVAILABLE, reason=f"native engine not built: {REASON}")

STATES = [f"cart {0.05 * i - 0.4:+.3f} vel {-0.11 * i:+.2f} pole {0.013 * (i % 7):+.3f} av {0.2 * (i % 3):.1f}"
          for i in range(16)]
SENTENCES = ["the robot arm moves to the left", "obstacle ahead, turn right", "battery low", "goal reached",
             "pendulum angle 0.12 rad, angular velocity -1.5", "x", "a much longer sentence that describes the "
             "state of a mobile robot with several sensors, joints and a camera pointing forward"]


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def minilm():
    torch_bb = load_backbone("minilm-ternary-ptq", cache_mb=0, max_tokens=128, engine="torch")
    native = NativeEncoder(torch_bb.model, threads=1) if AVAILABLE else None
    return torch_bb, native


def tiny_decoder(seed: int = 0) -> BitNetDecoder:
    torch.manual_seed(seed)
    model = BitNetDecoder(bitnet_tiny_config())
    with torch.no_grad():  # non-trivial norm weights, so a misplaced norm shows
        for m in model.modules():
            if hasattr(m, "eps") and hasattr(m, "weight"):
                m.weight.uniform_(0.5, 1.5)
    for m in model.modules():
        if isinstance(m, BitLinear):
            m.freeze()
    return model.eval()


def test_native_available_agrees_with_the_build():
    """`make setup` builds the extension and records the outcome; native_available must say the same."""
    import re
    from pathlib import Path

    import bitrl_ros.backbone.engines.native as native

    ok, reason = native_available()
    status_file = Path(native.__file__).with_name("_native_build_status.txt")
    status = status_file.read_text().strip() if status_file.is_file() else ""
    if status == "ok":
        assert ok, f"the build says ok but the engine is unavailable: {reason}"
    if ok:
        assert re.fullmatch(r"ok: kernels (scalar|avx2|avx512vnni|neon)", reason), reason
    else:
        assert status == "" or status in reason, (status, reason)  # the recorded build failure is shown
        assert "not built" in reason or "cannot be imported" in reason, reason


def test_the_native_engine_builds_wherever_a_compiler_is():
    """A compile error must not hide behind the torch fallback: with a C++ compiler and pybind11 present (as after
    `make setup` on CI), the recorded build outcome is "ok". Only a machine without either may run on torch alone.
    """
    import shutil
    from pathlib import Path

    import bitrl_ros.backbone.engines.native as native

    pytest.importorskip("pybind11")
    if not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("no C++ compiler on this machine")
    status_file = Path(native.__file__).with_name("_native_build_status.txt")
    assert status_file.is_file(), "the native build left no status: was the package installed by setup.py?"
    assert status_file.read_text().strip() == "ok", status_file.read_text()


@needs_native
@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
def test_minilm_native_matches_torch(minilm, pooling):
    torch_bb, native = minilm
    seqs = torch_bb.tokenize(STATES + SENTENCES)
    assert len(seqs) >= 20
    ref = TorchEngine(torch_bb.model, torch_bb.tokenizer.pad_id).run(seqs, pooling)
    got = native.run(seqs, pooling)
    assert got.shape == ref.shape and got.dtype == np.float32
    assert cosine_rows(got, ref).min() >= 0.999


@needs_native
def test_minilm_batch_with_padding_equals_one_by_one(minilm):
    torch_bb, native = minilm
    seqs = torch_bb.tokenize(SENTENCES)
    assert len({len(s) for s in seqs}) > 1  # really padded
    batch = native.run(seqs, "mean")
    single = np.stack([native.run([s], "mean")[0] for s in seqs])
    np.testing.assert_allclose(batch, single, rtol=0, atol=1e-5)
    hidden = native.hidden(seqs)
    assert hidden.shape == (len(seqs), max(map(len, seqs)), native.hidden_size)
    for i, s in enumerate(seqs):
        np.testing.assert_allclose(hidden[i, : len(s)].mean(0), batch[i], atol=1e-5)
        assert not hidden[i, len(s):].any()


@needs_native
@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
def test_bitnet_native_matches_torch_causal_and_padded(pooling):
    model = tiny_decoder()
    rng = np.random.default_rng(1)
    seqs = [rng.integers(0, 256, size=int(n)).tolist() for n in rng.integers(1, 40, size=12)]
    ref = TorchEngine(model, pad_id=0).run(seqs, pooling)
    native = NativeEncoder(model)
    got = native.run(seqs, pooling)
    assert cosine_rows(got, ref).min() >= 0.999
    # Causal: the first k tokens' states do not depend on what follows them.
    long = seqs[0] + [7, 8, 9]
    h_long = native.hidden([long])[0]
    h_short = native.hidden([seqs[0]])[0]
    np.testing.assert_allclose(h_long[: len(seqs[0])], h_short, atol=1e-5)
    # Per-token states match the torch reference at real tokens of a padded batch.
    ids = torch.zeros(len(seqs), max(map(len, seqs)), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    with torch.inference_mode():
        ref_h = model(ids, attention_mask=mask).numpy()
    got_h = native.hidden(seqs)
    real = mask.bool().numpy()
    assert cosine_rows(got_h[real], ref_h[real]).min() >= 0.999


@needs_native
def test_threads_give_identical_output(minilm):
    torch_bb, _ = minilm
    seqs = torch_bb.tokenize(STATES + SENTENCES)
    one = NativeEncoder(torch_bb.model, threads=1)
    two = NativeEncoder(torch_bb.model, threads=2)
    two.native.set_parallel_threshold(0)  # split every GEMM and the attention, however small
    assert two.threads == 2
    for pooling in ("mean", "last"):
        np.testing.assert_array_equal(one.run(seqs, pooling), two.run(seqs, pooling))
        np.testing.assert_array_equal(one.run(seqs[:1], pooling), two.run(seqs[:1], pooling))
    model = tiny_decoder(3)
    a, b = NativeEncoder(model, threads=1), NativeEncoder(model, threads=2)
    b.native.set_parallel_threshold(0)
    dec_seqs = [list(range(5, 30)), [1, 2, 3]]
    np.testing.assert_array_equal(a.run(dec_seqs, "mean"), b.run(dec_seqs, "mean"))


@needs_native
def test_the_pool_gives_the_same_output_spinning_or_sleeping(minilm):
    """Idle pool threads spin for spin_us before they sleep; with 0 they sleep at once. Calls spaced wider than
    the spin (the workers asleep) and back to back (the workers spinning) must give the one-thread output.
    """
    torch_bb, _ = minilm
    seqs = torch_bb.tokenize(STATES + SENTENCES)
    expected = NativeEncoder(torch_bb.model, threads=1).run(seqs, "mean")
    two = NativeEncoder(torch_bb.model, threads=2)
    two.native.set_parallel_threshold(0)
    assert two.native.spin_us > 0  # the default spins
    for spin_us in (0, 1, 200):
        two.native.spin_us = spin_us
        assert two.native.spin_us == spin_us
        for i in range(30):
            np.testing.assert_array_equal(two.run(seqs, "mean"), expected)
            if i % 10 == 0:
                time.sleep(0.002)  # longer than any spin: the workers go to sleep and must be woken
    with pytest.raises(ValueError, match="spin_us"):
        two.native.spin_us = -1


@needs_native
def test_repeated_calls_do_not_allocate(minilm):
    torch_bb, _ = minilm
    enc = NativeEncoder(torch_bb.model, threads=2)
    seqs = torch_bb.tokenize(STATES[:4])
    enc.run(seqs, "mean")  # warm-up at the largest size
    grows, nbytes = enc.native.scratch_grows(), enc.native.scratch_bytes()
    assert nbytes > 0
    for _ in range(5):
        enc.run(seqs, "mean")
        enc.run(seqs[:1], "cls")
        enc.run([s[:3] for s in seqs], "last")
    assert enc.native.scratch_grows() == grows
    assert enc.native.scratch_bytes() == nbytes
    enc.run(seqs * 3, "mean")  # more tokens than ever: grows once, then stays
    grown = enc.native.scratch_grows()
    assert grown > grows
    enc.run(seqs * 3, "mean")
    assert enc.native.scratch_grows() == grown


@needs_native
def test_weights_are_packed_at_two_bits(minilm):
    torch_bb, native = minilm
    n_weights = sum(m.weight.numel() for m in torch_bb.model.modules() if isinstance(m, BitLinear))
    assert 0 < native.native.weight_bytes() <= n_weights / 4 * 1.01  # <= 2 bits per weight (+ row padding)


@needs_native
def test_fp_model_is_refused_with_a_clear_error():
    fp = load_backbone("minilm-fp32", cache_mb=0, engine="torch")
    assert not is_ternary(fp.model)
    with pytest.raises(NativeEngineError, match="ternary"):
        NativeEncoder(fp.model)
    with pytest.raises(NativeEngineError, match="ternary"):
        load_backbone("minilm-fp32", cache_mb=0, engine="native")
    assert make_engine(fp.model, fp.tokenizer.pad_id, "auto").name == "torch"


@needs_native
def test_load_backbone_engine_selection(minilm):
    auto = load_backbone("minilm-ternary-ptq", cache_mb=1, engine="auto", threads=2)
    assert auto.engine_name == "native" and auto.engine.threads == 2
    torch_bb, _ = minilm
    assert torch_bb.engine_name == "torch"
    seqs = torch_bb.tokenize(STATES[:3])
    a = auto.encode_tokens(seqs)
    b = torch_bb.encode_tokens(seqs)
    assert cosine_rows(a, b).min() >= 0.999
    np.testing.assert_array_equal(auto.encode_tokens(seqs), a)  # the cache answers the second time
    assert auto.cache_stats()["hits"] == 3


def test_engine_names_are_validated():
    with pytest.raises(ValueError, match="engine"):
        load_backbone("minilm-ternary-ptq", engine="cuda")
    assert load_backbone("minilm-fp32", cache_mb=0, engine="auto").engine_name == "torch"


@needs_native
def test_bad_input_raises():
    enc = NativeEncoder(tiny_decoder())
    with pytest.raises(ValueError):
        enc.run([[]], "mean")
    with pytest.raises(ValueError, match="vocabulary"):
        enc.run([[1, 999]], "mean")
    with pytest.raises(ValueError, match="pooling"):
        enc.run([[1, 2]], "max")
