"""Per-field readouts: token-to-field alignment, readout shapes, native vs torch token states, the feature layout
record in checkpoints, fitted field scales.
"""
import json

import gymnasium as gym
import numpy as np
import pytest

from bitrl_ros.backbone import load_backbone, load_tokenizer
from bitrl_ros.backbone.engines import TorchEngine
from bitrl_ros.backbone.engines.native import native_available
from bitrl_ros.envs import get_spec, list_envs, NUMERIC_FAMILIES
from bitrl_ros.errors import CheckpointError
from bitrl_ros.features import FeatureLayout, READOUTS, StateEncoder, TextStage
from bitrl_ros.rl.learner import OnlineLearner
from bitrl_ros.rl.ppo import PPOConfig
from bitrl_ros.serialize import FORMATS, get_serializer, NUMBER_SCHEMES, rollout_states, Serializer
from bitrl_ros.serialize.field_scales import fit_field_scales, load_field_scales, SCALES_FILE

BACKBONE = "minilm-bitnet-distilled"
SCHEME_FORMATS = [(f, n) for f in FORMATS for n in NUMBER_SCHEMES]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(BACKBONE)


@pytest.fixture(scope="module")
def distilled():
    return load_backbone(BACKBONE, cache_mb=16)


def _value_texts(serializer, obs):
    """What the serializer wrote for each field, from its spans."""
    text, spans = serializer.render(obs)
    return text, [text[a:b] for a, b in spans]


@pytest.mark.parametrize("fmt,numbers", SCHEME_FORMATS)
@pytest.mark.parametrize("env_id", list_envs(NUMERIC_FAMILIES))
def test_every_token_of_a_value_is_aligned_to_its_field(tokenizer, env_id, fmt, numbers):
    spec = get_spec(env_id)
    serializer = get_serializer(env_id, fmt, numbers=numbers)
    states = rollout_states(env_id, 40, seed=1)
    states[0] = -np.abs(states[0]) - 0.5  # negative values with several digits: signs and multi-piece numbers
    stage = TextStage(spec, serializer, tokenizer, max_tokens=512)
    _, texts, ids, fields = stage(states)
    for obs, text, id_list, field_list in zip(states, texts, ids, fields):
        assert len(id_list) == len(field_list)
        _, values = _value_texts(serializer, obs)
        for f, value in enumerate(values):
            pieces = [tokenizer.decode([i]).replace("##", "") for i, g in zip(id_list, field_list) if g == f]
            assert pieces, f"field {spec.field_names[f]} got no token in {text!r}"
            # The field's tokens spell its value exactly (signs, decimal points and digits; spaces dropped).
            assert "".join(pieces) == value.replace(" ", ""), (text, f, pieces)
        assert field_list[0] == -1 and field_list[-1] == -1  # [CLS] and [SEP] belong to no field


def test_signs_and_word_pieces_fall_in_the_field(tokenizer):
    serializer = get_serializer("MountainCar-v0", "compact")
    text, spans = serializer.render([-1.2345, 0.07])
    assert text == "-123 70"
    ids, fields = tokenizer.encode_aligned([text], [spans])
    tokens = [tokenizer.decode([i]) for i in ids[0]]
    assert [t for t, f in zip(tokens, fields[0]) if f == 0] == ["-", "123"]
    big = get_serializer("Acrobot-v1", "compact")
    text, spans = big.render([1, 0, 1, 0, 12.34, -56.7])  # 123 and -567: 567 is two word pieces
    ids, fields = tokenizer.encode_aligned([text], [spans])
    pieces = [tokenizer.decode([i]) for i, f in zip(ids[0], fields[0]) if f == 5]
    assert pieces[0] == "-" and len(pieces) >= 3


def test_truncation_cuts_ids_and_fields_alike(tokenizer):
    serializer = get_serializer("HalfCheetah-v4", "natural")
    states = rollout_states("HalfCheetah-v4", 2, seed=0)
    rendered = serializer.render_batch(states)
    ids, fields = tokenizer.encode_aligned([t for t, _ in rendered], [s for _, s in rendered], max_tokens=16)
    assert all(len(i) == len(f) == 16 for i, f in zip(ids, fields))
    assert fields[0][-1] == -1  # the kept [SEP]
    assert max(fields[0]) < get_spec("HalfCheetah-v4").obs_dim - 1  # later fields were cut away


