"""The shipped default backbone models/minilm-bitnet-distilled: files, defaults, tokenizer coverage, fidelity."""

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
import yaml

from bitrl_ros.backbone import load_backbone, load_tokenizer
from bitrl_ros.backbone.corpus import build_corpus, env_states, label_group
from bitrl_ros.backbone.engines.native import native_available
from bitrl_ros.backbone.registry import DEFAULT_BACKBONE, shipped_model_dir
from bitrl_ros.config import TrainConfig
from bitrl_ros.envs import list_envs, NUMERIC_FAMILIES
from bitrl_ros.params import SCHEMAS
from bitrl_ros.serialize import FORMATS, get_serializer

ROOT = Path(__file__).resolve().parents[1]
MODEL_ID = "minilm-bitnet-distilled"


def test_files_within_budget_and_format():
    d = shipped_model_dir(MODEL_ID)
    assert d == ROOT / "models" / MODEL_ID
    files = {p.name: p.stat().st_size for p in d.iterdir() if p.is_file()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "MODEL.md"} <= set(files)
    assert sum(files.values()) <= 25_000_000, files
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["embedding_dtype"] == "int8" and cfg["config"]["linear"] == "bitlinear"
    with safe_open(str(d / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert f.get_slice("embeddings.word.weight").get_dtype() == "I8"
    packed = [k for k in keys if k.endswith(".weight_packed")]
    assert len(packed) == 6 * 6  # q, k, v, attention output, intermediate, output in each of the 6 layers


def test_default_backbone_everywhere():
    assert DEFAULT_BACKBONE == MODEL_ID
    assert TrainConfig().backbone == MODEL_ID
    assert yaml.safe_load((ROOT / "config" / "train.yaml").read_text())["train"]["backbone"] == MODEL_ID
    agent = yaml.safe_load((ROOT / "config" / "agent.yaml").read_text())
    assert agent["/**"]["ros__parameters"]["backbone"] == MODEL_ID
    for node, schema in SCHEMAS.items():
        for spec in schema:
            if spec.name == "backbone":
                assert spec.default == MODEL_ID, node


def test_tokenizer_covers_every_serializer_output_and_degrades_gracefully():
    tok = load_tokenizer(MODEL_ID)
    unk = tok._hf.token_to_id("[UNK]")
    for env_id in list_envs(NUMERIC_FAMILIES):
        states = env_states(env_id, 6, seed=5)
        for fmt in FORMATS:
            for ids in tok.encode_batch(get_serializer(env_id, fmt).batch(states)):
                assert unk not in ids, (env_id, fmt)
    bb = load_backbone(MODEL_ID, cache_mb=0, engine="torch")
    odd = ["🦾 qzxv≈ 漢字", "", "move " * 300]
    ids = bb.tokenize(odd)
    assert unk in ids[0] and len(ids[2]) == bb.max_tokens  # unknown symbols -> [UNK]; long input truncated
    feats = bb.encode(odd)
    assert feats.shape == (3, 384) and np.isfinite(feats).all()


@pytest.fixture(scope="module")
def heldout():
    # Held-out membership is a hash of the text, so these texts were never in any training batch.
    _, held, meta = build_corpus(40, seed=11, cache_dir=None)
    return held, [label_group(x) for x in meta["heldout_labels"]]


def _cos(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_distilled_is_close_to_the_teacher_on_heldout_text(heldout):
    texts, groups = heldout
    assert len(texts) >= 40 and set(FORMATS) <= set(groups)
    teacher = load_backbone("minilm-fp32", cache_mb=0).encode(texts)
    distilled = load_backbone(MODEL_ID, cache_mb=0, engine="torch").encode(texts)
    ptq = load_backbone("minilm-ternary-ptq", cache_mb=0, engine="torch").encode(texts)
    cos_d, cos_p = _cos(distilled, teacher), _cos(ptq, teacher)
    assert cos_d.mean() >= 0.88, cos_d.mean()
    assert cos_d.mean() > cos_p.mean() + 0.3
    for fmt in FORMATS:
        sel = [i for i, g in enumerate(groups) if g == fmt]
        assert cos_d[sel].mean() >= 0.85, (fmt, cos_d[sel].mean())


@pytest.mark.skipif(not native_available()[0], reason="native engine not built")
def test_native_engine_agrees_on_the_shipped_model(heldout):
    texts = heldout[0][:32]
    ref = load_backbone(MODEL_ID, cache_mb=0, engine="torch").encode(texts)
    nat = load_backbone(MODEL_ID, cache_mb=0, engine="native").encode(texts)
    assert _cos(nat, ref).min() >= 0.999
