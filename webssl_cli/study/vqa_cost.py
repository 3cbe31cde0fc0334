"""GPU-hours and memory per GPU of a VQA evaluation, priced like training (pure python).

The language model's size comes from its ``config.json`` (a local transformers directory, as
``llm:`` names it) or from the tiny LM's settings. Per example of ``s = tokens + text`` tokens:

- features: one forward pass of the frozen encoder per image;
- stage 1 (adapter only): the LM's forward and its input gradients, ``4 P s`` plus attention;
- stage 2 (adapter + LM): forward, backward and, with activation checkpointing, one more
  forward, ``(6 or 8) P s`` plus attention (``12 L s^2 d`` for the three passes);
- generation is left out (test sets are ~10^4 questions, against ~10^7 training examples).

Memory per GPU in stage 2, FSDP2 over ``g`` ranks: fp32 parameters, gradients and AdamW
moments sharded (16 P / g bytes); two gathered decoder layers in bf16 with their gradients;
activations (with checkpointing: each layer's input, plus one layer recomputed, eager attention
scores included); fp32 logits and their gradient over the vocabulary; and the CUDA reserve. DDP
or one process holds the 16 P whole. ``benchmarks/gpu_vqa.py`` prints it beside the measured
peak.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webssl_cli.specs.evals import VqaEval, resolve_placement

RESERVE_BYTES = 2 * 1024**3  # CUDA context and workspaces, as in study.memory


@dataclass(frozen=True)
class LmShape:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool

    @property
    def layer_params(self) -> int:
        head_dim = self.hidden // self.heads
        attn = self.hidden * head_dim * (2 * self.heads + 2 * self.kv_heads)
        return attn + 3 * self.hidden * self.intermediate + 2 * self.hidden

    @property
    def params(self) -> int:
        emb = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * self.layer_params + emb + self.hidden


def lm_shape(cfg: VqaEval) -> LmShape | None:
    """The LM's shape: the tiny LM's settings, or ``<llm>/config.json``; None if unreadable."""
    if cfg.llm == "tiny":
        w = cfg.lm_width
        # the word tokenizer is trained on the suite: 4096 words stands in for its size
        return LmShape(cfg.lm_layers, w, 4 * w, cfg.lm_heads, cfg.lm_heads, 4096, True)
    path = Path(cfg.llm) / "config.json"
    try:
        c: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    heads = int(c["num_attention_heads"])
    return LmShape(
        layers=int(c["num_hidden_layers"]),
        hidden=int(c["hidden_size"]),
        intermediate=int(c["intermediate_size"]),
        heads=heads,
        kv_heads=int(c.get("num_key_value_heads") or heads),
        vocab=int(c["vocab_size"]),
        tied=bool(c.get("tie_word_embeddings", False)),
    )


def eval_world(placement: str | None, ranks: int) -> int:
    """Ranks of an evaluation job given ``ranks`` by its cluster profile (``eval``: nodes x
    tasks per node): all of them for a VQA evaluation whose placement may spread (auto, ddp,
    fsdp), one for 'single' and for evaluations without a placement (the probes)."""
    return 1 if placement in (None, "single") else max(1, ranks)


def _samples(given: int | None, steps: int | None, batch: int) -> int | None:
    if given is not None:
        return given
    return None if steps is None else steps * batch


def price_vqa(
    cfg: VqaEval,
    *,
    gpus: int,
    gpu_memory_gb: float,
    peak_tflops: float,
    mfu: float,
    encoder_forward_flops: float = 0.0,
    images: int | None = None,
    micro_batch: int = 1,
    shape: LmShape | None = None,
) -> dict[str, Any]:
    """One eval stage's estimate: strategy, activation checkpointing, FLOPs and GPU-hours per
    part, stage-2 bytes per GPU by part and whether they fit ``gpu_memory_gb`` (0: unknown).
    GPU-hours are None where the sample counts are unknown (neither samples nor steps set).
    ``shape`` overrides the LM's shape read from ``cfg``."""
    shape = shape or lm_shape(cfg)
    if shape is None:
        return {"priced": False, "why": f"no readable config.json under {cfg.llm!r}"}
    P, s = shape.params, cfg.tokens + cfg.plan_text_tokens
    strategy = resolve_placement(cfg.placement, gpus, P)
    ac = cfg.activation_checkpointing
    ac = strategy == "fsdp" if ac is None else ac
    attn = 4 * shape.layers * s * s * shape.hidden  # forward QK^T and AV
    n1 = _samples(cfg.stage1_samples, cfg.stage1_steps, cfg.stage1_batch)
    n2 = _samples(cfg.stage2_samples, cfg.stage2_steps, cfg.stage2_batch)
    flops: dict[str, float | None] = {
        "features": None if images is None else encoder_forward_flops * images,
        "stage1": None if n1 is None else n1 * (4.0 * P * s + 2 * attn),
        "stage2": None
        if n2 is None
        else n2 * ((8.0 if ac else 6.0) * P * s + (4 if ac else 3) * attn),
    }
    rate = peak_tflops * 1e12 * mfu * 3600.0
    hours = {k: (None if v is None else v / rate) for k, v in flops.items()}
    known = [h for h in hours.values() if h is not None]
    mem = stage2_memory(shape, s, micro_batch, gpus if strategy == "fsdp" else 1, ac)
    total = sum(mem.values())
    return {
        "priced": True,
        "lm_params": P,
        "strategy": strategy,
        "activation_checkpointing": ac,
        "gpus": gpus,
        "tokens_per_example": s,
        "flops": flops,
        "gpu_hours": hours,
        "gpu_hours_total": sum(known) if known else None,
        "stage2_tokens_per_s_per_gpu": peak_tflops * 1e12 * mfu / ((8.0 if ac else 6.0) * P),
        "memory": mem,
        "memory_bytes": total,
        "memory_fits": None if not gpu_memory_gb else total <= gpu_memory_gb * 1e9,
    }


def stage2_memory(
    shape: LmShape, seq: int, micro_batch: int, shards: int, ac: bool
) -> dict[str, int]:
    """Bytes per GPU of stage 2 by part (bf16 compute; ``shards`` 1: unsharded)."""
    P, d, f, L = shape.params, shape.hidden, shape.intermediate, shape.layers
    tokens = micro_batch * seq
    states = 16 * P // shards
    gathered = 2 * 2 * 2 * shape.layer_params if shards > 1 else 0  # 2 layers, bf16, +grads
    scores = 4 * micro_batch * shape.heads * seq * seq  # one layer's eager attention probs, fp32
    per_layer = tokens * (2 * (8 * d + 4 * f) + 8 * d) + 2 * scores
    acts = L * tokens * 4 * d + per_layer if ac else L * per_layer
    logits = 2 * 4 * tokens * shape.vocab  # fp32 logits and their gradient
    return {"states": states, "gathered": gathered, "activations": acts, "logits": logits,
            "reserve": RESERVE_BYTES}  # fmt: skip
