"""Distillation corpus, the QAT distillation loop on a tiny teacher, checkpoints/resume, and the fp16 embedding file."""

import json

import pytest
from tokenizers import models, pre_tokenizers, processors
from tokenizers import Tokenizer as HFTokenizer
import torch

from bitrl_ros.backbone import BertEncoder, EncoderConfig, load_backbone, load_model, save_model
from bitrl_ros.backbone.corpus import build_corpus, is_heldout, label_group
from bitrl_ros.backbone.distill import distill, make_student
from bitrl_ros.envs import list_envs, NUMERIC_FAMILIES
from bitrl_ros.serialize import FORMATS

N_STATES = 12


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_corpus(N_STATES, seed=3, cache_dir=tmp_path_factory.mktemp("corpus"))


def _tiny_tokenizer(texts, path):
    words = set()
    pre = pre_tokenizers.BertPreTokenizer()
    for t in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(t.lower()))
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + sorted(words))}
    tok = HFTokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.save(str(path))
    return len(vocab)


@pytest.fixture(scope="module")
def tiny(corpus, tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    train, held, _ = corpus
    vocab_size = _tiny_tokenizer(train + held, d / "tokenizer.json")
    torch.manual_seed(0)
    cfg = EncoderConfig(vocab_size=vocab_size, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                        max_position=64)
    teacher = BertEncoder(cfg).eval().requires_grad_(False)
    return teacher, d / "tokenizer.json"


def test_corpus_deterministic_disjoint_and_complete(corpus, tmp_path):
    train, held, meta = corpus
    train2, held2, meta2 = build_corpus(N_STATES, seed=3, cache_dir=None)  # regenerated, not from the cache
    assert train == train2 and held == held2 and meta["hash"] == meta2["hash"]
    assert not set(train) & set(held)
    assert len(set(train)) == len(train) and len(set(held)) == len(held)
    assert all(is_heldout(t) for t in held) and not any(is_heldout(t) for t in train)
    assert 0 < len(held) < 0.15 * (len(train) + len(held))
    for env_id in list_envs(NUMERIC_FAMILIES):
        for fmt in FORMATS:
            assert meta["counts"].get(f"state/{fmt}/{env_id}", 0) > 0, (env_id, fmt)
    for env_id in list_envs(("babyai",)):  # the renderer's segments alone and whole texts
        assert meta["counts"].get(f"task/babyai/{env_id}", 0) > 0, env_id
    assert "red ball" in " ".join(t for t, lab in zip(train, meta["train_labels"]) if lab.startswith("task/"))
    assert meta["counts"]["mission"] > 0 and meta["counts"]["general"] > 0
    assert {label_group(x) for x in meta["heldout_labels"]} <= set(FORMATS) | {"babyai", "mission", "general"}
    cache = json.loads(open(meta["cache"]).read())  # plain JSON cache
    assert len(cache["texts"]) == len(train) + len(held)
    _, _, meta3 = build_corpus(N_STATES, seed=4, cache_dir=None)
    assert meta3["hash"] != meta["hash"]


def test_student_starts_as_ptq_and_trains():
    cfg = EncoderConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                        max_position=16)
    student = make_student(BertEncoder(cfg))
    assert student.config.linear == "bitlinear"
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    assert "layers.0.attn.q.weight" in trainable and "embeddings.word.weight" not in trainable


