"""GPU memory of one training rank, estimated from the model spec and the train config.

Pure python (no torch), so ``webssl study plan`` can flag cells that cannot fit the cluster
profile's GPUs and say what would make them fit. Bytes per rank, in five parts:

- states: student parameters, gradients and AdamW's two moments (fp32 each), and the teacher's
  parameters (fp32). Under FSDP2 all four are sharded over the ``gpus`` ranks; under DDP each
  rank holds them whole (DDP's gradients are views into its all-reduce buckets).
- gathered: FSDP2 unshards a block at a time in compute precision (bf16 on GPU, fp32 on CPU):
  the current block and the prefetched next, with their unsharded gradients in backward,
  and one head (the largest unit at 131,072 prototypes).
- activations: what the student's forward saves for backward on the rank's micro-batch (all
  crops): per token and block, the fp32 residual inputs of the two norms (8 D bytes) and, in
  compute precision, the norm outputs, qkv, attention output, LayerScale inputs (8 D values)
  and the FFN's gate, up, activation and product (4 H values for SwiGLU, 2 H for MLP). With
  activation checkpointing only each block's fp32 input is kept, plus one block recomputed.
- logits: the heads' prototype scores in fp32 — student logits and their log-softmax for every
  crop's CLS token and every masked patch token of the micro-batch — and the teacher's targets
  for the rank's whole step (every micro-batch: Sinkhorn-Knopp normalises over the step).
- reserve: CUDA context, allocator fragmentation and workspaces (``RESERVE_BYTES`` + 5%).

Per method: MAE and CLIP have no teacher and no prototype logits. MAE's student is the
backbone (activations of its visible tokens) and the decoder (all tokens, at its width); CLIP's
is the backbone (one view) and the text tower (``context_length`` tokens), and its logits are
the rank's images against the global batch's captions, both directions, with their softmax.

Checked on CPU against measured allocations for the test/small sizes (states within 10%;
tests/train/test_memory.py and benchmarks/gpu_train_step.py print both).
"""

from __future__ import annotations

from dataclasses import dataclass

from webssl_cli.specs.compute import expected_masked_tokens, heads_params, mae_visible_tokens
from webssl_cli.specs.methods import resolved_text_tower
from webssl_cli.specs.registry import ModelSpec
from webssl_cli.specs.train import TrainConfig, resolve_strategy

RESERVE_BYTES = 2 * 1024**3  # CUDA context + cuBLAS/NCCL workspaces, about 1.5-2 GiB on H100
GiB = 1024**3


@dataclass(frozen=True)
class MemoryEstimate:
    strategy: str
    gpus: int  # ranks the states are sharded over (FSDP2) or replicated on (DDP)
    micro_batch: int  # images per rank per forward pass
    accumulation: int  # micro-batches per optimiser step
    params: int  # student parameters (backbone + heads)
    param_bytes: int  # student parameters on this rank
    grad_bytes: int  # gradients (+ DDP buckets)
    optimizer_bytes: int  # AdamW exp_avg + exp_avg_sq
    teacher_bytes: int
    gathered_bytes: int  # FSDP2 unsharded units in flight
    activation_bytes: int
    logits_bytes: int
    reserve_bytes: int
    activation_checkpointing: bool

    @property
    def states_bytes(self) -> int:
        """Parameters + gradients + optimiser state (what a CPU run can measure exactly)."""
        return self.param_bytes + self.grad_bytes + self.optimizer_bytes

    @property
    def total_bytes(self) -> int:
        return (
            self.states_bytes + self.teacher_bytes + self.gathered_bytes
            + self.activation_bytes + self.logits_bytes + self.reserve_bytes
        )  # fmt: skip


def tokens_per_image(spec: ModelSpec, cfg: TrainConfig, method: str = "webdino") -> int:
    """Backbone tokens per image, CLS included: DINOv2's 2 global crops + the local crops;
    MAE's visible patches; CLIP's one view."""
    c = cfg.crops
    if method == "mae":
        return mae_visible_tokens(spec, cfg) + 1
    if method == "clip":
        return spec.n_patches(c.global_size) + 1
    return 2 * (spec.n_patches(c.global_size) + 1) + c.n_local * (spec.n_patches(c.local_size) + 1)


