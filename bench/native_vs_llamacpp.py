"""BitNet decoder forward latency: native engine vs torch FP32 vs torch ternary vs llama.cpp TQ2_0, side by side.

    make bench-setup                    # once: llama-cpp-python (built from source) + gguf, requirements-bench.txt
    .venv/bin/python bench/native_vs_llamacpp.py [--out bench/results/native_vs_llamacpp.json] [--budget 4]

Part 1: decoder shapes whose widths are multiples of 256 (TQ2_0 blocks are 256 weights), vocab 1024, random
ternary weights (the same codes and scales in every engine): per-forward latency of a whole 1- or 30-token
sequence (no KV cache: every call starts from an empty context), 1 and 2 threads. The engines are interleaved call
by call so that load on the machine hits them alike; medians and p90 are reported. Interleaving also means each
call finds the caches holding the previous engine's weights (cold cache: at 1 token a forward is a GEMV streaming
its weights from DRAM); at 1 thread, native and llama.cpp are also timed each in its own block of consecutive calls
(warm cache: models under the 32 MiB L3 stay there), reported as *_warm_ms_p50.

  native         bitrl_ros' C++ engine (packed 2-bit weights, int8 activations), built straight from the codes
  torch_fp32     BitNetDecoder(DecoderConfig(linear="fp")) holding the dequantized weights (q * scale)
  torch_ternary  BitNetDecoder as is (frozen BitLinears: fake-quant int8 activations, fp32 matmuls)
  llamacpp_tq2_0 llama-cpp-python on a GGUF ("bitnet" architecture, TQ2_0 linears, F16 token embedding) written
                 here with the gguf package; embedding=True, pooling MEAN, so every token runs through every layer
                 as in the native engine. llama.cpp's BitNet graph always computes the LM head (tied to
                 token_embd) on all output tokens, and in embedding mode all tokens are outputs: its time includes
                 vocab x hidden F16 MACs per token that the other engines skip ("lm_head_mac_share" below).
                 llama.cpp's BitNet FFN uses SiLU, not BitNet b1.58's squared ReLU, so its outputs differ: this is a
                 speed comparison only.

Part 2: the full microsoft/bitnet-b1.58-2B-4T shape (30 layers, vocab 128256) with random ternary weights, native
engine only, in a fresh subprocess (so its VmHWM is the model's): weight bytes, bits per ternary weight, peak RSS,
latency of 1- and 30-token states. The model is built layer by layer from random int8 codes through the bindings;
no fp32 torch model is ever materialized.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import subprocess
import sys
import tempfile
import time

import numpy as np

from bitrl_ros.telemetry.board import cpu_model

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 1024
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GGUF_LINEAR = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
               "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}

SHAPES = {
    "d512_L8": {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8, "num_attention_heads": 8,
                "num_key_value_heads": 2},
    "d1024_L8": {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 8, "num_attention_heads": 16,
                 "num_key_value_heads": 4},
    "2b4t_layer_L1": {"hidden_size": 2560, "intermediate_size": 6912, "num_hidden_layers": 1,
                      "num_attention_heads": 20, "num_key_value_heads": 5},
}
FULL_2B4T = {"vocab_size": 128256, "hidden_size": 2560, "intermediate_size": 6912, "num_hidden_layers": 30,
             "num_attention_heads": 20, "num_key_value_heads": 5}
ROPE_THETA = 500000.0
RMS_EPS = 1e-5
MAX_POS = 128


# ----------------------------------------------------------------------------------------------------- helpers


def proc_status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return -1


def linear_shapes(c: dict) -> dict:
    H, FF = c["hidden_size"], c["intermediate_size"]
    KV = c["num_key_value_heads"] * (H // c["num_attention_heads"])
    return {"q_proj": (H, H), "k_proj": (KV, H), "v_proj": (KV, H), "o_proj": (H, H),
            "gate_proj": (FF, H), "up_proj": (FF, H), "down_proj": (H, FF)}


def random_layer(rng: np.random.Generator, c: dict) -> dict:
    """Ternary codes int8 [out, in] in {-1, 0, 1} and a scale keeping activations O(1), per linear."""
    out = {}
    for name, (o, i) in linear_shapes(c).items():
        out[name] = (rng.integers(-1, 2, size=(o, i), dtype=np.int8), float(1.0 / np.sqrt(i * 2.0 / 3.0)))
    return out


def random_weights(c: dict, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"embed": rng.standard_normal((c["vocab_size"], c["hidden_size"]), dtype=np.float32),
            "layers": [random_layer(rng, c) for _ in range(c["num_hidden_layers"])]}


def native_config(nat, c: dict):
    cfg = nat.BitNetConfig()
    cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size = c["vocab_size"], c["hidden_size"], c["intermediate_size"]
    cfg.num_layers, cfg.num_heads = c["num_hidden_layers"], c["num_attention_heads"]
    cfg.num_kv_heads, cfg.rms_norm_eps, cfg.rope_theta, cfg.max_position = (
        c["num_key_value_heads"], RMS_EPS, ROPE_THETA, MAX_POS)
    return cfg


def set_native_layer(m, i: int, c: dict, layer: dict) -> None:
    H, FF = c["hidden_size"], c["intermediate_size"]
    for name in ("input_layernorm", "post_attention_layernorm", "attn_sub_norm"):
        m.set_tensor(name, i, np.ones(H, np.float32))
    m.set_tensor("ffn_sub_norm", i, np.ones(FF, np.float32))
    for name, (q, s) in layer.items():
        m.set_linear(name, i, q, s, None)


def build_native(w: dict, c: dict, threads: int = 1):
    from bitrl_ros.backbone.engines.native import _native as nat
    m = nat.BitNetModel(native_config(nat, c), threads)
    m.set_tensor("embed_tokens", -1, w["embed"])
    m.set_tensor("norm", -1, np.ones(c["hidden_size"], np.float32))
    for i, layer in enumerate(w["layers"]):
        set_native_layer(m, i, c, layer)
    m.check_ready()
    return m


def build_torch(w: dict, c: dict, linear: str):
    import torch
    from bitrl_ros.backbone.bitnet import BitNetDecoder, DecoderConfig
    cfg = DecoderConfig(**c, rms_norm_eps=RMS_EPS, rope_theta=ROPE_THETA, max_position_embeddings=MAX_POS,
                        linear=linear)
    model = BitNetDecoder(cfg).eval()
    with torch.no_grad():
        model.embed_tokens.weight.copy_(torch.from_numpy(w["embed"]))
        for layer, lw in zip(model.layers, w["layers"]):
            for name, (q, s) in lw.items():
                lin = getattr(layer.self_attn if name.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else layer.mlp,
                              name)
                qt = torch.from_numpy(q)
                if linear == "bitlinear":
                    lin.set_ternary(qt, torch.tensor(s))
                else:
                    lin.weight.copy_(qt.float() * s)
    return model


# ------------------------------------------------------------------------------------------------ GGUF writer
def write_gguf(path: Path, w: dict, c: dict) -> dict:
    """A llama.cpp "bitnet" GGUF of the same shapes: TQ2_0 linears (ternary codes * scale, so each 256-block's
    scale is the tensor scale and the codes round-trip exactly), F16 token embedding (tied LM head), F32 norms,
    and a dummy 1024-token SentencePiece ("llama") vocabulary so that llama.cpp loads it.
    """
    import gguf
    from gguf.quants import quantize
    H, FF = c["hidden_size"], c["intermediate_size"]
    wr = gguf.GGUFWriter(str(path), "bitnet")
    wr.add_name("bitrl-random-bitnet")
    wr.add_context_length(4096)  # only metadata; avoids a "context overflow" warning
    wr.add_embedding_length(H)
    wr.add_block_count(c["num_hidden_layers"])
    wr.add_feed_forward_length(FF)
    wr.add_head_count(c["num_attention_heads"])
    wr.add_head_count_kv(c["num_key_value_heads"])
    wr.add_rope_dimension_count(H // c["num_attention_heads"])
    wr.add_rope_freq_base(ROPE_THETA)
    wr.add_layer_norm_rms_eps(RMS_EPS)
    wr.add_vocab_size(c["vocab_size"])
    wr.add_file_type(gguf.LlamaFileType.MOSTLY_TQ2_0)
    tokens, scores, types = ["<unk>", "<s>", "</s>"], [0.0, 0.0, 0.0], [
        gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    scores += [0.0] * 256
    types += [gguf.TokenType.BYTE] * 256
    n_rest = c["vocab_size"] - len(tokens)
    tokens += [f"\u2581t{i}" for i in range(n_rest)]
    scores += [-float(i) for i in range(n_rest)]
    types += [gguf.TokenType.NORMAL] * n_rest
    wr.add_tokenizer_model("llama")
    wr.add_token_list(tokens)
    wr.add_token_scores(scores)
    wr.add_token_types(types)
    wr.add_unk_token_id(0)
    wr.add_bos_token_id(1)
    wr.add_eos_token_id(2)
    wr.add_add_bos_token(False)
    wr.add_tensor("token_embd.weight", w["embed"].astype(np.float16))
    wr.add_tensor("output_norm.weight", np.ones(H, np.float32))
    tq_bytes = 0
    for i, layer in enumerate(w["layers"]):
        for name in ("attn_norm", "attn_sub_norm", "ffn_norm"):
            wr.add_tensor(f"blk.{i}.{name}.weight", np.ones(H, np.float32))
        wr.add_tensor(f"blk.{i}.ffn_sub_norm.weight", np.ones(FF, np.float32))
        for name, (q, s) in layer.items():
            data = quantize(q.astype(np.float32) * np.float32(s), gguf.GGMLQuantizationType.TQ2_0)
            tq_bytes += data.nbytes
            wr.add_tensor(f"blk.{i}.{GGUF_LINEAR[name]}.weight", data, raw_dtype=gguf.GGMLQuantizationType.TQ2_0)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    return {"gguf_bytes": path.stat().st_size, "tq2_0_linear_bytes": tq_bytes}


class LlamaCppRunner:
    """One llama.cpp context in embedding mode (pooling MEAN): each call clears the KV cache and decodes all
    tokens of one sequence, all marked as outputs.
    """

    def __init__(self, path: Path, threads: int):
        import llama_cpp
        from llama_cpp._internals import LlamaBatch
        self.lc = llama_cpp
        self.llm = llama_cpp.Llama(model_path=str(path), embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                                   n_ctx=MAX_POS, n_batch=64, n_ubatch=64, n_threads=threads,
                                   n_threads_batch=threads, use_mmap=False, verbose=False)
        self.batch = LlamaBatch(n_tokens=64, embd=0, n_seq_max=1, verbose=False)
        self.n_embd = self.llm.n_embd()

    def set_threads(self, n: int) -> None:
        self.llm._ctx.set_n_threads(n, n)

    def __call__(self, ids: list[int]) -> np.ndarray:
        ctx = self.llm._ctx
        ctx.kv_cache_clear()
        self.batch.reset()
        self.batch.add_sequence(ids, 0, logits_all=True)
        ctx.decode(self.batch)
        ptr = ctx.get_embeddings_seq(0)
        return np.ctypeslib.as_array(ptr, shape=(self.n_embd,))


# ------------------------------------------------------------------------------------------------ measurement
def bench_calls(calls: dict, budget_s: float, min_reps: int = 5, max_reps: int = 200) -> dict:
    """Interleaved timing of zero-argument callables: {name: (p50_ms, p90_ms, reps)}."""
    for f in calls.values():  # warm-up (scratch growth, thread pools, caches)
        for _ in range(2):
            f()
    t0 = time.perf_counter()
    for f in calls.values():
        f()
    one_round = time.perf_counter() - t0
    reps = int(max(min_reps, min(max_reps, budget_s / max(one_round, 1e-6))))
    times = {k: [] for k in calls}
    for _ in range(reps):
        for k, f in calls.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: (float(np.median(v) * 1e3), float(np.percentile(v, 90) * 1e3), reps) for k, v in times.items()}


def macs_per_token(c: dict) -> int:
    return sum(o * i for o, i in linear_shapes(c).values()) * c["num_hidden_layers"]


def run_shapes(args) -> tuple[list, dict]:
    import torch
    from bitrl_ros.backbone.engines.native import native_available
    ok, why = native_available()
    if not ok:
        raise SystemExit(f"native engine unavailable: {why}")
    try:
        import llama_cpp  # noqa: F401
        import gguf  # noqa: F401
        llama_err = None
    except ImportError as e:
        llama_err = f"llama-cpp-python / gguf not installed ({e}): run `make bench-setup`"
    rows, info = [], {"shapes": {}}
    tmp = Path(tempfile.mkdtemp(prefix="bitrl_bench_gguf_"))
    for si, (sname, shape) in enumerate(SHAPES.items()):
        c = dict(shape, vocab_size=VOCAB)
        w = random_weights(c, seed=1000 + si)
        native = build_native(w, c)
        fp32 = build_torch(w, c, "fp")
        tern = build_torch(w, c, "bitlinear")
        ids = np.random.default_rng(7).integers(3, VOCAB, size=30).astype(np.int32)
        # sanity: native == torch ternary up to int8 rounding effects
        with torch.inference_mode():
            ref = tern(torch.from_numpy(ids[None].astype(np.int64)))[0].numpy()
        got = native.forward(ids[None], None, "none")[0]
        sinfo = {"config": c, "ternary_weights": macs_per_token(c), "native_weight_bytes": native.weight_bytes(),
                 "native_vs_torch_ternary_max_abs_diff": float(np.abs(ref - got).max()),
                 "hidden_rms": float(np.sqrt((ref ** 2).mean())),
                 "lm_head_mac_share_in_llamacpp":
                     VOCAB * c["hidden_size"] / (macs_per_token(c) + VOCAB * c["hidden_size"])}
        lcpp, lerr = None, llama_err
        if lerr is None:
            try:
                path = tmp / f"{sname}.gguf"
                sinfo.update(write_gguf(path, w, c))
                lcpp = LlamaCppRunner(path, 1)
                out = lcpp([int(t) for t in ids])
                if not np.all(np.isfinite(out)):
                    raise RuntimeError("llama.cpp returned non-finite embeddings")
            except Exception as e:  # noqa: BLE001 - recorded, the other engines go on
                lerr, lcpp = f"{type(e).__name__}: {e}", None
        sinfo["llamacpp_error"] = lerr
        info["shapes"][sname] = sinfo
        del w
        for threads in args.threads:
            torch.set_num_threads(threads)
            native.threads = threads
            if lcpp is not None:
                lcpp.set_threads(threads)
            for n in args.tokens:
                x = ids[:n]
                xt = torch.from_numpy(x[None].astype(np.int64))
                xn = x[None]
                xl = [int(t) for t in x]

                def t_fp32():
                    with torch.inference_mode():
                        fp32(xt)

                def t_tern():
                    with torch.inference_mode():
                        tern(xt)

                calls = {"native": lambda: native.forward(xn, None, "mean"), "torch_fp32": t_fp32,
                         "torch_ternary": t_tern}
                if lcpp is not None:
                    calls["llamacpp_tq2_0"] = lambda: lcpp(xl)
                res = bench_calls(calls, args.budget)
                row = {"shape": sname, "threads": threads, "tokens": n, "reps": res["native"][2]}
                for k, (p50, p90, _) in res.items():
                    row[f"{k}_ms_p50"], row[f"{k}_ms_p90"] = p50, p90
                if lcpp is None:
                    row["llamacpp_tq2_0_ms_p50"] = None
                    row["llamacpp_error"] = lerr
                row["fp32_over_native"] = row["torch_fp32_ms_p50"] / row["native_ms_p50"]
                row["torch_ternary_over_native"] = row["torch_ternary_ms_p50"] / row["native_ms_p50"]
                row["llamacpp_over_native"] = (row["llamacpp_tq2_0_ms_p50"] / row["native_ms_p50"]
                                               if lcpp is not None else None)
                if threads == 1:
                    # Warm cache: each engine timed in its own consecutive block, so weights that fit the L3
                    # stay there (interleaved, every engine starts from what the others left in the caches).
                    warm = {k: calls[k] for k in ("native", "llamacpp_tq2_0") if k in calls}
                    for k, f in warm.items():
                        row[f"{k}_warm_ms_p50"] = bench_calls({k: f}, args.budget / 2)[k][0]
                    row["llamacpp_over_native_warm"] = (row["llamacpp_tq2_0_warm_ms_p50"] / row["native_warm_ms_p50"]
                                                        if lcpp is not None else None)
                rows.append(row)
                lc = f"{row['llamacpp_tq2_0_ms_p50']:8.3f}" if lcpp is not None else "  failed"
                print(f"{sname:14s} thr {threads} tok {n:2d}: native {row['native_ms_p50']:8.3f} | fp32 "
                      f"{row['torch_fp32_ms_p50']:8.3f} | ternary {row['torch_ternary_ms_p50']:8.3f} | llama.cpp {lc}"
                      f" ms", flush=True)
        native = fp32 = tern = lcpp = None  # free this shape's models before the next one
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    return rows, info


# ------------------------------------------------------------------------------------------- full 2B4T worker
def full_2b4t_worker(args) -> None:
    """Runs in its own process (only numpy + the extension imported): prints one JSON line."""
    from bitrl_ros.backbone.engines.native import _native as nat
    c = FULL_2B4T
    rng = np.random.default_rng(2024)
    t0 = time.perf_counter()
    m = nat.BitNetModel(native_config(nat, c), 1)
    if getattr(args, "embedding", "float32") == "int8":  # int8 rows + per-row scales, handed over in chunks
        for start in range(0, c["vocab_size"], 8192):
            rows = min(8192, c["vocab_size"] - start)
            q = rng.integers(-127, 128, size=(rows, c["hidden_size"]), dtype=np.int8)
            m.set_embedding_int8("embed_tokens", q, rng.uniform(0.005, 0.02, rows).astype(np.float32), start)
        del q
    else:
        embed = rng.standard_normal((c["vocab_size"], c["hidden_size"]), dtype=np.float32)
        m.set_tensor("embed_tokens", -1, embed)
        del embed
    embed_bytes = m.embedding_bytes()
    m.set_tensor("norm", -1, np.ones(c["hidden_size"], np.float32))
    for i in range(c["num_hidden_layers"]):
        set_native_layer(m, i, c, random_layer(rng, c))  # one layer's int8 codes alive at a time
    m.check_ready()
    build_s = time.perf_counter() - t0
    rss_after_build = proc_status_kb("VmRSS")
    ids = rng.integers(0, c["vocab_size"], size=30).astype(np.int32)
    lat = []
    for threads in args.threads:
        m.threads = threads
        for n in args.tokens:
            x = ids[None, :n]
            m.forward(x, None, "mean")  # warm-up (scratch)
            reps = 10 if n == 1 else 4
            ts = []
            for _ in range(reps):
                t = time.perf_counter()
                m.forward(x, None, "mean")
                ts.append(time.perf_counter() - t)
            lat.append({"threads": threads, "tokens": n, "reps": reps, "ms_p50": float(np.median(ts) * 1e3),
                        "ms_min": float(np.min(ts) * 1e3)})
            print(f"# full 2B4T thr {threads} tok {n:2d}: {lat[-1]['ms_p50']:.1f} ms", file=sys.stderr, flush=True)
    n_ternary = macs_per_token(c)
    wb = m.weight_bytes()
    out = {"config": c, "isa": m.isa, "build_s": build_s, "ternary_weights": n_ternary, "packed_ternary_bytes": wb,
           "bits_per_ternary_weight": 8.0 * wb / n_ternary, "embedding": getattr(args, "embedding", "float32"),
           "embedding_bytes": embed_bytes,
           "norm_bytes_fp32": 4 * (c["hidden_size"] * (3 * c["num_hidden_layers"] + 1)
                                   + c["intermediate_size"] * c["num_hidden_layers"]),
           "weight_bytes_total": wb + embed_bytes, "scratch_bytes": m.scratch_bytes(),
           "vmrss_after_build_kb": rss_after_build, "vmrss_end_kb": proc_status_kb("VmRSS"),
           "vmhwm_kb": proc_status_kb("VmHWM"), "latency": lat}
    print(json.dumps(out), flush=True)


def run_full_2b4t(args, embedding: str = "float32") -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--full-2b4t-worker", "--threads",
           *map(str, args.threads), "--tokens", *map(str, args.tokens), "--embedding", embedding]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    sys.stderr.write(p.stderr)
    if p.returncode != 0:
        return {"error": f"worker exited {p.returncode}: {p.stderr.strip()[-2000:]}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ reporting
def fmt(x, spec=".2f", none="-"):
    return none if x is None else format(x, spec)


def markdown(report: dict) -> str:
    lines = [f"CPU: {report['cpu']}, native ISA {report['native_isa']}, load average before {report['load_avg_before']}"
             f" / after {report['load_avg_after']}. Per-forward p50 latency in ms (whole sequence, no KV cache; "
             "engines interleaved call by call, so caches are cold); "
             "random ternary weights, vocab 1024. llama.cpp runs SiLU instead of squared ReLU (speed only) and also "
             "computes its tied F16 LM head on every token.", "",
             "| shape | threads | tokens | native | torch FP32 | torch ternary | llama.cpp TQ2_0 | FP32 / native "
             "| llama.cpp / native |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        lc = fmt(r["llamacpp_tq2_0_ms_p50"], ".3f", "failed (see JSON)")
        lines.append(f"| {r['shape']} | {r['threads']} | {r['tokens']} | {r['native_ms_p50']:.3f} | "
                     f"{r['torch_fp32_ms_p50']:.3f} | {r['torch_ternary_ms_p50']:.3f} | {lc} | "
                     f"{r['fp32_over_native']:.2f}x | {fmt(r['llamacpp_over_native'])}"
                     f"{'x' if r['llamacpp_over_native'] else ''} |")
    warm = [r for r in report["results"] if "native_warm_ms_p50" in r]
    if warm:
        lines += ["", "Warm cache, 1 thread (each engine timed in its own block of consecutive calls; above, the "
                  "engines alternate call by call, so each call starts with the weights evicted by the others):", "",
                  "| shape | tokens | native | llama.cpp TQ2_0 | llama.cpp / native |", "|---|---|---|---|---|"]
        for r in warm:
            lo = r.get("llamacpp_over_native_warm")
            lines.append(f"| {r['shape']} | {r['tokens']} | {r['native_warm_ms_p50']:.3f} | "
                         f"{fmt(r.get('llamacpp_tq2_0_warm_ms_p50'), '.3f', 'failed')} | "
                         f"{fmt(lo)}{'x' if lo else ''} |")
    errs = {k: v["llamacpp_error"] for k, v in report["shapes"].items() if v.get("llamacpp_error")}
    for k, v in errs.items():
        lines.append(f"\nllama.cpp failed on {k}: {v}")
    f = report.get("full_2b4t", {})
    lines.append("")
    if "error" in f:
        lines.append(f"Full 2B4T shape: failed: {f['error']}")
    elif f:
        lat = ", ".join(f"{x['tokens']} tok / {x['threads']} thr {x['ms_p50']:.1f} ms" for x in f["latency"])
        lines += ["| full 2B4T (native, random ternary) | value |", "|---|---|",
                  f"| ternary weights | {f['ternary_weights'] / 1e9:.3f} G |",
                  f"| packed ternary bytes | {f['packed_ternary_bytes'] / 2**20:.1f} MiB |",
                  f"| bits per ternary weight | {f['bits_per_ternary_weight']:.3f} |",
                  f"| embedding table ({f.get('embedding', 'float32')}) | "
                  f"{f.get('embedding_bytes', f.get('embedding_bytes_fp32', 0)) / 2**20:.1f} MiB |",
                  f"| weights total (packed + embedding) | {f['weight_bytes_total'] / 2**20:.1f} MiB |",
                  f"| peak RSS (VmHWM) / RSS after build | {f['vmhwm_kb'] / 2**10:.0f} / "
                  f"{f['vmrss_after_build_kb'] / 2**10:.0f} MiB |",
                  f"| latency p50 | {lat} |"]
    t = report["targets"]
    lines += ["", "| target (1 thread) | measured | target | met |", "|---|---|---|---|"]
    for k, v in t.items():
        lines.append(f"| {k} | {fmt(v['measured'])} | {v['target']} | {v['met']} |")
    return "\n".join(lines)


def targets(rows: list, full: dict) -> dict:
    def worst(key, tokens, shapes=None):
        vals = [r[key] for r in rows if r["threads"] == 1 and r["tokens"] == tokens and r.get(key) is not None
                and (shapes is None or r["shape"] in shapes)]
        return min(vals) if vals else None

    out = {}
    for tok, tgt in ((1, 4.0), (30, 2.5)):
        v = worst("fp32_over_native", tok)
        out[f"native vs torch FP32, {tok} token(s), worst shape"] = {
            "measured": v, "target": f">= {tgt}x", "met": None if v is None else v >= tgt}
    for key, what in (("llamacpp_over_native", "interleaved"), ("llamacpp_over_native_warm", "warm cache")):
        for tok in (1, 30):
            v = worst(key, tok)
            out[f"native vs llama.cpp TQ2_0, {tok} token(s), {what}, worst shape"] = {
                "measured": v, "target": ">= 1.2x", "met": None if v is None else v >= 1.2}
    b = full.get("bits_per_ternary_weight")
    out["bits per ternary weight (full 2B4T)"] = {"measured": b, "target": "<= 2", "met": None if b is None else b <= 2}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, nargs="+", default=[1, 30])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--budget", type=float, default=4.0, help="seconds of timed calls per (shape, threads, tokens)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/native_vs_llamacpp.json")
    ap.add_argument("--skip-full", action="store_true", help="skip the full 2B4T part")
    ap.add_argument("--full-2b4t-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--embedding", choices=("float32", "int8"), default="float32", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.full_2b4t_worker:
        full_2b4t_worker(args)
        return
    t_start = time.perf_counter()
    load_before = [round(x, 2) for x in os.getloadavg()]
    from bitrl_ros.backbone.engines.native import _native
    versions = {"numpy": np.__version__}
    import torch
    versions["torch"] = torch.__version__
    for mod in ("llama_cpp", "gguf"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            try:
                from importlib.metadata import version
                versions[mod] = version(mod)
            except Exception:  # noqa: BLE001
                versions[mod] = None
    rows, info = run_shapes(args)
    full = {} if args.skip_full else run_full_2b4t(args)
    report = {"cpu": cpu_model(), "cores": os.cpu_count(), "native_isa": _native.best_isa(),
              "load_avg_before": load_before, "load_avg_after": [round(x, 2) for x in os.getloadavg()],
              "versions": versions, "threads": args.threads, "tokens": args.tokens,
              "notes": ["speed comparison only: llama.cpp's BitNet graph uses SiLU in the FFN, not squared ReLU",
                        "llama.cpp: embedding=True, pooling MEAN, all tokens are outputs; its graph also computes "
                        "the tied F16 LM head on every token (share of MACs in shapes.*.lm_head_mac_share_in_llamacpp)",
                        "every forward processes the whole sequence from an empty KV cache",
                        "*_ms_p50: engines interleaved call by call (cold caches); *_warm_ms_p50 (1 thread): each "
                        "engine in its own block of consecutive calls (weights may stay in the 32 MiB L3)",
                        "2 threads: the 2 cores are shared with other work; torch and llama.cpp wait for every "
                        "worker thread at each op, the native pool does not wait for unscheduled workers",
                        "torch_fp32 = BitNetDecoder(linear='fp') with weights q * scale; torch_ternary = frozen "
                        "BitLinear (fake quant)"],
              "shapes": info["shapes"], "results": rows, "full_2b4t": full}
    report["targets"] = targets(rows, full)
    report["wall_s"] = time.perf_counter() - t_start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(markdown(report))
    print(f"\nwrote {args.out} in {report['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
