"""Compute estimates of a training cell: FLOPs per sample, total FLOPs, GPU-hours, storage.

Counts are multiply-adds x 2 of the matrix products (what ``torch.utils.flop_counter`` counts):
linear layers, the patch-embedding convolution and attention (QK^T and AV). Norms, softmax and
activations are not counted. One DINOv2 step per image:

- student forward + backward on 2 global + N local crops = 3 x forward, except the patch
  embedding whose backward computes only the weight gradient (the input needs none): 2 x;
- teacher forward on the 2 global crops;
- DINO head on every student CLS token (fwd+bwd) and the teacher's global CLS tokens;
- iBOT head on the masked patch tokens of the global crops, student (fwd+bwd) and teacher, at
  the expected masked count mask_prob x mean(mask_ratio) x patches.
"""

from __future__ import annotations

from dataclasses import dataclass

from webssl_cli.specs.registry import ModelSpec, head_params
from webssl_cli.specs.train import HeadConfig, TrainConfig


def patch_embed_flops(spec: ModelSpec, img_size: int) -> float:
    return 2.0 * spec.n_patches(img_size) * spec.in_chans * spec.patch**2 * spec.width


def backbone_forward_flops(spec: ModelSpec, img_size: int) -> float:
    """Forward FLOPs of the backbone on one crop of side ``img_size``."""
    t = spec.n_patches(img_size) + 1  # tokens incl. CLS
    d, h = spec.width, spec.ffn_hidden
    qkv_proj = 2.0 * t * d * 3 * d + 2.0 * t * d * d
    attention = 2.0 * 2.0 * t * t * d  # QK^T and AV over all heads
    ffn = (6.0 if spec.ffn == "swiglu" else 4.0) * t * d * h  # SwiGLU: w12 (d->2h) + w3 (h->d)
    return patch_embed_flops(spec, img_size) + spec.depth * (qkv_proj + attention + ffn)


def head_forward_flops(in_dim: int, head: HeadConfig) -> float:
    """Forward FLOPs of a DINO/iBOT head on one token."""
    if head.layers == 1:
        mlp = in_dim * head.bottleneck
    else:
        mlp = (
            in_dim * head.hidden
            + (head.layers - 2) * head.hidden**2
            + head.hidden * head.bottleneck
        )
    return 2.0 * (mlp + head.bottleneck * head.n_prototypes)


def expected_masked_tokens(spec: ModelSpec, cfg: TrainConfig) -> float:
    """Expected iBOT-masked patches per global crop."""
    lo, hi = cfg.mask_ratio
    return cfg.mask_prob * (lo + hi) / 2 * spec.n_patches(cfg.crops.global_size)


def flops_per_sample(spec: ModelSpec, cfg: TrainConfig) -> float:
    """Training FLOPs per image of one DINOv2 step (student fwd+bwd, teacher fwd, both heads)."""
    c = cfg.crops
    n_global, n_local = 2, c.n_local
    fwd_g, fwd_l = (
        backbone_forward_flops(spec, c.global_size),
        backbone_forward_flops(spec, c.local_size),
    )
    pe = n_global * patch_embed_flops(spec, c.global_size) + n_local * patch_embed_flops(
        spec, c.local_size
    )
    student = 3.0 * (n_global * fwd_g + n_local * fwd_l) - pe
    teacher = n_global * fwd_g
    dino = head_forward_flops(spec.width, cfg.dino_head) * (3.0 * (n_global + n_local) + n_global)
    ibot_tokens = expected_masked_tokens(spec, cfg) * n_global
    ibot = (
        head_forward_flops(spec.width, cfg.ibot_head) * ibot_tokens * (3.0 + 1.0)
        if cfg.ibot_weight > 0
        else 0.0
    )
    return student + teacher + dino + ibot


def heads_params(spec: ModelSpec, cfg: TrainConfig) -> int:
    h1, h2 = cfg.dino_head, cfg.ibot_head
    return head_params(
        spec.width, h1.hidden, h1.bottleneck, h1.n_prototypes, h1.layers
    ) + head_params(spec.width, h2.hidden, h2.bottleneck, h2.n_prototypes, h2.layers)


@dataclass(frozen=True)
class CellCompute:
    params: int  # backbone
    head_params: int  # DINO + iBOT heads
    iterations: int
    flops_per_sample: float
    total_flops: float
    gpu_hours: float
    checkpoint_bytes: int  # all kept checkpoints + the exported backbone


def estimate(
    spec: ModelSpec,
    cfg: TrainConfig,
    samples_seen: int,
    *,
    peak_tflops: float = 989.0,
    mfu: float = 0.4,
) -> CellCompute:
    """Compute for one cell at ``mfu`` of ``peak_tflops`` (dense bf16 peak per GPU)."""
    iterations = -(-samples_seen // cfg.batch_size)  # ceil: the last partial batch is a full step
    per_sample = flops_per_sample(spec, cfg)
    total = per_sample * iterations * cfg.batch_size
    backbone, heads = spec.backbone_params(), heads_params(spec, cfg)
    student = backbone + heads
    # student + teacher (fp32) + AdamW moments (2 x fp32) per checkpoint, plus the export.
    per_checkpoint = 4 * student * 4
    storage = per_checkpoint * cfg.keep_checkpoints + 4 * backbone
    gpu_hours = total / (peak_tflops * 1e12 * mfu) / 3600.0
    return CellCompute(backbone, heads, iterations, per_sample, total, gpu_hours, storage)