def test_scaled_numbers_spend_units_on_the_visited_range():
    fixed, scaled = get_serializer("MountainCar-v0", "compact"), get_serializer("MountainCar-v0", numbers="scaled")
    states = rollout_states("MountainCar-v0", 2000, seed=2)
    distinct = {name: len({s.quantize(o)[1] for o in states}) for name, s in (("fixed", fixed), ("scaled", scaled))}
    assert distinct["scaled"] > 3 * distinct["fixed"]
    assert max(abs(scaled.quantize(o)[1]) for o in states) <= 200
    with pytest.raises(ValueError, match="precision"):
        Serializer(get_spec("CartPole-v1"), numbers="scaled", precision=3)


def test_digit_numbers_spell_one_token_per_digit():
    assert get_serializer("CartPole-v1", "compact", numbers="digits")([0.014, -0.231, 0.05, 0.409]) == \
        "1 | - 2 3 | 5 | 4 1"
    assert get_serializer("CartPole-v1", "structured", numbers="digits")([0.0, -0.23, 0.0, 0.0]).startswith(
        "x=0 . 0 0 x_dot=- 0 . 2 3")


def test_field_scales_are_fitted_deterministically_and_stored():
    stored = json.loads(SCALES_FILE.read_text())
    assert set(stored) == set(list_envs(NUMERIC_FAMILIES))
    entry = stored["CartPole-v1"]
    assert fit_field_scales("CartPole-v1", entry["steps"], entry["seed"]) == entry["scales"] == \
        load_field_scales("CartPole-v1")
    assert fit_field_scales("CartPole-v1", 500, 1) == fit_field_scales("CartPole-v1", 500, 1)


@pytest.mark.parametrize("readout", READOUTS)
def test_readout_shapes_determinism_and_cache(distilled, readout):
    spec = get_spec("CartPole-v1")
    enc = StateEncoder(spec, get_serializer("CartPole-v1"), distilled, readout)
    states = rollout_states("CartPole-v1", 6, seed=4)
    feats = enc(states)
    per_field = readout.startswith("fields")
    assert feats.shape == (6, distilled.hidden_size * (4 if per_field else 1)) == (6, enc.feature_dim)
    assert np.isfinite(feats).all()
    hits = distilled.cache_stats()["hits"]
    np.testing.assert_array_equal(enc(states), feats)
    assert distilled.cache_stats()["hits"] == hits + 6
    fresh = StateEncoder(spec, get_serializer("CartPole-v1"), load_backbone(BACKBONE, cache_mb=0), readout)
    np.testing.assert_array_equal(fresh(states), feats)


def test_fields_readout_is_the_mean_of_each_fields_token_states(distilled):
    spec = get_spec("CartPole-v1")
    stage = TextStage(spec, get_serializer("CartPole-v1"), distilled.tokenizer, 64)
    _, _, ids, fields = stage(np.array([[0.02, -1.37, 0.11, -0.4]]))
    torch_bb = load_backbone(BACKBONE, engine="torch", cache_mb=0)
    states = TorchEngine(torch_bb.model, torch_bb.tokenizer.pad_id).hidden(ids)[0]
    want = np.stack([states[np.asarray(fields[0]) == f].mean(0) for f in range(4)]).reshape(-1)
    got = torch_bb.encode_fields(ids, fields, 4)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # distinct fields give distinct vectors, and the x_dot field (two tokens: '-', '137') differs from theta's
    vecs = got.reshape(4, -1)
    assert np.linalg.norm(vecs[1] - vecs[2]) > 1.0


