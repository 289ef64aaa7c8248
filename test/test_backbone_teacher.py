import numpy as np
import pytest
import torch

from bitrl_ros.backbone import available_backbones, Backbone, load_backbone, teacher_dir
from bitrl_ros.backbone.bitlinear import BitLinear
from bitrl_ros.backbone.teacher import ternarize_ptq

SENTENCES = [
    "x:0.01 v:-0.23 th:0.05 w:0.41",
    "x:-1.20 v:0.00 th:-0.18 w:-1.93",
    "cart position 0.02, cart velocity -0.11, pole angle 0.03, pole angular velocity 0.27",
    "pos=[0.12, -0.40, 1.05] vel=[0.0, 0.3, -0.2]",
    "The robot arm reaches for the red block.",
    "go to the green door",
    "pick up the blue ball and put it next to the yellow key",
    "Turn on the light in the kitchen.",
    "hello",
    "A",
    "1 2 3 4 5 6 7 8 9 10",
    "The quick brown fox jumps over the lazy dog.",
    "Reinforcement learning agents maximize expected discounted return.",
    "height:1.25 angle:-0.03 joint0:0.51 joint1:-0.77 joint2:0.02 vx:1.9 vz:-0.1",
    "obs: [nan-free] reward 1.0 terminated false truncated false",
    "Café naïve résumé — unicode ✓ symbols ∑ and emoji 🤖",
    "You are in a dark room. There is a locked chest here. Exits: north, east.",
    "THE LIGHT IS OFF AND THE WINDOW IS OPEN",
    "left left right forward pickup drop toggle done",
    "temperature 49 C, power 5.8 J per episode, latency 24.8 ms",
    "x:0.000 v:0.000 th:0.000 w:0.000",
    "a much longer sentence that goes on and on about nothing in particular, just to exercise attention over "
    "more positions than the short state strings do, with commas, numbers like 3.14159, and so forth",
]


@pytest.fixture(scope="module")
def fp():
    return load_backbone("minilm-fp32", cache_mb=0, max_tokens=128)


@pytest.fixture(scope="module")
def reference():
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(teacher_dir()), device="cpu")
    return st.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True, batch_size=32)


def test_teacher_matches_sentence_transformers(fp, reference):
    ours = fp.encode(SENTENCES, pooling="mean", normalize=True)
    assert ours.shape == (len(SENTENCES), 384) and ours.dtype == np.float32
    cos = (ours * reference).sum(1)
    assert cos.min() >= 0.999, cos


def test_unnormalized_by_default_and_poolings(fp):
    ids = fp.tokenize(SENTENCES[:3])
    mean = fp.encode_tokens(ids)
    assert not np.allclose(np.linalg.norm(mean, axis=1), 1.0, atol=1e-3)
    cls = fp.encode_tokens(ids, pooling="cls")
    last = fp.encode_tokens(ids, pooling="last")
    assert not np.allclose(cls, mean) and not np.allclose(last, cls)
    # Padding in a batch must not change a sequence's features.
    alone = fp.encode_tokens(ids[2:3], pooling="last")
    assert np.allclose(alone[0], last[2], atol=1e-4)
    assert fp.feature_dim("mean") == 384
    with pytest.raises(ValueError):
        fp.encode_tokens(ids, pooling="max")


