"""`bitrl bench edge`: the paper's Table III columns, measured in one run for every backbone variant.

A variant is ``<backbone>:<engine>`` (``minilm-fp32:torch``, ``minilm-ternary-ptq:torch``,
``minilm-ternary-ptq:native``). Each one runs in its own Python subprocess, so its peak memory is its own VmHWM
(read from /proc/self/status at the end of the variant), and measures, in this order:

* **latency per state**: ``--states`` real observations of the env (random actions, seeded) are serialized, then
  encoded one state at a time (tokenize + backbone + pooling) with the embedding cache disabled, so every call runs
  the model; median and p99 in ms (after a few warm-up calls).
* **steps/s**: a short ``bitrl train`` run (the Trainer with ``--steps`` env steps, PPO updates included,
  ``eval_episodes`` 0, the embedding cache enabled as in training): env steps / wall seconds, as `bitrl train`
  reports it. The same backbone object serves both measurements (only its cache is switched), so one model is
  resident.
* **episode length**: ``--episodes`` episodes of the greedy policy (the heads just trained, cache on); their mean
  length in steps, and their own steps/s (``greedy_steps_per_s``, reported alongside).
* **energy per episode**: ``energy_J = power_W x mean_episode_steps / steps_per_s``, i.e. the average power drawn
  over the variant's run times the duration of a mean episode at the measured training throughput. ``power_W``
  comes from bitrl_ros.telemetry.power (sampled every 0.5 s into an EnergyMeter over the whole variant): measured
  when the machine has a source (INA sensor, Pi 5 PMIC, RAPL; label ``measured:<source>``), else the
  CPU-utilisation board estimate (label ``estimated``); a value is never written without its label.
* **temperature**: the CPU temperature at the end of the variant (bitrl_ros.telemetry.thermal), or
  ``"unavailable"`` (``temperature_source`` says why).

Variants that cannot run (the native engine not built; FP32 on the native engine, which runs ternary models only)
are skipped with the reason. Results: a rich table, ``<out>/edge.json`` and ``<out>/edge.png``.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
import json
import os
from pathlib import Path
import subprocess
import sys
import tempfile
import time

import numpy as np

from bitrl_ros import settings
from bitrl_ros.telemetry.board import cpu_model

DEFAULT_VARIANTS = ("minilm-fp32:torch", "minilm-ternary-ptq:torch", "minilm-ternary-ptq:native")
ENGINES = tuple(e for e in settings.ENGINES if e != "auto")  # a variant names a concrete engine
TERNARY_BACKBONES = ("minilm-bitnet-distilled", "minilm-ternary-ptq")
COLUMNS = ("backbone", "engine", "peak_memory_mb", "latency_p50_ms", "latency_p99_ms", "steps_per_s",
           "energy_j_per_episode", "energy_label", "temperature_c")


@dataclass
class EdgeSettings:
    env: str = "CartPole-v1"
    states: int = 300          # latency samples (real env states, one encode call each)
    steps: int = 4096          # env steps of the short training run (steps/s)
    episodes: int = 5          # greedy episodes (mean episode length)
    threads: int = 1
    seed: int = 0
    warmup: int = 5
    ppo: dict = field(default_factory=dict)  # PPO overrides (tests use tiny rollouts)


# -- variants ---------------------------------------------------------------------------------------------------

def parse_variant(spec: str) -> tuple[str, str]:
    backbone, sep, engine = spec.partition(":")
    engine = engine if sep else "torch"
    if not backbone or engine not in ENGINES:
        raise ValueError(f"variant {spec!r}: expected <backbone>:<engine> with engine one of {', '.join(ENGINES)}")
    return backbone, engine


def unavailable_reason(backbone: str, engine: str) -> str | None:
    """Why a variant cannot run here, or None."""
    if engine == "native":
        if backbone == "minilm-fp32":
            return "not applicable: the native engine runs ternary models only"
        from bitrl_ros.backbone.engines.native import native_available

        ok, why = native_available()
        if not ok:
            return f"native engine unavailable: {why}"
    if backbone == "mlp":
        return "not applicable: mlp has no backbone to benchmark"
    return None


# -- probes -----------------------------------------------------------------------------------------------------


class _PowerProbe:
    """Average board power over the variant's run, from bitrl_ros.telemetry.power: the best source the machine
    has (`open_power_source("auto")`: INA sensor, Pi 5 PMIC, RAPL; else the CPU-utilisation estimate), sampled
    every `period_s` on a daemon thread into an EnergyMeter (one source only, never mixed).
    """

    def __init__(self, period_s: float = 0.5):
        import threading

        from bitrl_ros.telemetry.power import EnergyMeter, open_power_source

        self.source = open_power_source("auto")
        self.source.read()  # prime: RAPL needs a first counter value, the estimate a first /proc/stat sample
        self.meter = EnergyMeter(max_gap_s=10 * period_s)
        self._stop = threading.Event()
        self.meter.add(self.source.read())
        self._thread = threading.Thread(target=self._loop, args=(period_s,), daemon=True)
        self._thread.start()

    def _loop(self, period_s: float) -> None:
        while not self._stop.wait(period_s):
            self.meter.add(self.source.read())

    def finish(self) -> tuple[float, str]:
        """(average watts, label: "measured:<source>" | "estimated")."""
        self._stop.set()
        self._thread.join()
        self.meter.add(self.source.read())
        ep = self.meter.end_episode()
        if ep.source is not None and ep.duration_s > 0 and np.isfinite(ep.mean_w):
            return float(ep.mean_w), ep.source
        from bitrl_ros.telemetry.power import EstimatedPower
        from bitrl_ros.telemetry.board import detect_board

        # the source gave no usable reading over the run (e.g. RAPL lost its permission): the estimate, labelled
        return float(EstimatedPower(detect_board()).read().watts or float("nan")), "estimated"


def _get(obj, *names):
    for n in names:
        if isinstance(obj, dict) and n in obj:
            return obj[n]
        if hasattr(obj, n):
            return getattr(obj, n)
    return None


def read_temperature_c() -> tuple[float | None, str]:
    """(CPU temperature in C now, its thermal zone) from bitrl_ros.telemetry.thermal, or (None, why not)."""
    from bitrl_ros.telemetry.thermal import read_thermal

    r = read_thermal()
    return (r.cpu_c, r.zone or "") if r.available else (None, r.error or "unavailable")


# -- one variant ------------------------------------------------------------------------------------------------

def _collect_states(env_id: str, n: int, seed: int) -> np.ndarray:
    from bitrl_ros.envs import make_env

    env = make_env(env_id, seed)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    out = []
    while len(out) < n:
        out.append(np.asarray(obs, dtype=np.float64))
        obs, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            obs, _ = env.reset()
    env.close()
    return np.stack(out)


def measure_variant(backbone_id: str, engine: str, s: EdgeSettings, log=None) -> dict:
    """Measure one variant in this process; peak memory is this process's VmHWM at the end."""
    import torch

    from bitrl_ros.config import load_train_config
    from bitrl_ros.rl.evaluation import evaluate_policy
    from bitrl_ros.telemetry.memory import read_memory_mb
    from bitrl_ros.train import Trainer

    log = log or (lambda *a: None)
    torch.set_num_threads(s.threads)
    power = _PowerProbe()
    states = _collect_states(s.env, s.states + s.warmup, s.seed)
    overrides = {"env": s.env, "backbone": backbone_id, "total_steps": s.steps, "seed": s.seed,
                 "eval_episodes": 0, "torch_threads": s.threads, "features.engine": engine}
    overrides.update({f"ppo.{k}": v for k, v in s.ppo.items()})
    cfg = load_train_config(None, overrides)
    with tempfile.TemporaryDirectory(prefix="bitrl-edge-") as tmp:
        trainer = Trainer(cfg, run_dir=Path(tmp) / "run", progress=False, log=log)
        bb = trainer.encoder.backbone
        # Latency: one state per call through the whole feature pipeline (serialize, tokenize, backbone,
        # readout), cache off so that every call runs the model.
        encoder = trainer.encoder
        budget, bb.cache_budget = bb.cache_budget, 0
        for state in states[:s.warmup]:
            encoder(state[None])
        lat = []
        for state in states[s.warmup:]:
            t0 = time.perf_counter()
            encoder(state[None])
            lat.append(time.perf_counter() - t0)
        tokens = [len(ids) for ids in encoder.text(states[s.warmup:])[2]]
        bb.cache_budget = budget
        bb.clear_cache()
        # Steps/s: the short training run, cache on.
        result = trainer.run()
        greedy = evaluate_policy(trainer.cfg.env, trainer.encoder, trainer.learner, s.episodes, s.seed + 20_000)
        ep_len, greedy_sps = greedy.mean_length, (greedy.steps_per_s if s.episodes > 0 else float("nan"))
    watts, label = power.finish()
    sps = result.steps_per_s
    energy = watts * ep_len / sps if sps > 0 and np.isfinite(ep_len) else float("nan")
    temp, temp_note = read_temperature_c()
    mem = read_memory_mb()
    lat_ms = np.asarray(lat) * 1e3
    return {
        "variant": f"{backbone_id}:{engine}",
        "backbone": backbone_id,
        "engine": bb.engine_name,
        "peak_memory_mb": mem.get("peak_rss", float("nan")),
        "latency_p50_ms": float(np.median(lat_ms)),
        "latency_p99_ms": float(np.percentile(lat_ms, 99)),
        "steps_per_s": sps,
        "energy_j_per_episode": energy,
        "energy_label": label,
        "temperature_c": "unavailable" if temp is None else round(float(temp), 1),
        "temperature_source": temp_note,
        "power_source": label,
        # the inputs of the derived columns
        "power_w": watts,
        "mean_episode_steps": ep_len,
        "greedy_steps_per_s": greedy_sps,
        "latency_states": len(lat),
        "mean_tokens_per_state": float(np.mean(tokens)),
        "train_steps": result.global_step,
        "train_cache_hit_rate": result.cache_hit_rate,
    }


