"""Quantization-aware distillation of the all-MiniLM-L6-v2 teacher into a same-shape BitLinear student.

Student: a copy of the teacher whose encoder linears (q, k, v, attention output, intermediate, output) are
trainable BitLinears (absmean ternary weights and per-token int8 activations, fake-quantized with a straight-through
estimator), initialized from the teacher's weights, i.e. starting from the PTQ model. Embedding tables stay frozen
(AdamW's weight decay would otherwise shrink every row the small corpus never touches): the position and token-type
tables at the teacher's values, the word table at its int8 round trip, i.e. exactly the values that ship, so the
student learns around the embedding quantization error too. LayerNorms and biases train in fp32.

Loss, per batch (teacher run on the fly under no_grad):
    (1 - cos(student_pool, teacher_pool)) + relMSE(pooled) + hidden_weight * mean_l relMSE(hidden_l)
where pool is the masked mean over tokens, relMSE(a, b) = sum((a-b)^2) / sum(b^2) over real tokens, and l runs over
the N layer outputs. AdamW, linear warmup then cosine decay to 10% of lr, gradient clipping at 1.0.

Checkpoints (every ``ckpt_every`` steps and at the end) are ``<ckpt_dir>/step-XXXXXXX/`` (default
``<ckpt_dir>`` = ``<out>/checkpoints``; ``bitrl distill`` keeps them out of the model directory) holding
``student.safetensors`` (latent fp32 weights), ``optim.safetensors`` (AdamW moments) and ``state.json`` (step,
settings, sampler RNG state, corpus hash, elapsed time, log), published by atomically rewriting
``<ckpt_dir>/latest.json``; no pickle anywhere. The final model is frozen and saved in our model format
(model_file.py) with the word-embedding table in int8 (per-row scales), plus ``training_log.json``.

Why int8 (per-row absmax scales) and not float16 for the word-embedding table: the size budget. 30522 x 384 in
float16 is 23.4 MB, which with the 2.7 MB of packed ternary weights and the 0.7 MB tokenizer breaks the 25 MB
limit; int8 is 11.7 MB (+ 0.1 MB of scales). The table is a lookup, so int8 buys no compute, and its error
(at most half a step of 1/127 of each row's largest value) is of the same kind and size as the int8 activation
quantization every BitLinear applies to the first layer's input anyway; the student trains on the int8 table, so
the distillation compensates for it. Pruning the vocabulary instead would have made the tokenizer map rare words to
[UNK]; int8 keeps the full WordPiece vocabulary.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from pathlib import Path
import shutil
import tempfile
import time

from safetensors.torch import load_file as st_load_file
from safetensors.torch import save_file as st_save_file
import torch
from torch import nn
import torch.nn.functional as F

from .bert import BertEncoder
from .bitlinear import BitLinear
from .corpus import build_corpus, label_group
from .model_file import dequantize_rows_int8, quantize_rows_int8, save_model
from .tokenizer import Tokenizer
from ..errors import BitrlError
from ..fileio import atomic_write_text

EMBEDDING_DTYPE = "int8"
CKPT_DIR = "checkpoints"


def make_student(teacher: BertEncoder) -> BertEncoder:
    """A trainable copy of ``teacher`` with every nn.Linear replaced by an (unfrozen) BitLinear and its word
    embeddings replaced by their (frozen) int8 round trip.
    """
    student = copy.deepcopy(teacher)
    for parent in list(student.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, BitLinear.from_linear(child))
    student.config = dataclasses.replace(student.config, linear="bitlinear")
    with torch.no_grad():
        word = student.embeddings.word.weight
        word.copy_(dequantize_rows_int8(*quantize_rows_int8(word)))
    student.requires_grad_(True)
    student.embeddings.word.requires_grad_(False)
    student.embeddings.position.requires_grad_(False)
    student.embeddings.token_type.requires_grad_(False)
    return student.train()


def pad_batch(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    t = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def mean_pool(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp(min=1.0)


def _rel_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    if mask is not None:
        m = mask.unsqueeze(-1).to(a.dtype)
        return (((a - b) ** 2) * m).sum() / ((b ** 2) * m).sum().clamp(min=1e-12)
    return ((a - b) ** 2).sum() / (b ** 2).sum().clamp(min=1e-12)


def distill_loss(student: nn.Module, teacher: nn.Module, ids: torch.Tensor, mask: torch.Tensor,
                 hidden_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    with torch.no_grad():
        t_last, t_states = teacher(ids, mask, output_hidden_states=True)
        t_pool = mean_pool(t_last, mask)
    s_last, s_states = student(ids, mask, output_hidden_states=True)
    s_pool = mean_pool(s_last, mask)
    cos = F.cosine_similarity(s_pool, t_pool, dim=-1).mean()
    pool_mse = _rel_mse(s_pool, t_pool)
    hid = torch.stack([_rel_mse(s, t, mask) for s, t in zip(s_states[1:], t_states[1:])]).mean()
    loss = (1.0 - cos) + pool_mse + hidden_weight * hid
    parts = {"loss": loss.item(), "cos": cos.item(), "pool_mse": pool_mse.item(), "hidden_mse": hid.item()}
    return loss, parts


def lr_at(step: int, total: int, lr: float, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to 10% of ``lr`` at ``total``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


@torch.no_grad()
def pooled_embeddings(model: nn.Module, seqs: list[list[int]], pad_id: int, batch: int = 64) -> torch.Tensor:
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(seqs), batch):
        ids, mask = pad_batch(seqs[i: i + batch], pad_id)
        out.append(mean_pool(model(ids, mask), mask))
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def heldout_cosine(student_pool: torch.Tensor, teacher_pool: torch.Tensor, groups: list[str]) -> dict:
    """{"mean": overall mean cosine, "<group>": mean cosine per group}."""
    cos = F.cosine_similarity(student_pool, teacher_pool, dim=-1)
    out = {"mean": float(cos.mean())}
    for g in sorted(set(groups)):
        idx = torch.tensor([i for i, x in enumerate(groups) if x == g])
        out[g] = float(cos[idx].mean())
    return out


# -------------------------------------------------------------------------------------------------- checkpoints

def _optim_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"{idx}.{k}"] = v.detach().contiguous().clone() if torch.is_tensor(v) else torch.tensor(v)
    return tensors, sd["param_groups"]


def _load_optim(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(root: Path, step: int, student: nn.Module, opt: torch.optim.Optimizer,
                    gen: torch.Generator, state: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step-{step:07d}-"))
    st_save_file({k: v.detach().contiguous().clone() for k, v in student.state_dict().items()},
                 str(tmp / "student.safetensors"))
    opt_tensors, groups = _optim_tensors(opt)
    opt_tensors["__sampler_rng__"] = gen.get_state()
    st_save_file(opt_tensors, str(tmp / "optim.safetensors"))
    (tmp / "state.json").write_text(json.dumps({**state, "step": step, "param_groups": groups}, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_text(root / "latest.json", json.dumps({"checkpoint": final.name, "step": step}) + "\n")
    for old in root.iterdir():  # keep only the published checkpoint
        if old.is_dir() and old.name != final.name and not old.name.startswith(".step-"):
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(root: Path) -> tuple[Path, dict] | None:
    latest = root / "latest.json"
    if not latest.is_file():
        return None
    ck = root / json.loads(latest.read_text())["checkpoint"]
    return ck, json.loads((ck / "state.json").read_text())


# ---------------------------------------------------------------------------------------------------- distill

def distill(out_dir: str | Path, steps: int = 2000, batch_size: int = 32, lr: float = 3e-4, seed: int = 0,
            resume: bool = True, progress: bool = True, time_budget_s: float | None = None, *,
            teacher: BertEncoder | None = None, tokenizer_path: str | Path | None = None,
            corpus: tuple[list[str], list[str], dict] | None = None, n_states_per_env_format: int = 2000,
            max_tokens: int = 64, warmup: int | None = None, weight_decay: float = 0.01,
            hidden_weight: float = 1.0, eval_every: int = 100, ckpt_every: int = 200, eval_max: int = 1024,
            grad_clip: float = 1.0, ckpt_dir: str | Path | None = None, log=print) -> dict:
    """Distill and save the frozen student to ``out_dir`` (our model format); returns the training log dict.

    ``teacher``/``tokenizer_path`` default to all-MiniLM-L6-v2; ``corpus`` to ``build_corpus(n_states_per_env_
    format, seed)``. ``time_budget_s`` bounds the total training time across resumes: training stops early (and
    still saves) once it is spent. With ``resume`` an existing checkpoint in ``out_dir`` is continued (its corpus
    hash must match); without it, training starts over. Tokens beyond ``max_tokens`` are truncated. Checkpoints go
    to ``ckpt_dir`` (default ``out_dir/checkpoints``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_root = Path(ckpt_dir) if ckpt_dir is not None else out_dir / CKPT_DIR
    if teacher is None:
        from .teacher import load_teacher, teacher_dir

        teacher, _ = load_teacher()
        tokenizer_path = teacher_dir() / "tokenizer.json"
    if tokenizer_path is None:
        raise ValueError("a custom teacher needs its tokenizer_path")
    teacher = teacher.eval().requires_grad_(False)
    tok = Tokenizer(tokenizer_path)
    train_texts, held_texts, meta = corpus if corpus is not None else build_corpus(n_states_per_env_format, seed)
    if not train_texts or not held_texts:
        raise BitrlError("the distillation corpus has an empty train or held-out split")
    train_ids = tok.encode_batch(train_texts, max_tokens)
    held_idx = list(range(len(held_texts)))
    if len(held_idx) > eval_max:  # a fixed, evenly spaced subset of the held-out split for periodic evaluation
        held_idx = [round(i * (len(held_texts) - 1) / (eval_max - 1)) for i in range(eval_max)]
    held_ids = tok.encode_batch([held_texts[i] for i in held_idx], max_tokens)
    held_groups = [label_group(meta["heldout_labels"][i]) for i in held_idx]
    teacher_held = pooled_embeddings(teacher, held_ids, tok.pad_id)

    torch.manual_seed(seed)
    student = make_student(teacher)
    decay = [p for n, p in student.named_parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for n, p in student.named_parameters() if p.requires_grad and p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(seed)
    warmup = min(100, max(1, steps // 10)) if warmup is None else warmup
    settings = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "max_tokens": max_tokens,
                "warmup": warmup, "weight_decay": weight_decay, "hidden_weight": hidden_weight,
                "grad_clip": grad_clip, "time_budget_s": time_budget_s}
    history: list[dict] = []
    evals: list[dict] = []
    step, elapsed_before = 0, 0.0
    found = load_checkpoint(ckpt_root) if resume else None
    if found is not None:
        ck, state = found
        if state["corpus_hash"] != meta["hash"]:
            raise BitrlError(f"{ck}: checkpoint was trained on a different corpus (hash {state['corpus_hash'][:12]} "
                             f"!= {meta['hash'][:12]}); rerun without --resume to start over")
        student.load_state_dict(st_load_file(str(ck / "student.safetensors")))
        opt_t = st_load_file(str(ck / "optim.safetensors"))
        gen.set_state(opt_t.pop("__sampler_rng__"))
        _load_optim(opt, opt_t, state["param_groups"])
        step, elapsed_before = state["step"], state["elapsed_s"]
        history, evals = state["history"], state["evals"]
        log(f"resuming from {ck} at step {step}")
    elif not resume and ckpt_root.exists():
        shutil.rmtree(ckpt_root)

    def evaluate() -> dict:
        res = heldout_cosine(pooled_embeddings(student, held_ids, tok.pad_id), teacher_held, held_groups)
        res["step"] = step
        evals.append(res)
        return res

    def ckpt_state() -> dict:
        return {"settings": settings, "corpus_hash": meta["hash"], "elapsed_s": elapsed_before + time.monotonic() - t0,
                "history": history, "evals": evals}

    t0 = time.monotonic()
    if not evals:
        evaluate()
    start_step = step
    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        bar = Progress(TextColumn("distill"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
        task = bar.add_task("distill", total=steps, completed=step, info="")
        bar.start()
    stopped = "steps"
    try:
        while step < steps:
            if time_budget_s is not None and elapsed_before + time.monotonic() - t0 >= time_budget_s:
                stopped = "time_budget"
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(step, steps, lr, warmup)
            idx = torch.randint(len(train_ids), (batch_size,), generator=gen).tolist()
            ids, mask = pad_batch([train_ids[i] for i in idx], tok.pad_id)
            loss, parts = distill_loss(student, teacher, ids, mask, hidden_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = float(torch.nn.utils.clip_grad_norm_(student.parameters(), grad_clip))
            opt.step()
            step += 1
            history.append({"step": step, **{k: round(v, 6) for k, v in parts.items()}, "grad_norm": round(gnorm, 4),
                            "lr": opt.param_groups[0]["lr"]})
            if step % eval_every == 0 or step == steps:
                evaluate()
            if bar is not None:
                bar.update(task, completed=step, info=f"loss {parts['loss']:.4f} cos {parts['cos']:.4f} "
                                                      f"held-out cos {evals[-1]['mean']:.4f}")
            if step % ckpt_every == 0 and step < steps:
                save_checkpoint(ckpt_root, step, student, opt, gen, ckpt_state())
    finally:
        if bar is not None:
            bar.stop()
    if evals[-1]["step"] != step:
        evaluate()
    save_checkpoint(ckpt_root, step, student, opt, gen, ckpt_state())
    elapsed = elapsed_before + time.monotonic() - t0
    run_s = time.monotonic() - t0
    for m in student.modules():
        if isinstance(m, BitLinear):
            m.freeze()
    student.eval().requires_grad_(False)
    save_model(student, tokenizer_path, out_dir, embedding_dtype=EMBEDDING_DTYPE)
    report = {"settings": settings,
              "corpus": {k: meta[k] for k in ("params", "hash", "n_train", "n_heldout", "counts")},
              "steps_done": step, "stopped": stopped, "elapsed_s": round(elapsed, 2),
              "steps_per_s_this_run": round((step - start_step) / run_s, 4) if run_s > 0 else None,
              "heldout_initial": evals[0], "heldout_final": evals[-1], "evals": evals, "history": history,
              "embedding_dtype": EMBEDDING_DTYPE}
    atomic_write_text(out_dir / "training_log.json", json.dumps(report, indent=1) + "\n")
    log(f"distilled {step} steps in {elapsed:.0f}s; held-out cosine {evals[0]['mean']:.4f} -> {evals[-1]['mean']:.4f}; "
        f"saved {out_dir}")
    return report
