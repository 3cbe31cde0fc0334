"""Typed training configuration. Pure pydantic: importing it never imports torch.

Defaults are the Web-DINO recipe (DINOv2's ViT-g recipe, unchanged across sizes; DESIGN.md).
Presets (``presets.py``) override a few fields for CPU work. Precedence, written once:
defaults < preset < study ``train`` < cell axis values < command line.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from webssl_cli.specs.base import Frozen
from webssl_cli.specs.methods import ClipConfig, MaeConfig


class HeadConfig(Frozen):
    n_prototypes: int = Field(131072, ge=2)
    """Number of prototypes K (the output dimension of the weight-normalised last layer)."""
    bottleneck: int = Field(384, ge=1)
    """Bottleneck dimension before the prototype layer."""
    hidden: int = Field(2048, ge=1)
    """Hidden dimension of the head MLP."""
    layers: int = Field(3, ge=1)
    """Linear layers before the bottleneck output (DINOv2: 3)."""


class IBOTHeadConfig(HeadConfig):
    """The separate iBOT head. DINOv2's ViT-g recipe raises only the DINO head's bottleneck to
    384; the iBOT head keeps the default 256 (a partial ``ibot_head`` override keeps it too)."""

    bottleneck: int = Field(256, ge=1)


class CropConfig(Frozen):
    global_size: int = Field(224, ge=8)
    """Side of the global crops in pixels."""
    global_scale: tuple[float, float] = (0.32, 1.0)
    """RandomResizedCrop area range of the global crops."""
    n_local: int = Field(8, ge=0)
    """Number of local crops per image."""
    local_size: int = Field(98, ge=8)
    """Side of the local crops in pixels."""
    local_scale: tuple[float, float] = (0.05, 0.32)
    """RandomResizedCrop area range of the local crops."""
    blur_probs: Literal["dinov2-code", "written"] = "dinov2-code"
    """Gaussian-blur probabilities: 'dinov2-code' (what DINOv2's code applies and Web-DINO was
    trained with: global 0 / 0.9, local 0.5) or 'written' (the stated intent: 1.0 / 0.1 / 0.5)."""
    hue: float = Field(0.1, ge=0, le=0.5)
    """Colour jitter's hue range (a shift of up to this fraction of the colour wheel; DINOv2:
    0.1). 0.5 draws any hue, so crops of one image no longer share their colours."""
    blur_scale: float = Field(1.0, gt=0, le=1)
    """Scales the Gaussian blur's sigma range (0.1-2 px) and kernel (9 px), which DINOv2 sized
    for 224 px global / 98 px local crops. At smaller crops use about global_size / 224, so a
    blur removes the same share of an object's detail (1.0: the recipe, unchanged)."""


class DistConfig(Frozen):
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    """Data parallelism ('ddp'), FSDP2 per block ('fsdp'), or 'auto' (FSDP2 from 1B params)."""
    activation_checkpointing: bool | None = None
    """Recompute block activations in the backward pass to save memory. 'auto' (null, the
    default): the study turns it on only where the model does not fit the cluster profile's
    GPU memory otherwise (``study/memory.py``); off when the memory is unknown."""
    compile: bool = False
    """Wrap the blocks in torch.compile."""
    data_lanes: int | None = Field(None, ge=1)
    """Independent sample streams the global batch is drawn from, batch_size / lanes images
    each; a rank reads lanes / world size of them. Fixed, it makes the global batch the same
    images at any world size (resume on more or fewer GPUs). None: gcd(batch_size, 64)."""
    koleo_group: int | None = Field(None, ge=2)
    """Images per KoLeo nearest-neighbour set. DINOv2 computes KoLeo per rank (None: per
    micro-batch); a fixed group makes the loss independent of the world size and accumulation."""
    packed_crops: bool = True
    """Run global and local crops through the student's blocks in one packed pass."""

    @field_validator("activation_checkpointing", mode="before")
    @classmethod
    def _auto_checkpointing(cls, v: object) -> object:
        return None if v == "auto" else v


