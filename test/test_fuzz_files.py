"""Hostile files: a model, checkpoint, bag or mapping file that was mutated (truncated, bytes flipped or inserted)
gives a clear error naming the file, never a crash or a parser's traceback. 1,000 mutations per file kind.
"""
import random
import shutil

import gymnasium as gym
import pytest

from bitrl_ros.errors import BitrlError
from test_backbone_file import tokenizer_json  # noqa: F401 - the fixture

MUTATIONS = 1000


def _mutate(path, rng: random.Random) -> str:
    """Truncate, flip bits in or insert bytes into one file; returns what was done."""
    data = bytearray(path.read_bytes())
    op = rng.choice(("truncate", "flip", "insert"))
    if op == "truncate" or not data:
        data = data[:rng.randrange(len(data) + 1)]
    elif op == "flip":
        for _ in range(rng.randint(1, 8)):
            j = rng.randrange(len(data))
            data[j] ^= 1 << rng.randrange(8)
    else:
        j = rng.randrange(len(data) + 1)
        data[j:j] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    path.write_bytes(bytes(data))
    return f"{op} {path.name}"


def _fuzz(tmp_path, good_dir, load, files=None, seed=0):
    """Mutate one file of a copy of good_dir MUTATIONS times; load(copy) must succeed or raise a BitrlError
    that names the mutated copy. Returns how many loads were refused.
    """
    rng = random.Random(seed)
    refused = 0
    for i in range(MUTATIONS):
        work = tmp_path / f"m{i}"
        shutil.copytree(good_dir, work)
        candidates = sorted(p for p in work.rglob("*") if p.is_file() and (files is None or p.name in files))
        what = _mutate(rng.choice(candidates), rng)
        try:
            load(work)
        except BitrlError as exc:
            refused += 1
            assert str(work) in str(exc), f"mutation {i} ({what}): the error does not name the file: {exc}"
        except Exception as exc:  # noqa: BLE001 - any other exception is the failure this test looks for
            raise AssertionError(f"mutation {i} ({what}): {type(exc).__name__}: {exc}") from exc
        shutil.rmtree(work)
    return refused


def test_mutated_checkpoints(tmp_path):
    from bitrl_ros.rl.checkpoint import load_checkpoint, save_checkpoint
    from bitrl_ros.rl.ppo import PPO, PPOConfig

    cfg = PPOConfig(num_envs=1, num_steps=8, minibatch_size=8, hidden_sizes=(8,))
    good = save_checkpoint(tmp_path / "good", PPO(4, gym.spaces.Discrete(2), cfg), {"global_step": 8})
    refused = _fuzz(tmp_path, good, lambda d: load_checkpoint(d, PPO(4, gym.spaces.Discrete(2), cfg)))
    assert refused > MUTATIONS // 2


def test_mutated_model_files(tmp_path, tokenizer_json):  # noqa: F811 - the imported fixture
    from test_backbone_file import tiny_encoder

    from bitrl_ros.backbone import load_model, save_model
    from bitrl_ros.backbone.bitlinear import BitLinear

    model = tiny_encoder()
    for m in model.modules():
        if isinstance(m, BitLinear):
            m.freeze()
    good = save_model(model, tokenizer_json, tmp_path / "good", embedding_dtype="int8")
    # tokenizer.json is parsed by the tokenizers library; the package's own formats are what is fuzzed here.
    refused = _fuzz(tmp_path, good, load_model, files={"config.json", "model.safetensors"})
    assert refused > MUTATIONS // 2


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_mutated_bags(tmp_path, storage):
    from test_bag_errors import _write

    from bitrl_ros.bag.sources import read_observations

    _write(tmp_path / "good", storage, n=50)
    refused = _fuzz(tmp_path, tmp_path / "good", lambda d: read_observations(d), seed=1)
    assert refused > 0


def test_mutated_mappings(tmp_path):
    from test_bag_foreign import _write_foreign, MAPPING

    from bitrl_ros.bag.sources import read_observations

    bag = _write_foreign(tmp_path / "bag")
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "mapping.yaml").write_text(MAPPING)
    refused = _fuzz(tmp_path, tmp_path / "good",
                    lambda d: read_observations(bag, mapping=str(d / "mapping.yaml")), seed=2)
    assert refused > MUTATIONS // 4


def test_mutated_model_files_into_the_native_engine(tmp_path, tokenizer_json):  # noqa: F811 - the imported fixture
    """The torch-free path the encoder node loads by (model_format + the C++ engine's own checks)."""
    from test_backbone_file import tiny_encoder

    from bitrl_ros.backbone import save_model
    from bitrl_ros.backbone.engines.native import native_available

    if not native_available()[0]:
        pytest.skip("native engine not built")
    from bitrl_ros.backbone.engines.native.from_file import load_native_model

    good = save_model(tiny_encoder(), tokenizer_json, tmp_path / "good", embedding_dtype="int8")
    refused = _fuzz(tmp_path, good, load_native_model, files={"config.json", "model.safetensors"}, seed=1)
    assert refused > MUTATIONS // 2
