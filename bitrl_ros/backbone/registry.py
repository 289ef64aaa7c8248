"""Frozen backbones by id, with pooling and an LRU embedding cache keyed by token ids.

Torch is imported only where a torch module is built (the FP32 teacher, the PTQ and random baselines, the torch
engine): a ternary model directory on the native engine (the shipped default) loads with numpy alone, and so does
``minilm-int8`` (the hybrid critic's default) once its model directory of int8 linears is cached (``derived_dir``):
the first native load derives it from the teacher with torch and writes it; later loads read it without torch.
"""

from __future__ import annotations

from collections import OrderedDict
import hashlib
import os
from pathlib import Path
import shutil
import sys

import numpy as np

from .catalog import BACKBONE_IDS, DEFAULT_BACKBONE, PRECISION_VARIANTS, RANDOM_TERNARY, SHIPPED_MODELS, TEACHER_DERIVED
from .engines.native import native_available, NativeEncoder
from .locations import shipped_model_dir, teacher_dir
from .model_format import CONFIG_FILE, read_config, TOKENIZER_FILE, weight_format
from .tokenizer import special_token_ids, Tokenizer
from ..errors import ModelFileError
from ..fileio import read_json_object
from ..settings import ENGINES, FIELD_CONTEXTS, POOLINGS

# The cache has to earn its memory: after CACHE_TRIAL_LOOKUPS lookups, a hit rate under CACHE_MIN_HIT_RATE empties
# and switches it off for good (CartPole's continuous states hit under 3%, MountainCar's two-decimal ones ~94%).
CACHE_TRIAL_LOOKUPS = 4096
CACHE_MIN_HIT_RATE = 0.10
RANDOM_TERNARY_SEED = 0  # the seed of RANDOM_TERNARY's weights
# Teacher variants the native engine loads from a cached model directory (no torch once it exists).
NATIVE_FILE_VARIANTS = ("minilm-int8",)