class TrainConfig(Frozen):
    batch_size: int = Field(3072, ge=1)
    """Global batch size (images per optimiser step, over all ranks and accumulation steps)."""
    micro_batch: int | None = Field(None, ge=1)
    """Images per rank per forward pass, accumulated to ``batch_size``. 'auto' (null, the
    default): the study picks the largest divisor of the images per rank that fits the cluster
    profile's GPU memory (``study/memory.py``); batch_size / world size (no accumulation) when
    the memory is unknown or the trainer runs outside a study."""
    base_lr: float = Field(2e-4, gt=0)
    """Peak learning rate per 1024 images; scaled to the batch by ``lr_scaling``."""
    lr_scaling: Literal["sqrt", "linear", "none"] = "sqrt"
    """How the peak lr scales with batch_size / 1024 (DINOv2: sqrt, giving 3.5e-4 at 3072)."""
    lr_width_ref: int | None = Field(None, ge=1)
    """When set, the peak lr is also multiplied by lr_width_ref / the backbone's width (Adam's
    rule for hidden layers in muP, Yang et al. 2022), so that one base_lr serves every model
    size of a study. None (the paper's recipes): the same lr at every width."""
    min_lr: float = Field(1e-6, ge=0)
    """Final learning rate of the cosine schedule."""
    warmup_iters: int = Field(100_000, ge=0)
    """Linear lr warmup, in iterations (capped at the run's iterations)."""
    weight_decay: float = Field(0.04, ge=0)
    """AdamW weight decay at the start (cosine to ``weight_decay_end``)."""
    weight_decay_end: float = Field(0.2, ge=0)
    momentum_teacher: float = Field(0.994, ge=0, le=1)
    """EMA momentum of the teacher at the start (cosine to ``momentum_teacher_end``)."""
    momentum_teacher_end: float = Field(1.0, ge=0, le=1)
    teacher_temp: float = Field(0.04, gt=0)
    """Teacher temperature at the start (linear warmup to ``teacher_temp_end``)."""
    teacher_temp_end: float = Field(0.07, gt=0)
    teacher_temp_warmup_iters: int = Field(37_500, ge=0)
    """Teacher temperature warmup length in iterations (DINOv2: 30 epochs of 1250)."""
    student_temp: float = Field(0.1, gt=0)
    centering: Literal["sinkhorn", "ema"] = "sinkhorn"
    """Teacher centering: Sinkhorn-Knopp (Web-DINO) or DINO's EMA centre."""
    sinkhorn_iters: int = Field(3, ge=1)
    center_momentum: float = Field(0.9, ge=0, le=1)
    """Momentum of the EMA centre (``centering: ema`` only)."""
    dino_head: HeadConfig = HeadConfig()
    ibot_head: IBOTHeadConfig = IBOTHeadConfig()
    """The separate iBOT head (Web-DINO does not share it with the DINO head)."""
    dino_weight: float = Field(1.0, ge=0)
    ibot_weight: float = Field(1.0, ge=0)
    koleo_weight: float = Field(0.1, ge=0)
    drop_path: float = Field(0.4, ge=0, lt=1)
    """Stochastic depth rate of the last block (uniform over blocks as in DINOv2)."""
    layerscale: float | None = 1e-5
    """LayerScale init; None disables it."""
    clip_grad: float = Field(3.0, gt=0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """AdamW (beta1, beta2): DINOv2's (0.9, 0.999); CLIP (0.9, 0.98), MAE (0.9, 0.95)."""
    adam_eps: float = Field(1e-8, gt=0)
    """AdamW epsilon: 1e-8 (DINOv2, MAE); CLIP 1e-6."""
    layerwise_decay: float = Field(1.0, gt=0, le=1)
    patch_embed_lr_mult: float = Field(0.2, gt=0)
    freeze_last_layer_iters: int = Field(1250, ge=0)
    """Iterations during which the heads' prototype layers are not updated."""
    crops: CropConfig = CropConfig()
    mask_prob: float = Field(0.5, ge=0, le=1)
    """Fraction of the samples in a batch that get iBOT masks."""
    mask_ratio: tuple[float, float] = (0.1, 0.5)
    """Range of masked-patch ratios, spread uniformly over the masked samples."""
    seed: int = 0
    dtype: Literal["auto", "bf16", "fp32"] = "auto"
    """Autocast dtype: 'auto' is bf16 on CUDA and fp32 on CPU."""
    metrics_every: int = Field(10, ge=1)
    """Write a line to train/metrics.jsonl every N iterations."""
    checkpoint_every: int = Field(1000, ge=1)
    """Checkpoint every N iterations (and always at the end)."""
    keep_checkpoints: int = Field(3, ge=1)
    num_workers: int = Field(2, ge=0)
    """Data-loading worker processes per rank."""
    threads: int | None = Field(None, ge=1)
    """torch intra-op threads on CPU (None: torch's default)."""
    dist: DistConfig = DistConfig()
    clip: ClipConfig = ClipConfig()
    """CLIP objective settings (method ``clip`` only)."""
    mae: MaeConfig = MaeConfig()
    """MAE objective settings (method ``mae`` only)."""

    @field_validator("micro_batch", mode="before")
    @classmethod
    def _auto_micro_batch(cls, v: object) -> object:
        if isinstance(v, str) and v != "auto":
            raise ValueError(f"expected a number of images or 'auto', got {v!r}")
        return None if v == "auto" else v

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        for name in ("global_scale", "local_scale"):
            lo, hi = getattr(self.crops, name)
            if not 0 < lo <= hi <= 1:
                raise ValueError(
                    f"crops.{name} must satisfy 0 < low <= high <= 1, got ({lo}, {hi})"
                )
        for name in ("clip", "mae"):
            lo, hi = getattr(self, name).crop_scale
            if not 0 < lo <= hi <= 1:
                raise ValueError(
                    f"{name}.crop_scale must satisfy 0 < low <= high <= 1, got ({lo}, {hi})"
                )
        if not all(0 <= b < 1 for b in self.adam_betas):
            raise ValueError(f"adam_betas must each be in [0, 1), got {self.adam_betas}")
        lo, hi = self.mask_ratio
        if not 0 <= lo <= hi < 1:
            raise ValueError(f"mask_ratio must satisfy 0 <= low <= high < 1, got ({lo}, {hi})")
        return self

    def peak_lr(self, width: int | None = None) -> float:
        """The peak learning rate for a backbone of ``width`` (None: before any width rule)."""
        ratio = self.batch_size / 1024
        scale = {"sqrt": ratio**0.5, "linear": ratio, "none": 1.0}[self.lr_scaling]
        if self.lr_width_ref is not None and width is not None:
            scale *= self.lr_width_ref / width
        return self.base_lr * scale


AUTO_FSDP_PARAMS = 1_000_000_000
"""'auto' strategy: FSDP2 from this many backbone parameters (Web-DINO 1B and up), DDP below."""


def resolve_strategy(strategy: str, backbone_params: int) -> str:
    """'ddp' | 'fsdp' for a configured strategy ('auto' | 'ddp' | 'fsdp')."""
    if strategy == "auto":
        return "fsdp" if backbone_params >= AUTO_FSDP_PARAMS else "ddp"
    return strategy
