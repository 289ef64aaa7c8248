"""The `bitrl` command."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import sys

import yaml

from bitrl_ros import settings
from bitrl_ros.errors import BitrlError


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BitrlError(f"--set expects KEY=VALUE (dotted keys, e.g. ppo.clip_coef=0.2), got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def metric_table(title: str, rows):
    """A two-column (metric, value) rich table: the closing summary of train, run and eval-bag."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in rows:
        table.add_row(k, v)
    return table


def cmd_train(args) -> int:
    from rich.console import Console

    from bitrl_ros.config import load_run_config, load_train_config
    from bitrl_ros.rl.evaluation import SUCCESS_WINDOW
    from bitrl_ros.train import Trainer

    overrides = _parse_set(args.set)
    for key, value in (("env", args.env), ("backbone", args.backbone), ("total_steps", args.steps),
                       ("seed", args.seed), ("torch_threads", args.threads)):
        if value is not None:
            overrides[key] = value
    if args.resume:
        if args.config is not None:
            raise BitrlError("--resume reads the run's own config.json; leave out --config")
        cfg = load_run_config(args.run_dir, overrides)  # the run's own settings; flags must agree with them
    else:
        cfg = load_train_config(args.config, overrides)
    console = Console()
    critic = f" critic_backbone={cfg.critic_backbone}" if cfg.critic_backbone else ""
    console.print(f"[bold]bitrl train[/] env={cfg.env} backbone={cfg.backbone}{critic} steps={cfg.total_steps} "
                  f"seed={cfg.seed} threads={cfg.torch_threads}")
    trainer = Trainer(cfg, run_dir=args.run_dir, resume=args.resume, progress=not args.no_progress,
                      log=console.print)
    result = trainer.run()
    rows = [
        ("env steps", f"{result.global_step}"),
        ("episodes", f"{result.episodes}"),
        ("mean return (last 20 episodes)", f"{result.mean_return:.4g}"),
        ("first step with mean return >= solved", str(result.first_solved_step)),
        ("deterministic eval return", "-" if result.eval_mean_return is None else f"{result.eval_mean_return:.1f}"),
    ]
    if result.success_rate is not None:
        rows.append((f"success rate (last {SUCCESS_WINDOW} episodes)", f"{result.success_rate:.0%}"))
    if result.eval_success_rate is not None:
        rows.append(("deterministic eval success rate", f"{result.eval_success_rate:.0%}"))
    rows += [
        ("env steps/s", f"{result.steps_per_s:.0f}"),
        ("PPO updates undone", str(result.failed_updates)),
        ("glitches (observations / rewards)", f"{result.glitched_observations} / {result.glitched_rewards}"),
        ("embedding cache hit rate", "-" if result.cache_hit_rate is None else f"{result.cache_hit_rate:.1%}"),
        ("mean tokens per state", f"{result.mean_tokens:.1f}"),
        ("wall time", f"{result.wall_s:.0f} s"),
        ("run folder", str(result.run_dir)),
    ]
    console.print(metric_table(f"{cfg.env} / {cfg.backbone} / seed {cfg.seed}", rows))
    return 0


def cmd_run(args) -> int:
    from bitrl_ros.memory import limit_malloc_arenas

    limit_malloc_arenas()  # before the graph's threads start (bitrl_ros/memory.py says why)
    from rich.console import Console

    from bitrl_ros.interrupt import interrupt_once_on_signals
    from bitrl_ros.runner import RunOptions, run, summary_rows

    # SIGINT and SIGTERM (Ctrl-C, docker stop, a supervisor) end the run the same way: the nodes flush, the summary
    # prints, exit code 0, as every node run on its own does.
    interrupt_once_on_signals()
    console = Console()
    opts = RunOptions(config=args.config, steps=args.steps, mode=args.mode, overrides=_parse_set(args.set),
                      duration=args.duration, progress=not args.no_progress, namespace=args.namespace,
                      executor=args.executor, threads=args.threads, log=console.print,
                      record=args.record, record_storage=args.record_storage)
    try:
        summary = run(opts)
    except KeyboardInterrupt:  # before the graph was spinning: nothing ran, nothing to summarize
        console.print("bitrl run: interrupted before the graph started")
        return 0
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    console.print(metric_table(f"bitrl run: {summary['env']} / {summary['mode']}", summary_rows(summary)))
    return 0


