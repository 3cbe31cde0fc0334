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

One MAE step per image (``mae_flops_per_sample``): the patch embedding on every patch (fwd and
its weight gradient), the encoder on the visible patches plus CLS (int(N x (1 - mask_ratio)) +
1 tokens, as MAE keeps them), the decoder embedding, the decoder (MLP blocks of
``decoder_width``) on all N + 1 tokens and the pixel prediction on the N patch tokens, each
forward + backward (3 x forward).

One CLIP step per image (``clip_flops_per_sample``): the vision tower on one view (3 x forward
less the patch embedding's input gradient) and its projection to the joint embedding; the text
tower (MLP blocks of the text width, ``context_length`` tokens) and its projection; the image x
text logits of the global batch (one batch x batch matrix: 2 x batch x embed per image), all
forward + backward.
"""

from __future__ import annotations

from dataclasses import dataclass

from webssl_cli.specs.methods import resolved_text_tower
from webssl_cli.specs.registry import ModelSpec, head_params
from webssl_cli.specs.train import HeadConfig, TrainConfig


def patch_embed_flops(spec: ModelSpec, img_size: int) -> float:
    return 2.0 * spec.n_patches(img_size) * spec.in_chans * spec.patch**2 * spec.width


def blocks_forward_flops(
    tokens: int, width: int, ffn_hidden: int, depth: int, swiglu: bool = False
) -> float:
    """Forward FLOPs of ``depth`` transformer blocks on a sequence of ``tokens``."""
    t, d, h = tokens, width, ffn_hidden
    qkv_proj = 2.0 * t * d * 3 * d + 2.0 * t * d * d
    attention = 2.0 * 2.0 * t * t * d  # QK^T and AV over all heads
    ffn = (6.0 if swiglu else 4.0) * t * d * h  # SwiGLU: w12 (d->2h) + w3 (h->d)
    return depth * (qkv_proj + attention + ffn)


def backbone_forward_flops(spec: ModelSpec, img_size: int, tokens: int | None = None) -> float:
    """Forward FLOPs of the backbone on one crop of side ``img_size``; ``tokens``: the blocks
    see only that many tokens (MAE's visible patches + CLS; default every patch + CLS)."""
    t = spec.n_patches(img_size) + 1 if tokens is None else tokens
    blocks = blocks_forward_flops(t, spec.width, spec.ffn_hidden, spec.depth, spec.ffn == "swiglu")
    return patch_embed_flops(spec, img_size) + blocks


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


def mae_visible_tokens(spec: ModelSpec, cfg: TrainConfig) -> int:
    """Patches MAE's encoder sees per image: int(N x (1 - mask_ratio)), as MAE keeps them."""
    return max(1, int(spec.n_patches(cfg.crops.global_size) * (1 - cfg.mae.mask_ratio)))


def mae_flops_per_sample(spec: ModelSpec, cfg: TrainConfig) -> float:
    """Training FLOPs per image of one MAE step (encoder on the visible patches, decoder on all)."""
    g, m = cfg.crops.global_size, cfg.mae
    n, keep = spec.n_patches(g), mae_visible_tokens(spec, cfg)
    pe = patch_embed_flops(spec, g)
    encoder = backbone_forward_flops(spec, g, keep + 1) - pe
    decoder_embed = 2.0 * (keep + 1) * spec.width * m.decoder_width
    decoder = blocks_forward_flops(n + 1, m.decoder_width, 4 * m.decoder_width, m.decoder_layers)
    pred = 2.0 * n * m.decoder_width * spec.patch**2 * spec.in_chans
    return 2.0 * pe + 3.0 * (encoder + decoder_embed + decoder + pred)


def clip_flops_per_sample(spec: ModelSpec, cfg: TrainConfig) -> float:
    """Training FLOPs per image of one CLIP step (vision and text towers, logits)."""
    g = cfg.crops.global_size
    width, layers, _, embed = resolved_text_tower(cfg.clip, spec.width)
    ctx = cfg.clip.context_length
    vision = 3.0 * backbone_forward_flops(spec, g) - patch_embed_flops(spec, g)
    vision += 3.0 * 2.0 * spec.width * embed
    text = 3.0 * (blocks_forward_flops(ctx, width, 4 * width, layers) + 2.0 * width * embed)
    logits = 3.0 * 2.0 * cfg.batch_size * embed
    return vision + text + logits


def flops_per_sample(spec: ModelSpec, cfg: TrainConfig, method: str = "webdino") -> float:
    """Training FLOPs per image of one step of ``method`` (webdino, clip, mae)."""
    if method == "mae":
        return mae_flops_per_sample(spec, cfg)
    if method == "clip":
        return clip_flops_per_sample(spec, cfg)
    return dinov2_flops_per_sample(spec, cfg)


def dinov2_flops_per_sample(spec: ModelSpec, cfg: TrainConfig) -> float:
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


def heads_params(spec: ModelSpec, cfg: TrainConfig, method: str = "webdino") -> int:
    """Trained parameters beside the backbone: DINO + iBOT heads (webdino), the decoder
    (mae), the text tower with both projections (clip)."""
    if method == "mae":
        m = cfg.mae
        dw = m.decoder_width
        block = 4 * dw * dw + 4 * dw + 2 * 4 * dw * dw + 4 * dw + dw + 4 * dw  # attn, mlp, norms
        pixels = spec.patch**2 * spec.in_chans
        return (
            spec.width * dw + dw + dw  # decoder embedding, mask token (positions: fixed)
            + m.decoder_layers * block + 2 * dw  # blocks, final norm
            + dw * pixels + pixels
        )  # fmt: skip
    if method == "clip":
        width, layers, _, embed = resolved_text_tower(cfg.clip, spec.width)
        block = 4 * width * width + 4 * width + 8 * width * width + 5 * width + 4 * width
        return (
            cfg.clip.vocab_size * width + cfg.clip.context_length * width
            + layers * block + 2 * width + width * embed + spec.width * embed + 1
        )  # fmt: skip
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
    method: str = "webdino",
) -> CellCompute:
    """Compute for one cell at ``mfu`` of ``peak_tflops`` (dense bf16 peak per GPU)."""
    iterations = -(-samples_seen // cfg.batch_size)  # ceil: the last partial batch is a full step
    per_sample = flops_per_sample(spec, cfg, method)
    total = per_sample * iterations * cfg.batch_size
    backbone, heads = spec.backbone_params(), heads_params(spec, cfg, method)
    student = backbone + heads
    # model (+ an EMA teacher for webdino) and AdamW moments, fp32, per checkpoint + the export.
    per_checkpoint = (4 if method == "webdino" else 3) * student * 4
    storage = per_checkpoint * cfg.keep_checkpoints + 4 * backbone
    gpu_hours = total / (peak_tflops * 1e12 * mfu) / 3600.0
    return CellCompute(backbone, heads, iterations, per_sample, total, gpu_hours, storage)
