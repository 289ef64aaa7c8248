import json
import shutil

import pytest
from safetensors.torch import load_file
import torch

from bitrl_ros.backbone.bert import BertEncoder, EncoderConfig
from bitrl_ros.backbone.bitlinear import BitLinear
from bitrl_ros.backbone.bitnet import bitnet_tiny_config, BitNetDecoder
from bitrl_ros.backbone.model_file import load_model, random_model, save_model
from bitrl_ros.backbone.tokenizer import Tokenizer
from bitrl_ros.errors import ModelFileError


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory):
    """A small WordPiece tokenizer.json with BERT special tokens, built here (no download)."""
    from tokenizers import Tokenizer as HFTok
    from tokenizers import models, normalizers, pre_tokenizers, processors

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "x", "v", "th", "w", ":", ".", "-"] + [str(d) for d in range(10)]
    tok = HFTok(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def tiny_encoder(linear="bitlinear"):
    torch.manual_seed(0)
    cfg = EncoderConfig(vocab_size=21, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                        max_position=32, linear=linear)
    return BertEncoder(cfg).eval()


def test_tokenizer_wrapper(tokenizer_json):
    tok = Tokenizer(tokenizer_json)
    assert tok.pad_id == 0 and tok.vocab_size == 21
    ids = tok.encode_batch(["x:0.1 v:-2", "w"], max_tokens=6)
    assert ids[1] == [2, 7, 3]
    assert len(ids[0]) == 6 and ids[0][0] == 2 and ids[0][-1] == 3  # truncated, final [SEP] kept
    assert tok.truncated_count == 1
    assert tok.count_tokens("x:0.1 v:-2") == 11  # [CLS] x : 0 . 1 v : - 2 [SEP]
    assert ids[0] == [2, 4, 8, 11, 9, 3]


@pytest.mark.parametrize("kind", ["encoder", "encoder-fp", "decoder"])
def test_save_load_bit_identical(tmp_path, tokenizer_json, kind):
    if kind == "decoder":
        torch.manual_seed(0)
        model = BitNetDecoder(bitnet_tiny_config()).eval()
        ids = torch.randint(0, 256, (2, 9))
    else:
        model = tiny_encoder("fp" if kind == "encoder-fp" else "bitlinear")
        ids = torch.randint(0, 21, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    save_model(model, tokenizer_json, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["format_version"] == 1
    loaded, tok = load_model(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.config == model.config
    assert isinstance(tok, Tokenizer)
    with torch.no_grad():
        assert torch.equal(model(ids, attention_mask=mask), loaded(ids, attention_mask=mask))
    tensors = load_file(str(tmp_path / "m" / "model.safetensors"))
    if kind == "encoder-fp":
        assert cfg["quantization"] is None
        assert "layers.0.attn.q.weight" in tensors
    else:
        assert cfg["quantization"] == {"weights": "ternary-absmean", "activations": "int8-absmax-per-token"}
        bits = [m for m in loaded.modules() if isinstance(m, BitLinear)]
        assert bits and all(m.frozen for m in bits)
        packed = [k for k in tensors if k.endswith(".weight_packed")]
        assert len(packed) == len(bits)
        assert all(tensors[k].dtype == torch.uint8 for k in packed)
        assert not any(k.endswith("proj.weight") or k.endswith("attn.q.weight") for k in tensors)


@pytest.fixture
def saved(tmp_path, tokenizer_json):
    return save_model(tiny_encoder(), tokenizer_json, tmp_path / "m")


def _raises(directory, *fragments, load=load_model):
    with pytest.raises(ModelFileError) as e:
        load(directory)
    for f in fragments:
        assert f in str(e.value)


def test_bad_json(saved):
    (saved / "config.json").write_text("{not json")
    _raises(saved, "config.json", "JSON")


def test_unknown_architecture(saved):
    cfg = json.loads((saved / "config.json").read_text())
    cfg["architecture"] = "gpt-7"
    (saved / "config.json").write_text(json.dumps(cfg))
    _raises(saved, "config.json", "gpt-7")


def test_truncated_safetensors(saved):
    data = (saved / "model.safetensors").read_bytes()
    (saved / "model.safetensors").write_bytes(data[: len(data) // 2])
    _raises(saved, "model.safetensors", "corrupt")


def test_shape_mismatch(saved):
    cfg = json.loads((saved / "config.json").read_text())
    cfg["config"]["intermediate_size"] = 48
    (saved / "config.json").write_text(json.dumps(cfg))
    _raises(saved, "model.safetensors", "layers.0.up", "shape")


def test_missing_files(saved):
    (saved / "tokenizer.json").write_text("garbage")
    _raises(saved, "tokenizer.json")
    (saved / "model.safetensors").unlink()
    _raises(saved, "model.safetensors", "not found")
    shutil.rmtree(saved)
    _raises(saved, "not found")


def test_load_backbone_from_model_directory(saved):
    from bitrl_ros.backbone import load_backbone

    bb = load_backbone(str(saved), cache_mb=0, max_tokens=8)
    assert bb.id == str(saved) and bb.hidden_size == 32
    feats = bb.encode(["x:0.1 v:-2", "w"], pooling="last")
    assert feats.shape == (2, 32) and feats.dtype.name == "float32"


def test_hf_loader_names_missing_and_mismatched_keys():
    from bitrl_ros.backbone.bert import load_hf_bert_state_dict

    model = tiny_encoder("fp")
    hf = {
        "bert.embeddings.word_embeddings.weight": model.embeddings.word.weight,
        "bert.embeddings.position_embeddings.weight": model.embeddings.position.weight,
    }
    with pytest.raises(ModelFileError, match="embeddings.token_type_embeddings.weight"):
        load_hf_bert_state_dict(model, hf)
    hf["bert.embeddings.position_embeddings.weight"] = torch.zeros(3, 3)
    with pytest.raises(ModelFileError, match="position_embeddings.weight.*shape"):
        load_hf_bert_state_dict(model, hf)


def test_random_ternary_baseline_has_the_default_shape_fixed_weights_and_no_training():
    from bitrl_ros.backbone.registry import DEFAULT_BACKBONE, RANDOM_TERNARY_SEED, shipped_model_dir

    directory = shipped_model_dir(DEFAULT_BACKBONE)
    trained, _ = load_model(directory)
    one, tok = random_model(directory, RANDOM_TERNARY_SEED)
    two, _ = random_model(directory, RANDOM_TERNARY_SEED)
    assert {k: v.shape for k, v in one.state_dict().items()} == {k: v.shape for k, v in trained.state_dict().items()}
    layers = [m for m in one.modules() if isinstance(m, BitLinear)]
    assert layers and all(m.frozen and set(m.weight_q.unique().tolist()) <= {-1, 0, 1} for m in layers)
    for (key, a), b in zip(one.state_dict().items(), two.state_dict().values()):
        assert torch.equal(a, b), key
    trained_state = trained.state_dict()
    differs = {k for k, v in one.state_dict().items() if k.endswith("weight") and not torch.equal(v, trained_state[k])}
    names = {name for name, m in one.named_modules() if isinstance(m, BitLinear)}
    assert {f"{n}.weight" for n in names} <= differs
    assert len(differs) > len(names)  # the embeddings are drawn too, not only the linear layers
    assert tok.encode_batch(["go to the red ball"]) == load_model(directory)[1].encode_batch(["go to the red ball"])