def block_activation_bytes_per_token(spec: ModelSpec, act_bytes: int) -> int:
    return _per_token(spec.width, spec.ffn_hidden, spec.ffn == "swiglu", act_bytes)


def _per_token(d: int, h: int, swiglu: bool, act_bytes: int) -> int:
    ffn_values = 4 * h if swiglu else 2 * h
    return 8 * d + act_bytes * (8 * d + ffn_values)


def _side_towers(spec: ModelSpec, cfg: TrainConfig, method: str) -> tuple[int, int, int, int]:
    """(tokens per image, width, ffn hidden, layers) of the tower beside the backbone: MAE's
    decoder or CLIP's text tower."""
    if method == "mae":
        m = cfg.mae
        tokens = spec.n_patches(cfg.crops.global_size) + 1
        return tokens, m.decoder_width, 4 * m.decoder_width, m.decoder_layers
    width, layers, _, _ = resolved_text_tower(cfg.clip, spec.width)
    return cfg.clip.context_length, width, 4 * width, layers


def _activations(
    spec: ModelSpec, cfg: TrainConfig, mb: int, ac: bool, act_bytes: int, method: str
) -> int:
    """Saved activations of one micro-batch (every block, or with checkpointing the block
    inputs plus one recomputed block), backbone and, for MAE/CLIP, the second tower."""
    towers = [(mb * tokens_per_image(spec, cfg, method), spec.width,
               block_activation_bytes_per_token(spec, act_bytes), spec.depth)]  # fmt: skip
    if method != "webdino":
        t, w, h, layers = _side_towers(spec, cfg, method)
        towers.append((mb * t, w, _per_token(w, h, False, act_bytes), layers))
    total = 0
    for tokens, width, per_token, depth in towers:
        total += (
            tokens * 4 * width * depth + tokens * per_token if ac else tokens * per_token * depth
        )
    return total


