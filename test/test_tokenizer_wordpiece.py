"""The plain-Python WordPiece tokenizer (backbone/wordpiece.py) against `tokenizers` on the shipped
tokenizer.json: the same ids, offsets, field alignment and truncation.
"""
import json
import random
import subprocess
import sys

import numpy as np
import pytest

from bitrl_ros.backbone import load_tokenizer
from bitrl_ros.backbone.locations import shipped_model_dir
from bitrl_ros.backbone.wordpiece import supports
from bitrl_ros.envs import smarthome
from bitrl_ros.serialize import get_serializer
from bitrl_ros.settings import DEFAULT_BACKBONE, FORMATS

TRICKY = [
    "", " ", "a", "[CLS]", "x [SEP] y", "[MASK][PAD]", "pole_angle=-0.0312, cart_velocity=+1.25e-3",
    "Hello, World!!", "don't stop-me now...", "naïve café façade Ångström", "İstanbul ŞEHİR", "straße",
    "tab\tnew\nline\rcarriage", "ctrl\x00\x07\x1b chars\ufffd", "non\u00a0breaking\u2003space", "中文字符 and 日本",
    "emoji 🤖 robot", "a" * 101, "supercalifragilisticexpialidocious", "x" * 99 + "y", "#hash ##prefix",
    "“quotes” – dashes — and … ellipsis", "Ωmega ∑ sum ≥ 3", "ﬁ ligature", "ﬀ", "é́ combining",
]


def _random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    pool = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:-+=_()[]#'\"!?\t\n"
            "éèüöÅßçñØ中日한ΩЖ…—“”\u00a0\u0301\u200b")
    return ["".join(rng.choice(pool) for _ in range(rng.randint(0, 60))) for _ in range(n)]


def _serialized_texts() -> tuple[list[str], list]:
    rng = np.random.default_rng(0)
    texts, spans = [], []
    for env_id in ("CartPole-v1", "Acrobot-v1", "HalfCheetah-v4"):
        for fmt in FORMATS:
            ser = get_serializer(env_id, fmt)
            for _ in range(20):
                obs = rng.normal(0, 3, ser.spec.obs_dim) * 10.0 ** rng.integers(-3, 3)
                text, s = ser.render(obs)
                texts.append(text)
                spans.append(s)
    home = get_serializer("SmartHome-Light-v0")
    for split in smarthome.SPLITS:
        for rules in smarthome.TRAIN_RULE_SETS + smarthome.HELDOUT_RULE_SETS:
            values = np.array([19.75, 0.1, 2, 1, 0, 0, 0, 1, 0, 0, 0], dtype=np.float64)
            text, s = home.render(values, mission=smarthome.instruction(rules, rng, split))
            texts.append(text)
            spans.append(s)
    return texts, spans


@pytest.fixture(scope="module")
def both():
    return load_tokenizer(DEFAULT_BACKBONE), load_tokenizer(DEFAULT_BACKBONE, plain_python=True)


def test_the_shipped_tokenizer_is_the_supported_pipeline(both):
    spec = json.loads((shipped_model_dir(DEFAULT_BACKBONE) / "tokenizer.json").read_text())
    assert supports(spec)
    assert not supports({**spec, "normalizer": {"type": "NFC"}})
    hf, plain = both
    assert plain._wordpiece is not None and plain._hf_tok is None and hf._wordpiece is None
    assert plain.pad_id == hf.pad_id


def test_same_ids_and_offsets_as_tokenizers_on_tricky_and_random_texts(both):
    hf, plain = both
    texts = TRICKY + _random_texts(400, 0)
    for text, theirs, ours in zip(texts, hf._encode_full(texts), plain._encode_full(texts)):
        assert ours == theirs, repr(text)
    assert [plain.count_tokens(t) for t in TRICKY] == [hf.count_tokens(t) for t in TRICKY]


def test_same_field_alignment_and_truncation_on_serialized_states(both):
    hf, plain = both
    texts, spans = _serialized_texts()
    for budget in (None, 12, 64):
        assert plain.encode_aligned(texts, spans, budget) == hf.encode_aligned(texts, spans, budget)
        assert plain.encode_batch(texts, budget) == hf.encode_batch(texts, budget)
    assert plain.truncated_count == hf.truncated_count > 0


def test_plain_python_tokenizes_without_importing_tokenizers():
    code = ("import sys; from bitrl_ros.backbone import load_tokenizer; "
            f"t = load_tokenizer({DEFAULT_BACKBONE!r}, plain_python=True); ids = t.encode_batch(['cart 0.25'])[0]; "
            "assert 'tokenizers' not in sys.modules, 'tokenizers imported'; print(len(ids))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= 4
