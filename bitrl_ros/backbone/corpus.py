"""The distillation corpus, generated offline by the project itself and deterministic for a given seed.

Sources (each text carries a label, used for per-group held-out evaluation):

- ``state/<format>/<env_id>``: observations of every registered env, serialized in every serializer format.
  Half of each env's states come from a uniform random policy, half from a simple scripted policy (CartPole PD
  controller, MountainCar energy pumping, Acrobot torque-along-velocity, MuJoCo sinusoidal gaits), so the state
  distribution includes the kind of states a trained agent visits, not only near-reset ones.
- ``task/babyai/<env_id>``: the BabyAI renderer's texts (serialize/grid_text.py) from random-policy rollouts of
  every registered BabyAI env, as the per-field readout reads them: each segment alone (the mission, the agent's
  own state, every object phrase) and the whole text. Added in version 2: version 1 had no task text, and the
  student matched the teacher on these phrases at cosine 0.88 against 0.98 on its own held-out split. SmartHome
  and TextWorld texts are not in the corpus (SmartHome's held-out paraphrases must stay unseen by everything).
- ``mission``: BabyAI-like missions, smart-home and robot commands, TextWorld-like room descriptions (templates).
- ``general``: general English sentences from templates.

Texts are deduplicated (first label wins). The held-out split is a deterministic function of the text alone
(``sha256(text) % 1000 < heldout_permille``), so a text is held out in every corpus that contains it and no
training step ever sees it. ``build_corpus`` caches its result as plain JSON under ``build/corpus/``.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
import random

import numpy as np

from ..fileio import atomic_write_text

CORPUS_VERSION = 2
HELDOUT_PERMILLE = 50  # 5 %
DEFAULT_CACHE_DIR = Path("build") / "corpus"


# ----------------------------------------------------------------------------------------------- state rollouts

def _scripted_action(env_id: str, obs: np.ndarray, t: int, action_space, phase: np.ndarray, freq: float):
    if env_id.startswith("CartPole"):
        x, x_dot, theta, theta_dot = obs
        return int(theta + 0.5 * theta_dot + 0.02 * x + 0.1 * x_dot > 0)  # PD on angle, weak on position
    if env_id.startswith("MountainCar"):
        return 2 if obs[1] >= 0 else 0  # push along the velocity: energy pumping
    if env_id.startswith("Acrobot"):
        return 2 if obs[4] + 0.5 * obs[5] >= 0 else 0  # torque along the joint speeds
    # MuJoCo: a sinusoidal gait, one phase per actuator.
    low, high = action_space.low, action_space.high
    a = np.sin(2 * math.pi * freq * t * 0.05 + phase)
    return np.clip(a * high, low, high).astype(action_space.dtype)


def rollout_observations(env_id: str, n: int, seed: int, policy: str) -> np.ndarray:
    """``n`` observations of ``env_id`` under ``policy`` ("random" | "scripted"), resetting at episode ends.

    Consecutive states are nearly identical, so every ``stride``-th state is kept (the stride is drawn per episode).
    """
    from bitrl_ros.envs import make_env

    env = make_env(env_id, seed)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    out: list[np.ndarray] = []
    t, stride = 0, int(rng.integers(1, 4))
    n_act = getattr(env.action_space, "shape", None)
    phase = rng.uniform(0, 2 * math.pi, size=n_act) if n_act else None
    freq = float(rng.uniform(0.5, 3.0))
    eps = float(rng.uniform(0.0, 0.3))  # scripted policies act randomly this often, for variety
    while len(out) < n:
        if t % stride == 0:
            out.append(np.asarray(obs, dtype=np.float64))
        if policy == "scripted" and rng.random() >= eps:
            action = _scripted_action(env_id, obs, t, env.action_space, phase, freq)
        else:
            action = env.action_space.sample()
        obs, _, terminated, truncated, _ = env.step(action)
        t += 1
        if terminated or truncated:
            obs, _ = env.reset()
            t, stride = 0, int(rng.integers(1, 4))
            if phase is not None:
                phase = rng.uniform(0, 2 * math.pi, size=n_act)
                freq = float(rng.uniform(0.5, 3.0))
            eps = float(rng.uniform(0.0, 0.3))
    env.close()
    return np.asarray(out[:n])


def env_states(env_id: str, n: int, seed: int) -> np.ndarray:
    """Half random-policy, half scripted-policy observations (``n`` rows)."""
    n_random = n // 2
    parts = [rollout_observations(env_id, n_random, seed, "random")] if n_random else []
    if n - n_random:
        parts.append(rollout_observations(env_id, n - n_random, seed + 1, "scripted"))
    return np.concatenate(parts, axis=0)


def span_texts(text: str, spans) -> list[str]:
    """Every readout segment of a rendered text, a segment in pieces giving one text per piece."""
    out = []
    for span in spans:
        for start, end in (span if span and isinstance(span[0], tuple) else (span,)):
            if end > start:
                out.append(text[start:end])
    return out


def random_renders(env_id: str, steps: int, seed: int):
    """(text, spans) of each of ``steps`` states of a language env under a uniform random policy (seeded), as its
    renderer writes them for the readout.
    """
    from bitrl_ros.envs import make_env
    from bitrl_ros.serialize import get_serializer

    env = make_env(env_id, seed)
    renderer = get_serializer(env_id, "structured")  # a language family has one renderer, whatever the format
    env.action_space.seed(seed)
    obs, info = env.reset(seed=seed)
    try:
        for _ in range(steps):
            yield renderer.render(obs, mission=info.get("mission", ""))
            obs, _, terminated, truncated, info = env.step(env.action_space.sample())
            if terminated or truncated:
                obs, info = env.reset()
    finally:
        env.close()


def task_texts(env_id: str, n: int, seed: int) -> list[str]:
    """Up to ``n`` distinct texts of a language env under a uniform random policy: every readout segment alone
    (as ``features.context=field`` encodes it) and, for at most a quarter of them, the whole rendered text.
    """
    seen: dict[str, None] = {}
    wholes = 0
    for text, spans in random_renders(env_id, 20 * n, seed):  # segments saturate long before: stop eventually
        for piece in span_texts(text, spans):
            seen.setdefault(piece)
        if wholes < n // 4 and text not in seen:
            seen[text] = None
            wholes += 1
        if len(seen) >= n:
            break
    return list(seen)[:n]


# ------------------------------------------------------------------------------------------------ text templates

COLORS = ("red", "green", "blue", "purple", "yellow", "grey")
OBJECTS = ("door", "key", "ball", "box")
ROOMS = ("kitchen", "living room", "bedroom", "bathroom", "garage", "hallway", "office", "cellar", "attic", "garden")
DEVICES = ("light", "lamp", "fan", "heater", "tv", "radio", "oven", "blinds", "speaker", "air conditioner")
FURNITURE = ("table", "shelf", "chest", "bed", "counter", "desk", "cupboard", "sofa", "crate", "workbench")
ITEMS = ("apple", "lantern", "coin", "book", "knife", "map", "candle", "bottle", "hat", "rope", "gem", "scroll")
DIRECTIONS = ("north", "south", "east", "west", "up", "down")
ADJS = ("small", "large", "old", "new", "heavy", "bright", "dark", "quiet", "fast", "slow", "warm", "cold")
NOUNS = ("robot", "car", "dog", "child", "engineer", "teacher", "bird", "river", "train", "city", "machine", "farmer")
VERBS = ("sees", "follows", "moves", "builds", "finds", "carries", "watches", "repairs", "pushes", "avoids")
PLACES = ("park", "factory", "station", "forest", "harbor", "market", "lab", "road", "bridge", "field")
TIMES = ("in the morning", "at night", "after lunch", "every day", "on monday", "before sunrise", "today",
         "yesterday", "in winter", "during the storm")


def _obj(r: random.Random) -> str:
    return f"{r.choice(COLORS)} {r.choice(OBJECTS)}"


def mission_text(r: random.Random) -> str:
    kind = r.randrange(10)
    if kind == 0:
        return f"go to the {_obj(r)}"
    if kind == 1:
        return f"pick up the {r.choice(COLORS)} {r.choice(('key', 'ball', 'box'))}"
    if kind == 2:
        return f"open the {r.choice(COLORS)} door"
    if kind == 3:
        return f"put the {_obj(r)} next to the {_obj(r)}"
    if kind == 4:
        conj = r.choice(("and", "then", "after you"))
        return f"{mission_text(r)} {conj} {mission_text(r)}"
    if kind == 5:
        return f"turn {r.choice(('on', 'off'))} the {r.choice(ROOMS)} {r.choice(DEVICES)}"
    if kind == 6:
        return r.choice((f"set the {r.choice(ROOMS)} thermostat to {r.randint(15, 28)} degrees",
                         f"dim the {r.choice(ROOMS)} light to {r.randrange(0, 101, 5)} percent",
                         f"close the {r.choice(ROOMS)} blinds {r.choice(TIMES)}"))
    if kind == 7:
        return r.choice((f"move forward {r.randint(1, 20)} meters", f"rotate {r.choice(('left', 'right'))} "
                         f"{r.randrange(5, 181, 5)} degrees", f"stop and wait {r.randint(1, 60)} seconds",
                         f"drive to the {r.choice(PLACES)} at {r.randint(1, 9)} meters per second",
                         "balance the pole", "swing the link above the bar", "drive the car up the hill",
                         "run forward as fast as possible", "hop forward without falling"))
    if kind == 8:
        exits = r.sample(DIRECTIONS, r.randint(1, 3))
        return (f"you are in the {r.choice(ROOMS)}. there is a {r.choice(ADJS)} {r.choice(ITEMS)} on the "
                f"{r.choice(FURNITURE)}. exits lead {' and '.join(exits)}.")
    return r.choice((f"take the {r.choice(ITEMS)} from the {r.choice(FURNITURE)}",
                     f"go {r.choice(DIRECTIONS)}", f"unlock the {r.choice(FURNITURE)} with the {r.choice(ITEMS)}",
                     f"examine the {r.choice(ADJS)} {r.choice(ITEMS)}", f"insert the {r.choice(ITEMS)} into the "
                     f"{r.choice(FURNITURE)}", f"eat the {r.choice(ITEMS)}"))


def general_text(r: random.Random) -> str:
    kind = r.randrange(5)
    a, b = r.sample(NOUNS, 2)
    if kind == 0:
        return f"the {r.choice(ADJS)} {a} {r.choice(VERBS)} the {b} near the {r.choice(PLACES)} {r.choice(TIMES)}."
    if kind == 1:
        return f"a {a} and a {b} went to the {r.choice(PLACES)} {r.choice(TIMES)}."
    if kind == 2:
        return f"why does the {a} {r.choice(VERBS)[:-1]} the {r.choice(ADJS)} {b}?"
    if kind == 3:
        return (f"{r.randint(2, 99)} {a}s were counted at the {r.choice(PLACES)}, "
                f"{r.choice(('more', 'fewer'))} than last year.")
    return f"the {a} is {r.choice(ADJS)} but the {b} is {r.choice(ADJS)}."


# ------------------------------------------------------------------------------------------------------- corpus

def is_heldout(text: str, permille: int = HELDOUT_PERMILLE) -> bool:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % 1000 < permille


def label_group(label: str) -> str:
    """'state/compact/CartPole-v1' -> 'compact'; 'task/babyai/BabyAI-GoToLocal-v0' -> 'babyai'; 'mission' ->
    'mission'; 'general' -> 'general'.
    """
    parts = label.split("/")
    return parts[1] if parts[0] in ("state", "task") else parts[0]


def texts_hash(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\n")
    return h.hexdigest()


def generate(n_states_per_env_format: int, seed: int, n_missions: int | None = None,
             n_general: int | None = None, envs: list[str] | None = None,
             task_envs: list[str] | None = None) -> list[tuple[str, str]]:
    """All (text, label) pairs in a deterministic order, deduplicated by text (first label wins). ``task_envs``
    (default: every registered BabyAI env) give ``n_states_per_env_format`` task texts each.
    """
    from bitrl_ros.envs import get_spec, list_envs, NUMERIC_FAMILIES
    from bitrl_ros.serialize import FORMATS, get_serializer

    n = n_states_per_env_format
    env_ids = list(envs) if envs is not None else list_envs(NUMERIC_FAMILIES)
    task_ids = list(task_envs) if task_envs is not None else list_envs(("babyai",))
    n_missions = max(1, n * len(env_ids) // 2) if n_missions is None else n_missions
    n_general = max(1, n * len(env_ids) // 4) if n_general is None else n_general
    seen: set[str] = set()
    out: list[tuple[str, str]] = []

    def add(text: str, label: str):
        if text not in seen:
            seen.add(text)
            out.append((text, label))

    for i, env_id in enumerate(env_ids):
        # Sample more states than needed: the compact/structured formats of nearby states often coincide.
        states = env_states(env_id, 2 * n, seed * 1000 + i * 17)
        for fmt in FORMATS:
            ser = get_serializer(env_id, fmt)
            kept = 0
            for row in states:
                text = ser(row)
                if text not in seen:
                    add(text, f"state/{fmt}/{env_id}")
                    kept += 1
                    if kept >= n:
                        break
    for i, env_id in enumerate(task_ids):
        for text in task_texts(env_id, n, seed * 1000 + 500 + i * 17):
            add(text, f"task/{get_spec(env_id).family}/{env_id}")
    for source, make, target in (("mission", mission_text, n_missions), ("general", general_text, n_general)):
        r = random.Random(f"{source}-{seed}")
        got = 0
        for _ in range(target * 4):  # templates can run out of distinct texts; stop trying eventually
            before = len(out)
            add(make(r), source)
            got += len(out) - before
            if got >= target:
                break
    return out


def build_corpus(n_states_per_env_format: int = 2000, seed: int = 0, cache_dir: str | Path | None = DEFAULT_CACHE_DIR,
                 heldout_permille: int = HELDOUT_PERMILLE, envs: list[str] | None = None,
                 n_missions: int | None = None, n_general: int | None = None, task_envs: list[str] | None = None):
    """-> (train_texts, heldout_texts, meta).

    meta: ``train_labels`` / ``heldout_labels`` (parallel to the texts), ``counts`` per label, ``hash`` (sha256 of
    both splits, checked when a distillation resumes), the parameters, and ``cache`` (the JSON file, if any).
    """
    params = {"version": CORPUS_VERSION, "n_states_per_env_format": n_states_per_env_format, "seed": seed,
              "heldout_permille": heldout_permille, "envs": envs, "n_missions": n_missions, "n_general": n_general,
              "task_envs": task_envs}
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"corpus-{key}.json" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        try:
            data = json.loads(cache.read_text())
            if data.get("params") == params:
                return _split(data["texts"], data["labels"], params, heldout_permille, cache)
        except (json.JSONDecodeError, KeyError, TypeError):
            pass  # a corrupt cache is rebuilt
    pairs = generate(n_states_per_env_format, seed, n_missions=n_missions, n_general=n_general, envs=envs,
                     task_envs=task_envs)
    texts, labels = [t for t, _ in pairs], [lab for _, lab in pairs]
    if cache is not None:
        atomic_write_text(cache, json.dumps({"params": params, "texts": texts, "labels": labels}))
    return _split(texts, labels, params, heldout_permille, cache)


def _split(texts, labels, params, permille, cache):
    train, train_l, held, held_l = [], [], [], []
    for t, lab in zip(texts, labels):
        if is_heldout(t, permille):
            held.append(t)
            held_l.append(lab)
        else:
            train.append(t)
            train_l.append(lab)
    counts: dict[str, int] = {}
    for lab in labels:
        counts[lab] = counts.get(lab, 0) + 1
    meta = {"params": params, "train_labels": train_l, "heldout_labels": held_l, "counts": counts,
            "n_train": len(train), "n_heldout": len(held),
            "hash": hashlib.sha256((texts_hash(train) + texts_hash(held)).encode()).hexdigest(),
            "cache": str(cache) if cache is not None else None}
    return train, held, meta