def test_ptq_backbone(reference):
    ptq = load_backbone("minilm-ternary-ptq", cache_mb=0, max_tokens=128)
    linears = [m for m in ptq.model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 6 * 6 and all(isinstance(m, BitLinear) and m.frozen for m in linears)
    w = linears[0]._w_eff
    assert len(torch.unique(w)) <= 3
    out = ptq.encode(SENTENCES, normalize=True)
    assert out.shape == (len(SENTENCES), 384) and np.isfinite(out).all()
    cos = (out * reference).sum(1)
    assert 0.05 < cos.mean() < 0.999


def test_ternarize_ptq_leaves_teacher_untouched(fp):
    before = fp.model.layers[0].attn.q.weight.clone()
    ptq = ternarize_ptq(fp.model)
    assert type(fp.model.layers[0].attn.q) is torch.nn.Linear
    assert torch.equal(fp.model.layers[0].attn.q.weight, before)
    assert ptq.config.linear == "bitlinear" and ptq.embeddings.norm is not fp.model.embeddings.norm


def test_registry_ids():
    assert available_backbones() == [
        "minilm-bitnet-distilled", "minilm-fp32", "minilm-ternary-ptq", "minilm-fp16", "minilm-int8",
        "minilm-int4-g32", "minilm-nvfp4", "minilm-ternary-random", "mlp"]
    assert load_backbone("mlp") is None
    with pytest.raises(ValueError, match="minilm-fp32"):
        load_backbone("bert-huge")


def _entries_mb(n: int, ids, fp) -> float:
    """A budget of exactly n entries of the first key's size (pooled rows of 384 floats)."""
    from bitrl_ros.backbone.registry import _entry_bytes

    key = (tuple(ids), "mean", None)  # ids, pooling, noise tag (None: clean)
    return n * _entry_bytes(key, np.zeros(fp.hidden_size, np.float32)) / 2**20


def test_cache_counts_hits_and_never_holds_more_than_its_budget(fp):
    ids = fp.tokenize(["a b", "c d", "e f"])
    assert len({len(i) for i in ids}) == 1  # equal lengths: every entry costs the same
    cached = Backbone("c", fp.model, fp.tokenizer, cache_mb=_entries_mb(2, ids[0], fp))
    first = cached.encode_tokens(ids[:2])
    stats = cached.cache_stats()
    assert {k: stats[k] for k in ("hits", "misses", "hit_rate", "size", "off")} == {
        "hits": 0, "misses": 2, "hit_rate": 0.0, "size": 2, "off": ""}
    assert 2 * 384 * 4 < stats["bytes"] <= stats["budget_bytes"]
    again = cached.encode_tokens([ids[1], ids[0]])
    assert np.array_equal(again, first[::-1])
    assert cached.cache_stats()["hits"] == 2
    cached.encode_tokens([ids[2]])  # over budget: evicts the least recently used, ids[1]
    stats = cached.cache_stats()
    assert stats["size"] == 2 and stats["misses"] == 3 and stats["hit_rate"] == pytest.approx(0.4)
    assert stats["bytes"] <= stats["budget_bytes"]
    cached.encode_tokens([ids[1]])
    assert cached.cache_stats()["misses"] == 4
    # A different pooling is a different key; normalize does not change what is cached.
    cached.encode_tokens([ids[1]], pooling="cls")
    assert cached.cache_stats()["misses"] == 5
    norm = cached.encode_tokens([ids[1]], pooling="cls", normalize=True)
    assert cached.cache_stats()["hits"] == 3
    assert np.linalg.norm(norm) == pytest.approx(1.0, abs=1e-5)
    # wider rows (per field) cost more: the same budget holds fewer of them
    fields = [[-1] + [0] * (len(ids[0]) - 2) + [-1]] * 3
    wide = Backbone("w", fp.model, fp.tokenizer, cache_mb=_entries_mb(2, ids[0], fp))
    wide.encode_fields(ids, fields, 4)
    assert wide.cache_stats()["size"] < 2 and wide.cache_stats()["bytes"] <= wide.cache_stats()["budget_bytes"]
    # a budget of 0 disables the cache
    off = Backbone("o", fp.model, fp.tokenizer, cache_mb=0)
    off.encode_tokens(ids[:1])
    off.encode_tokens(ids[:1])
    assert off.cache_stats()["hits"] == 0 and off.cache_stats()["size"] == 0
    with pytest.raises(ValueError, match="cache_mb"):
        Backbone("n", fp.model, fp.tokenizer, cache_mb=-1)


def test_cache_switches_itself_off_where_it_does_not_pay(fp, monkeypatch):
    import bitrl_ros.backbone.registry as registry

    monkeypatch.setattr(registry, "CACHE_TRIAL_LOOKUPS", 10)
    ids = fp.tokenize([f"state {i}" for i in range(10)])
    paying = Backbone("p", fp.model, fp.tokenizer, cache_mb=1)
    for _ in range(5):
        paying.encode_tokens(ids[:2])  # 8 hits in 10 lookups: kept
    assert paying.cache_stats()["off"] == "" and paying.cache_stats()["size"] == 2
    useless = Backbone("u", fp.model, fp.tokenizer, cache_mb=1)
    first = useless.encode_tokens(ids)  # 10 distinct states, 0 hits: emptied and off for good
    stats = useless.cache_stats()
    assert "hit rate 0.0% after 10 lookups" in stats["off"] and stats["size"] == 0 and stats["bytes"] == 0
    assert np.allclose(useless.encode_tokens(ids[:1]), first[:1], atol=1e-5)  # still encodes, just not cached
    assert useless.cache_stats()["size"] == 0