# -- driver -----------------------------------------------------------------------------------------------------

def _run_child(variant: str, s: EdgeSettings) -> dict:
    """The variant in a fresh Python process (its own peak RSS); raises with the child's stderr on failure."""
    with tempfile.TemporaryDirectory(prefix="bitrl-edge-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "bitrl_ros.bench_edge", "--child", variant, "--settings",
               json.dumps(asdict(s)), "--result", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise RuntimeError(f"variant {variant} failed (exit {proc.returncode}): " + " | ".join(tail))
        return json.loads(out.read_text())


def run_edge(variants, settings: EdgeSettings, out_dir: Path, in_process: bool = False, log=print) -> dict:
    """Measure every variant (each in its own subprocess unless in_process), write edge.json + edge.png."""
    rows, skipped = [], []
    for spec in variants:
        backbone, engine = parse_variant(spec)
        why = unavailable_reason(backbone, engine)
        if why:
            log(f"skip {spec}: {why}")
            skipped.append({"variant": spec, "reason": why})
            continue
        log(f"measuring {spec} ...")
        t0 = time.perf_counter()
        try:
            row = measure_variant(backbone, engine, settings) if in_process else _run_child(spec, settings)
        except Exception as exc:  # one broken variant must not lose the others' numbers
            log(f"skip {spec}: {exc}")
            skipped.append({"variant": spec, "reason": str(exc)})
            continue
        row["wall_s"] = time.perf_counter() - t0
        rows.append(row)
    report = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "settings": asdict(settings),
        "peak_memory_scope": "process (all variants in one process)" if in_process else "variant subprocess",
        "energy_formula": "energy_j_per_episode = power_w * mean_episode_steps / steps_per_s",
        "power_estimate": _estimate_note(),
        "columns": list(COLUMNS),
        "variants": rows,
        "skipped": skipped,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "edge.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    plot_edge(rows, out_dir / "edge.png")
    return report


def _estimate_note() -> str:
    from bitrl_ros.telemetry.board import detect_board

    b = detect_board()
    return (f"estimated = the {b.kind} board power model ({b.model}: {b.power_model.idle_w} W idle .. "
            f"{b.power_model.max_w} W all cores busy, linear in system CPU utilisation over the variant's run; "
            "rough assumptions); used only when no power source is measurable")


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(type(o))


def _fmt(v, spec: str) -> str:
    if isinstance(v, str):
        return v
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return format(v, spec)


def print_table(report: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    s = report["settings"]
    table = Table(title=f"bitrl bench edge: {s['env']}, {report['cpu']}, {s['threads']} thread(s)")
    for name, justify in (("backbone", "left"), ("engine", "left"), ("peak memory MB", "right"),
                          ("latency p50 ms", "right"), ("latency p99 ms", "right"), ("steps/s", "right"),
                          ("energy J/episode", "right"), ("temperature C", "right")):
        table.add_column(name, justify=justify)
    for r in report["variants"]:
        table.add_row(r["backbone"], r["engine"], _fmt(r["peak_memory_mb"], ".0f"),
                      _fmt(r["latency_p50_ms"], ".2f"), _fmt(r["latency_p99_ms"], ".2f"),
                      _fmt(r["steps_per_s"], ".0f"),
                      f"{_fmt(r['energy_j_per_episode'], '.2f')} ({r['energy_label']})",
                      _fmt(r["temperature_c"], ".1f"))
    console.print(table)
    for sk in report["skipped"]:
        console.print(f"skipped {sk['variant']}: {sk['reason']}")
    console.print(f"energy: {report['energy_formula']}")


def plot_edge(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    names = [f"{r['backbone']}\n{r['engine']}" for r in rows]
    x = np.arange(len(rows))
    p50 = [r["latency_p50_ms"] for r in rows]
    p99 = [r["latency_p99_ms"] for r in rows]
    axes[0].bar(x - 0.2, p50, 0.4, label="p50")
    axes[0].bar(x + 0.2, p99, 0.4, label="p99")
    axes[0].set_ylabel("ms per state")
    axes[0].set_title("encode latency")
    axes[0].legend()
    axes[1].bar(x, [r["peak_memory_mb"] for r in rows], color="tab:green")
    axes[1].set_ylabel("MB")
    axes[1].set_title("peak memory (VmHWM)")
    axes[2].bar(x, [r["energy_j_per_episode"] for r in rows], color="tab:red")
    axes[2].set_ylabel("J / episode")
    labels = sorted({r["energy_label"] for r in rows})
    axes[2].set_title("energy per episode (" + ", ".join(labels) + ")")
    for ax in axes:
        ax.set_xticks(x)
        ax.set_xticklabels(names, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _child_main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", required=True)
    ap.add_argument("--settings", required=True)
    ap.add_argument("--result", required=True)
    a = ap.parse_args(argv)
    backbone, engine = parse_variant(a.child)
    row = measure_variant(backbone, engine, EdgeSettings(**json.loads(a.settings)))
    Path(a.result).write_text(json.dumps(row, default=_json_default))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())