def test_distill_loss_decreases_resume_and_saved_model(corpus, tiny, tmp_path):
    teacher, tok_path = tiny
    kw = {"batch_size": 8, "lr": 3e-3, "seed": 0, "progress": False, "teacher": teacher, "tokenizer_path": tok_path,
          "corpus": corpus, "max_tokens": 48, "warmup": 2, "eval_every": 5, "ckpt_every": 10,
          "log": lambda *_: None}
    rep = distill(tmp_path / "a", steps=20, resume=False, **kw)
    losses = [h["loss"] for h in rep["history"]]
    assert len(losses) == 20
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert rep["heldout_final"]["mean"] > rep["heldout_initial"]["mean"]
    assert {"compact", "structured", "natural"} <= set(rep["heldout_final"])

    # A zero time budget stops before the first step and still saves.
    part = distill(tmp_path / "t", steps=20, resume=False, time_budget_s=0.0, **kw)
    assert part["steps_done"] == 0 and part["stopped"] == "time_budget"

    # Resume: a run killed right after its step-10 checkpoint continues at step 11 with the same losses.
    assert _run_until(tmp_path / "b", 10, kw) == 10
    resumed = distill(tmp_path / "b", steps=20, resume=True, **kw)
    got = [h["loss"] for h in resumed["history"]]
    assert len(got) == 20 and [h["step"] for h in resumed["history"]] == list(range(1, 21))
    assert got == pytest.approx(losses, rel=1e-5, abs=1e-6)

    # The saved model: int8 embedding table on disk, loads through load_backbone(dir) and runs.
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["embedding_dtype"] == "int8"
    log = json.loads((tmp_path / "a" / "training_log.json").read_text())
    assert log["steps_done"] == 20
    bb = load_backbone(str(tmp_path / "a"), engine="torch")
    feats = bb.encode(["1 -23 5 41", "go to the red door"])
    assert feats.shape == (2, 32) and torch.isfinite(torch.from_numpy(feats)).all()


def _run_until(out, step, kw):
    """Train ``steps=20`` schedule but stop right after the step-``step`` checkpoint (via a raising log hook)."""
    from bitrl_ros.backbone import distill as dmod

    orig = dmod.save_checkpoint

    class Stop(Exception):
        pass

    def hook(out_dir, s, *a, **k):
        path = orig(out_dir, s, *a, **k)
        if s == step:
            raise Stop
        return path

    dmod.save_checkpoint = hook
    try:
        distill(out, steps=20, resume=False, **kw)
    except Stop:
        pass
    finally:
        dmod.save_checkpoint = orig
    return json.loads((out / "checkpoints" / "latest.json").read_text())["step"]


def test_fp16_and_int8_embedding_round_trip(tiny, tmp_path):
    teacher, tok_path = tiny
    model = make_student(teacher).eval()
    for m in model.modules():
        if hasattr(m, "freeze"):
            m.freeze()
    save_model(model, tok_path, tmp_path / "m", embedding_dtype="float16")
    from safetensors.torch import load_file
    raw = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert raw["embeddings.word.weight"].dtype == torch.float16
    assert raw["embeddings.position.weight"].dtype == torch.float32
    loaded, _ = load_model(tmp_path / "m")
    w = loaded.embeddings.word.weight
    assert w.dtype == torch.float32
    assert torch.equal(w, model.embeddings.word.weight.half().float())
    ids = torch.tensor([[2, 5, 6, 3]])
    with torch.no_grad():
        ref = model.float()(ids)
        out = loaded(ids)
    assert torch.allclose(out, ref, atol=1e-2)
    # int8: per-row scales; the student already holds the int8 round trip, so the saved table equals it exactly.
    save_model(model, tok_path, tmp_path / "m8", embedding_dtype="int8")
    raw8 = load_file(str(tmp_path / "m8" / "model.safetensors"))
    assert raw8["embeddings.word.weight"].dtype == torch.int8
    assert raw8["embeddings.word.weight_scale"].shape == (model.embeddings.word.weight.shape[0],)
    loaded8, _ = load_model(tmp_path / "m8")
    assert torch.allclose(loaded8.embeddings.word.weight, model.embeddings.word.weight, rtol=1e-6, atol=1e-7)
    assert not torch.equal(model.embeddings.word.weight, teacher.embeddings.word.weight)  # make_student quantized it
    err = (model.embeddings.word.weight - teacher.embeddings.word.weight).abs().amax(1)
    assert (err <= teacher.embeddings.word.weight.abs().amax(1) / 254 + 1e-7).all()
    # The default stays float32 with no new config key.
    save_model(model, tok_path, tmp_path / "m32")
    assert "embedding_dtype" not in json.loads((tmp_path / "m32" / "config.json").read_text())
    assert load_file(str(tmp_path / "m32" / "model.safetensors"))["embeddings.word.weight"].dtype == torch.float32