def cmd_replay(args) -> int:
    from rich.console import Console

    from bitrl_ros.runner import ReplayOptions, replay

    console = Console()
    rate = 0.0 if args.step else (1.0 if args.rate is None else args.rate)
    summary = replay(ReplayOptions(bag=args.bag, config=args.config, rate=rate, mapping=args.mapping,
                                   steps=args.steps, overrides=_parse_set(args.set), namespace=args.namespace,
                                   log=console.print))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    for k in ("bag", "replayed", "messages_per_s", "actions_received", "action_timeouts", "wall_s"):
        console.print(f"{k}: {summary[k]}")
    return 0


def cmd_bag_reindex(args) -> int:
    from bitrl_ros.bag.recorder import reindex

    info = reindex(args.path)
    print(f"{args.path}: {'repaired ' if info['repaired'] else ''}{info['storage']}, {info['messages']} messages; "
          f"metadata.yaml rebuilt")
    for topic, n in info["topics"].items():
        print(f"  {topic}: {n}")
    return 0


def cmd_bag_info(args) -> int:
    from bitrl_ros.bag.reader import open_bag

    with open_bag(args.path) as bag:
        print(f"{args.path}: {bag.message_count} messages")
        for topic, (msgtype, n) in bag.topics.items():
            print(f"  {topic}  {msgtype}  {n}")
    return 0


def cmd_list(args) -> int:
    from bitrl_ros.backbone import available_backbones
    from bitrl_ros.envs import list_envs

    print("envs:      " + ", ".join(list_envs()))
    print("backbones: " + ", ".join(available_backbones()))
    return 0


def cmd_bench_edge(args) -> int:
    import time
    from pathlib import Path

    from rich.console import Console

    from bitrl_ros.bench_edge import EdgeSettings, parse_variant, print_table, run_edge

    for spec in args.variants:
        try:
            parse_variant(spec)
        except ValueError as exc:
            raise BitrlError(str(exc)) from None
    if min(args.steps, args.states, args.episodes, args.threads) < 1:
        raise BitrlError("--steps, --states, --episodes and --threads must be >= 1")
    console = Console(width=None if sys.stdout.isatty() else 150)
    out = Path(args.out) if args.out else Path("runs") / f"bench-edge-{time.strftime('%Y%m%d-%H%M%S')}"
    settings = EdgeSettings(env=args.env, states=args.states, steps=args.steps, episodes=args.episodes,
                            threads=args.threads, seed=args.seed)
    console.print(f"[bold]bitrl bench edge[/] env={settings.env} states={settings.states} steps={settings.steps} "
                  f"episodes={settings.episodes} threads={settings.threads}")
    report = run_edge(args.variants, settings, out, log=console.print)
    print_table(report, console)
    console.print(f"wrote {out / 'edge.json'} and {out / 'edge.png'}")
    return 0 if report["variants"] else 1


def cmd_eval_bag(args) -> int:
    import time
    from pathlib import Path

    from rich.console import Console

    from bitrl_ros.bag.ope import evaluate_bag, plot_report, summary_rows, write_json

    if args.bootstrap < 0:
        raise BitrlError("--bootstrap must be >= 0")
    if not 0 < args.gamma <= 1:
        raise BitrlError(f"--gamma must be in (0, 1], got {args.gamma}")
    console = Console(width=None if sys.stdout.isatty() else 150)
    out = Path(args.out) if args.out else Path("runs") / f"eval-bag-{time.strftime('%Y%m%d-%H%M%S')}"
    report = evaluate_bag(args.bag, args.checkpoint, gamma=args.gamma, bootstrap=args.bootstrap,
                          backbone=args.backbone, seed=args.seed, tolerance=args.tolerance)
    console.print(metric_table(f"bitrl eval-bag: {report['bag']} / {report['checkpoint']}", summary_rows(report)))
    write_json(report, out / "ope.json")
    plot_report(report, out / "ope.png")
    console.print(f"wrote {out / 'ope.json'} and {out / 'ope.png'}")
    return 0