@pytest.mark.parametrize("engine", ["auto", "torch"])
def test_field_context_encodes_each_field_on_its_own_and_caches_it_per_field(engine):
    """Context "field": a field's vector is that field's text encoded alone (between [CLS] and [SEP]); the same
    value in another state is a cache hit; a field with no token reads as zeros. On the torch engine a padded batch
    sums in another order than one sequence alone, and the 8-bit activation quantization can turn that last-bit
    difference into one quantization step, which later layers carry on (up to 0.04 in one element of one field
    here): on torch a field's vector must point the same way (cosine >= 0.999), on the native engine match.
    """
    backbone = load_backbone(BACKBONE, cache_mb=16, engine=engine)
    on_torch = backbone.engine_name == "torch"
    spec = get_spec("CartPole-v1")
    stage = TextStage(spec, get_serializer("CartPole-v1"), backbone.tokenizer, 64)
    _, texts, ids, fields = stage(np.array([[0.02, -1.37, 0.11, -0.4], [0.5, -1.37, 0.3, 0.8]]))
    alone = backbone.encode_fields(ids, fields, 4, context="field")
    assert alone.shape == (2, 4 * 384)
    cls, sep = ids[0][0], ids[0][-1]
    for row in range(2):
        for f in range(4):
            own = [i for i, g in zip(ids[row], fields[row]) if g == f]
            want = backbone.engine.hidden([[cls] + own + [sep]])[0][1: 1 + len(own)].mean(0)
            got = alone[row, f * 384: (f + 1) * 384]
            if on_torch:
                assert got @ want / (np.linalg.norm(got) * np.linalg.norm(want)) >= 0.999, (row, f)
            else:
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # x_dot is the same in both states: 7 distinct field texts are encoded and kept, and each is a hit later
    assert backbone.cache_stats()["size"] == 7
    np.testing.assert_array_equal(backbone.encode_fields(ids[1:], fields[1:], 4, context="field"), alone[1:])
    assert backbone.cache_stats()["hits"] == 4
    np.testing.assert_array_equal(alone[0, 384: 768], alone[1, 384: 768])
    # read within the state text, the same value differs with its neighbours
    joint = backbone.encode_fields(ids, fields, 4)
    assert np.abs(joint[0, 384: 768] - joint[1, 384: 768]).max() > 1e-3
    assert np.abs(joint - alone).max() > 1e-2
    cut = [f if f != 3 else -1 for f in fields[0]]
    assert not backbone.encode_fields(ids[:1], [cut], 4, context="field")[0, 3 * 384:].any()
    with pytest.raises(ValueError, match="unknown field context"):
        backbone.encode_fields(ids, fields, 4, context="sentence")


def test_field_context_is_recorded_in_the_layout_and_applies_to_per_field_readouts():
    spec = get_spec("SmartHome-Light-v0")
    serializer = get_serializer("SmartHome-Light-v0")
    layout = FeatureLayout.build(spec, BACKBONE, 384, "fields_proj", False, serializer, context="field")
    assert layout.readout_fields == 6 and FeatureLayout.from_dict(layout.to_dict()) == layout
    state = FeatureLayout.build(spec, BACKBONE, 384, "fields_proj", False, serializer)
    with pytest.raises(CheckpointError, match="context: saved 'field', now 'state'"):
        state.check_same(layout, "ck")
    # a pooled readout reads the whole text whatever the setting says (the paper's recipe stays one flag away)
    assert FeatureLayout.build(spec, BACKBONE, 384, "mean", False, serializer, context="field").context == "state"
    old = {k: v for k, v in layout.to_dict().items() if k != "context"}  # a record from before the setting
    assert FeatureLayout.from_dict(old).context == "state"


@pytest.mark.skipif(not native_available()[0], reason="native extension not built")
def test_native_token_states_match_torch(distilled):
    torch_bb = load_backbone(BACKBONE, engine="torch", cache_mb=0)
    native_bb = load_backbone(BACKBONE, engine="native", cache_mb=0)
    assert native_bb.engine_name == "native"
    spec = get_spec("HalfCheetah-v4")
    stage = TextStage(spec, get_serializer("HalfCheetah-v4"), distilled.tokenizer, 64)
    _, _, ids, fields = stage(rollout_states("HalfCheetah-v4", 8, seed=5))
    a, b = torch_bb.engine.hidden(ids), native_bb.engine.hidden(ids)
    for row, seq in enumerate(ids):
        x, y = a[row, : len(seq)], b[row, : len(seq)]
        cos = (x * y).sum(-1) / (np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1))
        assert cos.min() >= 0.999, cos.min()
        assert not a[row, len(seq):].any() and not b[row, len(seq):].any()  # padding reads as zeros
    fa, fb = torch_bb.encode_fields(ids, fields, 17), native_bb.encode_fields(ids, fields, 17)
    cos = (fa * fb).sum(-1) / (np.linalg.norm(fa, axis=-1) * np.linalg.norm(fb, axis=-1))
    assert cos.min() >= 0.999


def _learner(layout, tmp_path=None):
    space = gym.spaces.Discrete(2)
    return OnlineLearner(layout.feature_dim, space, PPOConfig(num_envs=1, num_steps=8, minibatch_size=8), layout=layout,
                         checkpoint_dir=tmp_path)