def estimate_memory(
    spec: ModelSpec,
    cfg: TrainConfig,
    gpus: int,
    *,
    micro_batch: int | None = None,
    strategy: str | None = None,
    activation_checkpointing: bool | None = None,
    act_bytes: int = 2,
    reserve: bool = True,
    method: str = "webdino",
) -> MemoryEstimate:
    """Memory of one rank of a ``gpus``-rank run of ``spec`` with ``cfg``.

    ``act_bytes``: bytes per value in compute precision (2 on GPU with bf16, 4 on CPU fp32).
    ``micro_batch``/``strategy``/``activation_checkpointing`` default to the config's.
    """
    gpus = max(gpus, 1)
    per_rank = max(cfg.batch_size // gpus, 1)
    mb = micro_batch or cfg.micro_batch or per_rank
    mb = min(mb, per_rank)
    accumulation = -(-per_rank // mb)
    ac = bool(
        cfg.dist.activation_checkpointing
        if activation_checkpointing is None
        else activation_checkpointing
    )
    backbone, heads = spec.backbone_params(), heads_params(spec, cfg, method)
    n = backbone + heads
    strat = resolve_strategy(strategy or cfg.dist.strategy, backbone)
    shard = gpus if strat == "fsdp" else 1
    param = 4 * -(-n // shard)
    grads = param  # fp32; DDP's gradients are views into its buckets (gradient_as_bucket_view)
    optim = 2 * param
    if method != "webdino":
        acts = _activations(spec, cfg, mb, ac, act_bytes, method)
        gathered = act_bytes * 4 * spec.block_params() if strat == "fsdp" else 0
        # CLIP: (rank's images x global batch) logits, both directions, with their softmax
        logits = 4 * 2 * 2 * mb * cfg.batch_size if method == "clip" else 0
        res = int(RESERVE_BYTES + 0.05 * (param + grads + optim + acts)) if reserve else 0
        return MemoryEstimate(
            strat, gpus, mb, accumulation, n, param, grads, optim, 0, gathered,
            int(acts), logits, res, ac,
        )  # fmt: skip
    teacher = param
    gathered = 0
    if strat == "fsdp":
        biggest_head = max(
            h.bottleneck * h.n_prototypes + h.hidden * h.bottleneck
            for h in (cfg.dino_head, cfg.ibot_head)
        )
        gathered = act_bytes * (4 * spec.block_params() + 2 * biggest_head)
    tokens = mb * tokens_per_image(spec, cfg)
    per_token = block_activation_bytes_per_token(spec, act_bytes)
    if ac:
        acts = tokens * 4 * spec.width * spec.depth + tokens * per_token
    else:
        acts = tokens * per_token * spec.depth
    masked = expected_masked_tokens(spec, cfg) * 2  # per image, both global crops
    crops = 2 + cfg.crops.n_local
    k_dino, k_ibot = cfg.dino_head.n_prototypes, cfg.ibot_head.n_prototypes
    student_logits = 4 * 2 * mb * (crops * k_dino + masked * k_ibot)  # logits + log-softmax
    teacher_targets = 4 * per_rank * (2 * k_dino + masked * k_ibot)  # the whole step's targets
    logits = int(student_logits + teacher_targets)
    res = int(RESERVE_BYTES + 0.05 * (param + grads + optim + teacher + acts)) if reserve else 0
    return MemoryEstimate(
        strat, gpus, mb, accumulation, n, param, grads, optim, teacher, int(gathered),
        int(acts), logits, res, ac,
    )  # fmt: skip


@dataclass(frozen=True)
class Fit:
    fits: bool
    estimate: MemoryEstimate
    fix: str  # "" when it fits


def check_fit(
    spec: ModelSpec,
    cfg: TrainConfig,
    gpus: int,
    gpu_memory_gb: float,
    max_gpus: int | None = None,
    method: str = "webdino",
) -> Fit:
    """Does a rank fit ``gpu_memory_gb``? If not, the cheapest change that makes it fit:
    activation checkpointing, then a smaller micro-batch (accumulating to the same global
    batch), then FSDP2 instead of DDP, then more GPUs."""
    est = estimate_memory(spec, cfg, gpus, method=method)
    budget = AUTO_HEADROOM * gpu_memory_gb * 1e9
    if gpu_memory_gb <= 0 or est.total_bytes <= budget:
        return Fit(True, est, "")

    def fits(**kw: object) -> MemoryEstimate | None:
        e = estimate_memory(spec, cfg, kw.pop("gpus", gpus), method=method, **kw)  # type: ignore[arg-type]
        return e if e.total_bytes <= budget else None

    strat = est.strategy
    if not est.activation_checkpointing and fits(activation_checkpointing=True):
        return Fit(False, est, "set train.dist.activation_checkpointing: true")
    for ac in (est.activation_checkpointing, True):
        mb = est.micro_batch // 2
        while mb >= 1:
            if fits(activation_checkpointing=ac, micro_batch=mb):
                extra = (
                    " and train.dist.activation_checkpointing: true"
                    if ac and not est.activation_checkpointing
                    else ""
                )
                return Fit(
                    False,
                    est,
                    f"set train.micro_batch: {mb}{extra} (accumulates to the same batch)",
                )
            mb //= 2
    if strat == "ddp" and fits(strategy="fsdp", activation_checkpointing=True, micro_batch=1):
        return Fit(
            False,
            est,
            "set train.dist.strategy: fsdp (with activation checkpointing and a smaller micro-batch)",
        )
    g = gpus * 2
    while g <= (max_gpus or 1 << 16):
        e = fits(gpus=g, strategy="fsdp", activation_checkpointing=True)
        if e is not None:
            return Fit(
                False,
                est,
                f"use {g} GPUs with train.dist.strategy: fsdp and activation checkpointing (micro-batch {e.micro_batch})",
            )
        g *= 2
    return Fit(
        False, est, "does not fit on any GPU count of this cluster; use GPUs with more memory"
    )


# ---- 'auto' micro-batch and activation checkpointing --------------------------------------
MIN_AUTO_TOKENS = 16384
"""Student tokens per rank and forward pass below which a smaller micro-batch is not chosen to
avoid activation checkpointing (a heuristic): smaller micro-batches underfill large GPUs'
matmuls and repeat FSDP2's per-micro-batch gathers, while checkpointing costs a fixed ~1/3
more compute (one more forward pass)."""


AUTO_HEADROOM = 0.9
"""'auto' choices must fit this fraction of a GPU's memory: the estimate is checked against
measured allocations to about 10%, and an out-of-memory job costs more than a smaller batch."""


@dataclass(frozen=True)
class Operational:
    micro_batch: int | None  # None: batch_size / world size (the GPU memory is unknown)
    activation_checkpointing: bool
    auto: tuple[str, ...]  # the fields that were 'auto' and were chosen here


def choose_operational(
    spec: ModelSpec, cfg: TrainConfig, gpus: int, gpu_memory_gb: float, method: str = "webdino"
) -> Operational:
    """Concrete values for the config's 'auto' (None) ``micro_batch`` and
    ``dist.activation_checkpointing``; values the config sets are kept.

    With the GPU memory known: the full per-rank batch without checkpointing if it fits; else
    the largest micro-batch dividing the per-rank batch that fits without checkpointing, when
    it holds at least ``MIN_AUTO_TOKENS`` tokens; else checkpointing with the largest micro-batch
    that fits. When nothing fits, checkpointing and a micro-batch of 1 (the plan then says what
    else to change). Unknown memory: no checkpointing, micro-batch left to the trainer."""
    mb_auto = cfg.micro_batch is None
    ac_auto = cfg.dist.activation_checkpointing is None
    auto = tuple(
        name
        for name, is_auto in (("micro_batch", mb_auto), ("activation_checkpointing", ac_auto))
        if is_auto
    )
    ac_set = bool(cfg.dist.activation_checkpointing)
    if gpu_memory_gb <= 0 or not auto:
        return Operational(cfg.micro_batch, ac_set, auto)
    per_rank = max(cfg.batch_size // max(gpus, 1), 1)
    # The trainer needs a micro-batch that divides the images per rank.
    divisors = [d for d in range(per_rank, 0, -1) if per_rank % d == 0]
    sizes = [cfg.micro_batch] if cfg.micro_batch else divisors
    budget = AUTO_HEADROOM * gpu_memory_gb * 1e9

    def largest(ac: bool) -> int | None:
        for mb in sizes:
            est = estimate_memory(
                spec, cfg, gpus, micro_batch=mb, activation_checkpointing=ac, method=method
            )
            if est.total_bytes <= budget:
                return mb
        return None

    tokens = tokens_per_image(spec, cfg, method)
    for ac in [ac_set] if not ac_auto else [False, True]:
        mb = largest(ac)
        if mb is None:
            continue
        last = ac == (True if ac_auto else ac_set)
        if mb == per_rank or mb * tokens >= MIN_AUTO_TOKENS or last or not mb_auto:
            return Operational(mb, ac, auto)
    return Operational(sizes[-1], True if ac_auto else ac_set, auto)


def resolve_train(cfg: TrainConfig, op: Operational) -> TrainConfig:
    """``cfg`` with its 'auto' fields replaced by the values of ``op``."""
    dist = cfg.dist.model_copy(update={"activation_checkpointing": op.activation_checkpointing})
    return cfg.model_copy(update={"micro_batch": op.micro_batch, "dist": dist})


def plan_memory(
    spec: ModelSpec,
    cfg: TrainConfig,
    gpus: int,
    gpu_memory_gb: float,
    max_gpus: int | None = None,
    method: str = "webdino",
) -> dict[str, object]:
    """The plan's memory fields of a cell: the chosen micro-batch and checkpointing (which of
    them were 'auto'), estimate per GPU, parts, fit and the fix."""
    op = choose_operational(spec, cfg, gpus, gpu_memory_gb, method)
    fit = check_fit(spec, resolve_train(cfg, op), gpus, gpu_memory_gb, max_gpus, method)
    e = fit.estimate
    return {
        "gpus": e.gpus,
        "strategy": e.strategy,
        "micro_batch": e.micro_batch,
        "accumulation": e.accumulation,
        "activation_checkpointing": e.activation_checkpointing,
        "auto": list(op.auto),
        "memory_bytes": e.total_bytes,
        "memory_parts": {
            "params": e.param_bytes,
            "grads": e.grad_bytes,
            "optimizer": e.optimizer_bytes,
            "teacher": e.teacher_bytes,
            "gathered": e.gathered_bytes,
            "activations": e.activation_bytes,
            "logits": e.logits_bytes,
            "reserve": e.reserve_bytes,
        },  # fmt: skip
        "memory_fits": None if gpu_memory_gb <= 0 else fit.fits,
        "memory_fix": fit.fix,
    }