def cmd_fit_scales(args) -> int:
    from bitrl_ros.serialize.field_scales import write_field_scales

    path = write_field_scales(args.envs or None, steps=args.steps, seed=args.seed)
    print(f"wrote {path}")
    return 0


def cmd_import_model(args) -> int:
    from bitrl_ros.backbone.importers import import_to_model_dir

    out, info = import_to_model_dir(args.src, args.dst)
    print(f"imported {args.src} ({info['format']} weights, linear_class={info['linear_class']}) -> {out}")
    return 0


def cmd_fetch_model(args) -> int:
    from bitrl_ros.backbone.importers import fetch_model

    if _USER_HF_OFFLINE:
        raise BitrlError("no network access to the Hugging Face hub: HF_HUB_OFFLINE is set in the environment")
    path = fetch_model(args.name, args.dest, timeout=args.timeout)
    print(f"downloaded {args.name} -> {path}; convert it with `bitrl import-model {path} DST`")
    return 0


def cmd_distill(args) -> int:
    import torch

    from bitrl_ros.backbone.distill import distill

    if min(args.steps, args.batch) < 1:
        raise BitrlError("--steps and --batch must be >= 1")
    torch.set_num_threads(args.threads)
    distill(args.out, steps=args.steps, batch_size=args.batch, lr=args.lr, seed=args.seed, resume=args.resume,
            progress=not args.no_progress, time_budget_s=args.time_budget,
            n_states_per_env_format=args.states_per_env_format, max_tokens=args.max_tokens,
            eval_every=args.eval_every, ckpt_every=args.ckpt_every,
            ckpt_dir=args.ckpt_dir or Path("runs") / "distill" / Path(args.out).resolve().name / "checkpoints")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bitrl", description="RL on a frozen ternary language-model backbone.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train the policy/value heads online with PPO in a gymnasium env")
    train.add_argument("--config", default=None, help="YAML file (default: config/train.yaml)")
    train.add_argument("--env", default=None)
    train.add_argument("--backbone", default=None,
                       help="minilm-bitnet-distilled (default) | minilm-ternary-ptq | minilm-ternary-random | "
                            "minilm-fp32 | minilm-fp16 | minilm-int8 | minilm-int4-g32 | minilm-nvfp4 | mlp | "
                            "a model dir")
    train.add_argument("--steps", type=int, default=None, help="total environment steps")
    train.add_argument("--seed", type=int, default=None)
    train.add_argument("--threads", type=int, default=None, help="torch threads (default 1)")
    train.add_argument("--run-dir", default=None, help="run folder (default: runs/<env>-<backbone>-s<seed>-<time>)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --run-dir from its checkpoint, with the run's own config.json "
                            "(--steps may extend it, --threads and --set eval_episodes / features.engine / "
                            "features.cache_mb may change; other flags must agree with the run)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set ppo.clip_coef=0.2 --set features.readout=fields")
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(func=cmd_train)

    run = sub.add_parser("run", help="run the ROS graph (bridge + agent nodes) in one process from a ROS 2 "
                                     "parameter file, as `ros2 launch bitrl_ros sim.launch.py` would")
    run.add_argument("--config", default="config/agent.yaml", help="ROS 2 parameter file (default: config/agent.yaml)")
    run.add_argument("--steps", type=int, default=None, help="stop after this many env steps (sim_bridge.max_steps)")
    run.add_argument("--mode", choices=("lockstep", "realtime"), default=None, help="override every node's mode")
    run.add_argument("--duration", type=float, default=None, help="stop after this many wall seconds")
    run.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                     help="override a parameter, e.g. --set policy_value.ppo.num_steps=512; without a node name "
                          "(--set env=Acrobot-v1) it applies to every node that has the parameter")
    run.add_argument("--executor", choices=settings.EXECUTORS, default="events",
                     help="events: rclpy EventsExecutor (default, measured fastest); multi: MultiThreadedExecutor; "
                          "single: SingleThreadedExecutor")
    run.add_argument("--threads", type=int, default=None, help="MultiThreadedExecutor threads (default: cores, >= 2)")
    run.add_argument("--namespace", default=None, help="ROS namespace for every node (topics are relative)")
    run.add_argument("--json", default=None, metavar="PATH", help="also write the summary as JSON")
    run.add_argument("--record", default=None, metavar="PATH",
                     help="record the graph's topics to a new rosbag2 bag directory (adds the bag_recorder node)")
    run.add_argument("--record-storage", choices=("mcap", "sqlite3"), default=None,
                     help="storage of --record (default: bag_recorder.storage of the config, mcap)")
    run.add_argument("--no-progress", action="store_true")
    run.set_defaults(func=cmd_run)

    rp = sub.add_parser("replay", help="replay a bag's observations into the agent in evaluation mode (learn=false)")
    rp.add_argument("bag", help="rosbag2 directory (or .mcap/.db3 file)")
    pace = rp.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, default=None, help="1.0 recorded rate (default), >1 faster")
    pace.add_argument("--step", action="store_true", help="stepped: next observation when the action arrives")
    rp.add_argument("--mapping", default="", help="YAML topic mapping for a foreign bag")
    rp.add_argument("--config", default="config/agent.yaml", help="ROS 2 parameter file (default: config/agent.yaml)")
    rp.add_argument("--steps", type=int, default=None, help="replay at most this many observations")
    rp.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE", help="override a parameter")
    rp.add_argument("--namespace", default=None)
    rp.add_argument("--json", default=None, metavar="PATH", help="also write the summary as JSON")
    rp.set_defaults(func=cmd_replay)

    bag = sub.add_parser("bag", help="bag utilities")
    bag_sub = bag.add_subparsers(dest="bag_command", required=True)
    ri = bag_sub.add_parser("reindex", help="repair a bag whose recorder was killed: finish the storage file and "
                                            "rebuild metadata.yaml from it")
    ri.add_argument("path")
    ri.set_defaults(func=cmd_bag_reindex)
    info = bag_sub.add_parser("info", help="topics, types and message counts of a bag")
    info.add_argument("path")
    info.set_defaults(func=cmd_bag_info)

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    edge = bench_sub.add_parser("edge", help="the paper's Table III for each backbone variant: peak memory, "
                                             "latency p50/p99, steps/s, energy per episode, temperature")
    from bitrl_ros.bench_edge import DEFAULT_VARIANTS
    edge.add_argument("--env", default="CartPole-v1")
    edge.add_argument("--steps", type=int, default=4096, help="env steps of the short training run (steps/s); "
                      "rounded up to whole PPO rollouts (2048 with config/train.yaml)")
    edge.add_argument("--states", type=int, default=300, help="env states encoded one by one (latency)")
    edge.add_argument("--episodes", type=int, default=5, help="greedy episodes (mean episode length, energy)")
    edge.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), metavar="BACKBONE:ENGINE",
                      help=f"default: {' '.join(DEFAULT_VARIANTS)}")
    edge.add_argument("--threads", type=int, default=1)
    edge.add_argument("--seed", type=int, default=0)
    edge.add_argument("--out", default=None, help="output folder (default: runs/bench-edge-<time>)")
    edge.set_defaults(func=cmd_bench_edge)

    ev = sub.add_parser("eval-bag", help="offline policy evaluation of a checkpoint on a recorded bag: action "
                                         "agreement, value error, per-decision IS / weighted IS with bootstrap CIs")
    ev.add_argument("bag", help="rosbag2 directory (or .mcap/.db3 file) with observation and action topics")
    ev.add_argument("--checkpoint", required=True, help="checkpoint directory of the policy to evaluate")
    ev.add_argument("--gamma", type=float, default=0.99, help="discount of the returns (default 0.99)")
    ev.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples over episodes (default 1000)")
    ev.add_argument("--backbone", default=None, help="recompute features with this backbone when the recorded "
                    "embeddings do not fit the checkpoint")
    ev.add_argument("--tolerance", type=float, default=0.1, help="continuous actions: agreement tolerance")
    ev.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ev.add_argument("--out", default=None, help="output folder (default: runs/eval-bag-<time>)")
    ev.set_defaults(func=cmd_eval_bag)

    fs = sub.add_parser("fit-scales", help="fit the per-field scales of the `scaled` number scheme from "
                                           "random-policy rollouts (deterministic) into serialize/field_scales.json")
    fs.add_argument("envs", nargs="*", help="env ids (default: every registered env)")
    from bitrl_ros.serialize.field_scales import FIT_SEED, FIT_STEPS
    fs.add_argument("--steps", type=int, default=FIT_STEPS, help=f"rollout states per env (default {FIT_STEPS})")
    fs.add_argument("--seed", type=int, default=FIT_SEED)
    fs.set_defaults(func=cmd_fit_scales)

    im = sub.add_parser("import-model", help="convert a Hugging Face BitNet b1.58 checkpoint (2B4T packed or "
                                             "-bf16 master weights) into a bitrl model directory")
    im.add_argument("src", help="checkpoint directory: config.json, model.safetensors (or sharded), tokenizer.json")
    im.add_argument("dst", help="output model directory")
    im.set_defaults(func=cmd_import_model)

    fm = sub.add_parser("fetch-model", help="download a BitNet checkpoint from the Hugging Face hub (needs internet)")
    fm.add_argument("name", help="repo id, e.g. microsoft/bitnet-b1.58-2B-4T or microsoft/bitnet-b1.58-2B-4T-bf16")
    fm.add_argument("--dest", default=None, help="target directory (default: models/hf/<owner>--<name>)")
    fm.add_argument("--timeout", type=float, default=3.0, help="connect timeout in seconds (default 3)")
    fm.set_defaults(func=cmd_fetch_model)

    dis = sub.add_parser("distill", help="quantization-aware distillation of all-MiniLM-L6-v2 into a BitLinear "
                                         "student (ternary weights, int8 activations), saved in our model format")
    dis.add_argument("--out", default="models/minilm-bitnet-distilled", help="output model directory")
    dis.add_argument("--steps", type=int, default=1000, help="optimizer steps (the LR schedule spans them)")
    dis.add_argument("--time-budget", type=float, default=None, dest="time_budget",
                     help="stop (and still save) after this many seconds of training, summed over resumes")
    dis.add_argument("--batch", type=int, default=32)
    dis.add_argument("--lr", type=float, default=3e-4)
    dis.add_argument("--seed", type=int, default=0)
    dis.add_argument("--states-per-env-format", type=int, default=2000, dest="states_per_env_format",
                     help="corpus size: serialized states per (env, format)")
    dis.add_argument("--max-tokens", type=int, default=64, dest="max_tokens", help="longer texts are truncated")
    dis.add_argument("--eval-every", type=int, default=100, dest="eval_every")
    dis.add_argument("--ckpt-every", type=int, default=200, dest="ckpt_every")
    dis.add_argument("--ckpt-dir", default=None, dest="ckpt_dir",
                     help="training checkpoints (default: runs/distill/<out name>/checkpoints)")
    dis.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    dis.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --ckpt-dir")
    dis.add_argument("--no-progress", action="store_true", dest="no_progress")
    dis.set_defaults(func=cmd_distill)

    lst = sub.add_parser("list", help="list registered envs and backbones")
    lst.set_defaults(func=cmd_list)
    return parser


_USER_HF_OFFLINE = False


def main(argv: list[str] | None = None) -> int:
    global _USER_HF_OFFLINE
    _USER_HF_OFFLINE = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on") \
        and not os.environ.get("_BITRL_HF_OFFLINE_DEFAULTED")
    if "HF_HUB_OFFLINE" not in os.environ:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["_BITRL_HF_OFFLINE_DEFAULTED"] = "1"
    args = build_parser().parse_args(argv)
    if getattr(args, "resume", False) and hasattr(args, "run_dir") and not args.run_dir:
        print("bitrl: error: --resume needs --run-dir", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except BitrlError as exc:
        print(f"bitrl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bitrl: interrupted; the last checkpoint is intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