def test_layout_round_trips_through_a_checkpoint_and_a_mismatch_is_refused(tmp_path):
    spec = get_spec("CartPole-v1")
    serializer = get_serializer("CartPole-v1", numbers="scaled")
    layout = FeatureLayout.build(spec, BACKBONE, 384, "fields_proj", True, serializer, proj_dim=8)
    assert layout.feature_dim == 4 * 384 + 4 and layout.head_readout()["proj_dim"] == 8
    learner = _learner(layout)
    learner.save(tmp_path / "ck")
    state = json.loads((tmp_path / "ck" / "state.json").read_text())
    assert FeatureLayout.from_dict(state["extra"]["feature_layout"]) == layout
    _learner(layout).load(tmp_path / "ck")  # the same layout resumes
    other = FeatureLayout.build(spec, BACKBONE, 384, "fields_proj", True, get_serializer("CartPole-v1"), proj_dim=8)
    with pytest.raises(CheckpointError) as err:
        _learner(other).load(tmp_path / "ck")
    assert "feature layout" in str(err.value) and "serializer" in str(err.value) and str(tmp_path / "ck") in \
        str(err.value)
    ptq = FeatureLayout.build(spec, "minilm-ternary-ptq", 384, "fields_proj", True, serializer, proj_dim=8)
    with pytest.raises(CheckpointError, match="backbone: saved 'minilm-bitnet-distilled', now 'minilm-ternary-ptq'"):
        _learner(ptq).load(tmp_path / "ck")


def test_trainable_readout_is_small_and_a_hybrid_starts_as_the_raw_mlp():
    from bitrl_ros.rl.ppo import PPO

    spec = get_spec("HalfCheetah-v4")
    text_only = FeatureLayout.build(spec, BACKBONE, 384, "fields_proj", False, get_serializer("HalfCheetah-v4"))
    space = gym.spaces.Box(-1, 1, (6,))
    ppo = PPO(text_only.feature_dim, space, readout=text_only.head_readout())
    readout_params = sum(p.numel() for p in ppo.policy.readout.parameters())
    assert readout_params == 384 * 16 + 16
    heads = sum(p.numel() for m in (ppo.policy, ppo.value_head) for p in m.parameters())
    assert heads < 0.01 * 22.5e6  # under 1% of the 22.6M-parameter backbone
    hybrid = FeatureLayout.build(get_spec("CartPole-v1"), BACKBONE, 384, "fields_proj", True,
                                 get_serializer("CartPole-v1"))
    ppo = PPO(hybrid.feature_dim, gym.spaces.Discrete(2), readout=hybrid.head_readout())
    import torch

    x = torch.randn(5, hybrid.feature_dim)
    y = x.clone()
    y[:, :-4] = torch.randn(5, hybrid.feature_dim - 4)  # other text, same raw observation
    assert torch.equal(ppo.policy.distribution(x).logits, ppo.policy.distribution(y).logits)


def test_offline_evaluation_builds_features_from_the_recorded_layout(tmp_path, distilled):
    """eval-bag: recorded per-field embeddings and recomputed ones give the same features, as the layout says."""
    from bitrl_ros.bag.episodes import Decision, Episode
    from bitrl_ros.bag.policy import EvaluatedPolicy, build_features

    spec = get_spec("CartPole-v1")
    enc = StateEncoder(spec, get_serializer("CartPole-v1", numbers="scaled"), distilled, "fields_proj", True)
    learner = _learner(enc.layout)
    learner.save(tmp_path / "ck")
    policy = EvaluatedPolicy(tmp_path / "ck")
    assert policy.layout == enc.layout and policy.ppo.readout == enc.layout.head_readout()
    states = rollout_states("CartPole-v1", 5, seed=6)
    recorded = enc(states)[:, : enc.layout.embedding_dim]
    decisions = [Decision(0, i, s.astype(np.float32), e, 1.0, 0, -0.7, 0.0, False)
                 for i, (s, e) in enumerate(zip(states, recorded))]
    from_bag, how = build_features([Episode(0, decisions)], policy, None, tmp_path, "CartPole-v1")
    assert "recorded" in how and from_bag.shape == (5, enc.layout.feature_dim)
    for d in decisions:
        d.embedding = None  # e.g. a bag recorded without encoded_state
    again, how = build_features([Episode(0, decisions)], policy, None, tmp_path, "CartPole-v1")
    assert "recomputed" in how
    np.testing.assert_allclose(again, from_bag, atol=1e-4)
    with pytest.raises(CheckpointError, match="minilm-ternary-ptq"):
        build_features([Episode(0, decisions)], policy, "minilm-ternary-ptq", tmp_path, "CartPole-v1")