class Backbone:
    """A frozen text encoder: token ids -> one pooled float32 feature vector per sequence.

    ``model`` is a torch module, run by ``engine``: "torch" (the module itself), "native" (the C++ engine on the
    ternary kernels; only for ternary models) or "auto" (native when the model is ternary and the extension is
    built, else torch); or a NativeEncoder already built from a model file (then ``model`` is None afterwards and
    engine/threads are the encoder's). ``engine_name`` says which one runs; ``threads`` is the native engine's
    thread count.
    """

    def __init__(self, backbone_id: str, model, tokenizer: Tokenizer | Path,
                 max_tokens: int = 64, cache_mb: float = 32.0, engine: str = "auto", threads: int = 1):
        """tokenizer: a Tokenizer, or the path of its tokenizer.json, read when first needed (an encoder that
        only receives token ids, the ternary_encoder node, never spends the ~8 MB a vocabulary takes).
        """
        if not cache_mb >= 0:
            raise ValueError(f"cache_mb must be >= 0, got {cache_mb}")
        if not isinstance(tokenizer, Tokenizer) and not Path(tokenizer).is_file():
            raise ModelFileError(f"{tokenizer}: tokenizer file not found")
        self.id = backbone_id
        self._tokenizer = tokenizer
        if isinstance(model, NativeEncoder):
            self.model, self.engine = None, model
            self._max_len = model.native.max_positions
        else:
            from .engines import make_engine

            self.model = model.eval().requires_grad_(False)
            self.engine = make_engine(self.model, self.tokenizer.pad_id, engine, threads=threads)
            self._max_len = getattr(model.config, "max_position", None) or model.config.max_position_embeddings
        self.engine_name: str = self.engine.name
        self.hidden_size: int = self.engine.hidden_size if self.model is None else model.hidden_size
        self.max_tokens = max_tokens
        self.cache_budget = int(cache_mb * 2**20)  # bytes the cache may hold (0: off)
        self._cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._cache_bytes = 0
        self._hits = 0
        self._misses = 0
        self.cache_off_reason = ""  # why the cache switched itself off ("" while it is on, or never was)
        self._norm_noise = None     # noise.NormNoise, made on the first set_norm_noise
        self._specials = None       # special token ids, read when a field is first encoded on its own

    @property
    def tokenizer(self) -> Tokenizer:
        if not isinstance(self._tokenizer, Tokenizer):
            self._tokenizer = Tokenizer(self._tokenizer)
        return self._tokenizer

    def tokenizer_digest(self) -> str:
        """SHA-256 of the tokenizer file: two backbones with the same digest make the same token ids."""
        path = self._tokenizer.path if isinstance(self._tokenizer, Tokenizer) else Path(self._tokenizer)
        return hashlib.sha256(path.read_bytes()).hexdigest()

    def feature_dim(self, pooling: str = "mean") -> int:
        _check_pooling(pooling)
        return self.hidden_size

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer.encode_batch(texts, self.max_tokens)

    def encode(self, texts: list[str], pooling: str = "mean", normalize: bool = False) -> np.ndarray:
        return self.encode_tokens(self.tokenize(texts), pooling=pooling, normalize=normalize)

    def encode_tokens(self, token_id_lists: list[list[int]], pooling: str = "mean",
                      normalize: bool = False) -> np.ndarray:
        """Pooled features float32 [B, hidden_size]; cached rows skip the model, misses run as one batch."""
        _check_pooling(pooling)
        keys = [(self._checked(ids), pooling, self.noise_tag) for ids in token_id_lists]
        out = self._cached(keys, self.hidden_size, lambda missing: self._run([_ids(k[0]) for k in missing], pooling))
        if normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def encode_fields(self, token_id_lists: list[list[int]], token_field_lists: list[list[int]],
                      num_fields: int, context: str = "state") -> np.ndarray:
        """Per-field readout float32 [B, num_fields * hidden_size]: for every field, the mean of the last-layer
        states of the tokens aligned to it (token_field_lists, from Tokenizer.encode_aligned; -1 = no field),
        fields concatenated in order; a field with no token (truncated away) reads as zeros.

        context "state": the tokens are read in the context of the whole state text, cached per state (keyed by
        ids and alignment). "field": each field's tokens are encoded on their own, between the sequence's special
        tokens, and cached per field, so a field value seen before costs a lookup whatever the other fields say.
        A field in several pieces (runs of its tokens with others between, e.g. the clauses of an instruction)
        then reads as the sum of its pieces' vectors, each piece encoded alone: a set, whatever the order.
        """
        if context not in FIELD_CONTEXTS:
            raise ValueError(f"unknown field context {context!r}; expected one of {', '.join(FIELD_CONTEXTS)}")
        if context == "field":
            return self._encode_fields_alone(token_id_lists, token_field_lists, num_fields)
        keys = []
        for ids, fields in zip(token_id_lists, token_field_lists):
            if len(fields) != len(ids):
                raise ValueError(f"{len(fields)} token fields for {len(ids)} token ids")
            keys.append((self._checked(ids), np.asarray(fields, dtype=np.int16).tobytes(), num_fields,
                         self.noise_tag))
        width = num_fields * self.hidden_size

        def run(missing):
            states = self.engine.hidden([_ids(k[0]) for k in missing])
            return [field_means(h[: len(k[0]) // _ID_BYTES], np.frombuffer(k[1], dtype=np.int16), num_fields)
                    .reshape(width) for k, h in zip(missing, states)]
        return self._cached(keys, width, run)

    def _encode_fields_alone(self, token_id_lists, token_field_lists, num_fields: int) -> np.ndarray:
        specials = self._special_ids()
        keys, slots = [], []  # one key per (state, field) with tokens; slots[i]: its row and field
        for row, (ids, fields) in enumerate(zip(token_id_lists, token_field_lists)):
            if len(fields) != len(ids):
                raise ValueError(f"{len(fields)} token fields for {len(ids)} token ids")
            lead = 0
            while lead < len(ids) and ids[lead] in specials:
                lead += 1
            trail = len(ids)
            while trail > lead and ids[trail - 1] in specials:
                trail -= 1
            for f, piece in _field_runs(fields, num_fields):
                keys.append((self._checked(list(ids[:lead]) + [ids[j] for j in piece] + list(ids[trail:])), lead,
                             len(piece), self.noise_tag))
                slots.append((row, f))

        def run(missing):
            states = self.engine.hidden([_ids(k[0]) for k in missing])
            return [h[k[1]: k[1] + k[2]].mean(0) for k, h in zip(missing, states)]
        out = np.zeros((len(token_id_lists), num_fields, self.hidden_size), dtype=np.float32)
        if keys:
            vecs = self._cached(keys, self.hidden_size, run)
            rows, cols = zip(*slots)
            np.add.at(out, (np.array(rows), np.array(cols)), vecs)  # a field's pieces add up
        return out.reshape(len(token_id_lists), num_fields * self.hidden_size)

    def _special_ids(self) -> frozenset:
        """The tokenizer's special token ids but its unknown token: what a sequence starts and ends with."""
        if self._specials is None:
            path = self._tokenizer.path if isinstance(self._tokenizer, Tokenizer) else Path(self._tokenizer)
            self._specials = special_token_ids(path)
        return self._specials

    @property
    def noise_tag(self) -> tuple | None:
        """(sigma, seed) of the normalization-gain noise in place (AQN, noise.py); None: clean. Part of every
        cache key, so that noisy and clean features never mix.
        """
        return None if self._norm_noise is None else self._norm_noise.tag

    def set_norm_noise(self, sigma: float, seed: int = 0) -> None:
        """Gaussian noise of std ``sigma`` on the normalization gains from here on (0: the clean gains)."""
        if self._norm_noise is None:
            if sigma == 0:
                return
            from .noise import NormNoise

            self._norm_noise = NormNoise(self.engine)
        self._norm_noise.apply(sigma, seed)

    def _checked(self, ids) -> bytes:
        """The ids as the cache key: int32 bytes (a tenth of a tuple of ints' memory, hashed as fast)."""
        if not len(ids):
            raise ValueError("cannot encode an empty token sequence")
        if len(ids) > self._max_len:
            raise ValueError(f"sequence of {len(ids)} tokens exceeds the model's {self._max_len} positions")
        return np.asarray(ids, dtype=np.int32).tobytes()

    def _cached(self, keys: list[tuple], width: int, run) -> np.ndarray:
        """Rows for keys: cached ones from the LRU cache, the missing ones from run(list of distinct missing keys)
        as one batch, remembered.
        """
        out = np.empty((len(keys), width), dtype=np.float32)
        missing: dict[tuple, list[int]] = {}
        for row, key in enumerate(keys):
            hit = self._cache.get(key) if self.cache_budget else None
            if hit is not None:
                self._cache.move_to_end(key)
                out[row] = hit
                self._hits += 1
            else:
                missing.setdefault(key, []).append(row)
                self._misses += 1
        if missing:
            for (key, rows), vec in zip(missing.items(), run(list(missing))):
                out[rows] = vec
                self._remember(key, vec)
        if self.cache_budget and not self.cache_off_reason and self._hits + self._misses >= CACHE_TRIAL_LOOKUPS:
            rate = self._hits / (self._hits + self._misses)
            if rate < CACHE_MIN_HIT_RATE:
                self.cache_off_reason = (f"hit rate {rate:.1%} after {self._hits + self._misses} lookups, under "
                                         f"{CACHE_MIN_HIT_RATE:.0%}: not worth its memory")
                self.cache_budget = 0
                self._cache.clear()
                self._cache_bytes = 0
        return out

    def cache_stats(self) -> dict:
        total = self._hits + self._misses
        return {"hits": self._hits, "misses": self._misses,
                "hit_rate": self._hits / total if total else 0.0, "size": len(self._cache),
                "bytes": self._cache_bytes, "budget_bytes": self.cache_budget, "off": self.cache_off_reason}

    def clear_cache(self) -> None:
        self._cache.clear()
        self._cache_bytes = 0
        self._hits = self._misses = 0

    def _remember(self, key: tuple, vec: np.ndarray) -> None:
        if not self.cache_budget:
            return
        vec = vec.copy()  # its own buffer: a row view would keep its whole batch alive
        self._cache[key] = vec
        self._cache_bytes += _entry_bytes(key, vec)
        while self._cache_bytes > self.cache_budget:
            old_key, old_vec = self._cache.popitem(last=False)
            self._cache_bytes -= _entry_bytes(old_key, old_vec)

    def _run(self, seqs: list[list[int]], pooling: str) -> np.ndarray:
        return self.engine.run(seqs, pooling)


_ID_BYTES = 4           # a token id in a cache key (int32)
_DICT_NODE_BYTES = 100  # an OrderedDict entry: hash slot, entry and linked-list node


def _ids(key_part: bytes) -> list[int]:
    return np.frombuffer(key_part, dtype=np.int32).tolist()


def _entry_bytes(key: tuple, vec: np.ndarray) -> int:
    """What one cache entry costs: the vector (an array owning its data: header + data), the key and its parts
    (an upper bound: interned strings and small ints are shared), and the ordered dict's node.
    """
    return sys.getsizeof(vec) + sys.getsizeof(key) + sum(sys.getsizeof(p) for p in key) + _DICT_NODE_BYTES


def _field_runs(token_fields, num_fields: int) -> list[tuple[int, list[int]]]:
    """(field, token positions) of every run of consecutive tokens of one field (-1 and fields >= num_fields,
    truncated away, are none).
    """
    runs: list[tuple[int, list[int]]] = []
    last = -1
    for j, f in enumerate(token_fields):
        if 0 <= f < num_fields:
            if f == last:
                runs[-1][1].append(j)
            else:
                runs.append((f, [j]))
        last = f
    return runs


def field_means(states: np.ndarray, token_fields: np.ndarray, num_fields: int) -> np.ndarray:
    """[T, H] token states + [T] field index per token (-1: none) -> [num_fields, H] means (zeros where empty)."""
    # An averaging matrix [num_fields, T]: one small matmul instead of a scatter-add.
    weights = (token_fields[None, :] == np.arange(num_fields)[:, None]).astype(np.float32)
    weights /= np.maximum(weights.sum(1, keepdims=True), 1.0)
    return weights @ states


def _check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")


def available_backbones() -> list[str]:
    return list(BACKBONE_IDS)


def load_backbone(backbone_id: str, cache_mb: float = 32.0, max_tokens: int = 64, engine: str = "auto",
                  threads: int = 1) -> Backbone | None:
    """A Backbone by id, or from a model directory in our format; 'mlp' means no backbone (None).

    engine: "auto" | "torch" | "native" (see Backbone); threads: the native engine's thread count.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if backbone_id == "mlp":
        return None
    kw = {"max_tokens": max_tokens, "cache_mb": cache_mb, "engine": engine, "threads": threads}
    if backbone_id in NATIVE_FILE_VARIANTS and engine != "torch" and native_available()[0]:
        from .engines.native.from_file import load_native_model

        directory = _derived_int8_dir(backbone_id)
        encoder = NativeEncoder(load_native_model(directory), threads=threads)
        return Backbone(backbone_id, encoder, directory / TOKENIZER_FILE, **kw)
    if backbone_id in TEACHER_DERIVED:
        from .teacher import load_teacher, ternarize_ptq

        model, tok = load_teacher()
        if backbone_id == "minilm-ternary-ptq":
            model = ternarize_ptq(model)
        elif backbone_id in PRECISION_VARIANTS:
            from .variants import quantize_linears

            model = quantize_linears(model, PRECISION_VARIANTS[backbone_id])
        return Backbone(backbone_id, model, tok, **kw)
    if backbone_id == RANDOM_TERNARY:
        from .model_file import random_model

        model, tok = random_model(shipped_model_dir(DEFAULT_BACKBONE), RANDOM_TERNARY_SEED)
        return Backbone(backbone_id, model, tok, **kw)
    if backbone_id in SHIPPED_MODELS or Path(backbone_id).is_dir():
        directory = shipped_model_dir(backbone_id) if backbone_id in SHIPPED_MODELS else Path(backbone_id)
        if _native_from_file(directory, engine):
            from .engines.native.from_file import load_native_model

            encoder = NativeEncoder(load_native_model(directory), threads=threads)
            return Backbone(backbone_id, encoder, directory / TOKENIZER_FILE, **kw)
        from .model_file import load_model

        model, tok = load_model(directory)
        return Backbone(backbone_id, model, tok, **kw)
    raise ValueError(f"unknown backbone {backbone_id!r}; valid ids: {', '.join(BACKBONE_IDS)} "
                     f"or the path of a model directory")


def derived_dir(backbone_id: str) -> Path:
    """Where a teacher variant's model directory is cached: $BITRL_MODEL_CACHE (default ~/.cache/bitrl_ros/models)
    / backbone_id.
    """
    root = os.environ.get("BITRL_MODEL_CACHE") or Path.home() / ".cache" / "bitrl_ros" / "models"
    return Path(root) / backbone_id


def _teacher_digest() -> str:
    h = hashlib.sha256()
    with open(teacher_dir() / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _derived_from(directory: Path) -> dict | None:
    """What a cached model directory records it was derived from (None: no complete directory there)."""
    config = directory / CONFIG_FILE
    if not config.is_file():
        return None
    try:
        return read_json_object(config, ModelFileError).get("derived_from")
    except ModelFileError:
        return None


def _derived_int8_dir(backbone_id: str) -> Path:
    """The cached model directory of ``backbone_id``'s int8 linears, written from the teacher (with torch) when it
    is missing or was derived from another teacher file.
    """
    directory = derived_dir(backbone_id)
    origin = {"teacher": "all-MiniLM-L6-v2", "teacher_sha256": _teacher_digest(),
              "variant": PRECISION_VARIANTS[backbone_id]}
    if _derived_from(directory) == origin:
        return directory
    from .model_file import save_int8_model
    from .teacher import load_teacher
    from .variants import quantize_linears

    print(f"bitrl: deriving {backbone_id} from the teacher into {directory} (once; later loads need no torch)",
          file=sys.stderr, flush=True)
    model, _ = load_teacher()
    variant = quantize_linears(model, PRECISION_VARIANTS[backbone_id])
    tmp = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
    try:
        save_int8_model(variant, teacher_dir() / "tokenizer.json", tmp, origin)
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(tmp, directory)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if _derived_from(directory) != origin:  # unless a concurrent load put the same files in place first
            raise ModelFileError(f"cannot cache {backbone_id} in {directory} ({exc}); set BITRL_MODEL_CACHE to a "
                                 "writable directory, or use engine torch") from None
    return directory


def _native_from_file(directory: Path, engine: str) -> bool:
    """Whether a model directory goes straight into the native engine: ternary or int8 linears, engine native or auto
    with the extension built. (engine native without the extension still goes the torch way, which raises the
    engine's own error.)
    """
    if engine == "torch" or not native_available()[0]:
        return False
    read_config(directory / CONFIG_FILE)
    return weight_format(directory / CONFIG_FILE) in ("ternary", "int8")
