"""Settings of the language-supervised (CLIP) and masked-image-modelling (MAE) objectives.

Pure pydantic, part of ``TrainConfig`` (``train.clip`` and ``train.mae``); a DINOv2 cell ignores
both. The shared optimisation fields (batch size, lr, warmup, weight decay) stay in
``TrainConfig``; the method's recipe sets them through its preset.
"""

from __future__ import annotations

from pydantic import Field

from webssl_cli.specs.base import Frozen


class ClipConfig(Frozen):
    text_width: int | None = Field(None, ge=8)
    """Width of the text transformer; None: chosen from the vision tower's width."""
    text_layers: int | None = Field(None, ge=1)
    """Depth of the text transformer; None: chosen from the vision tower's size."""
    text_heads: int | None = Field(None, ge=1)
    """Attention heads of the text transformer; None: text_width / 64."""
    embed_dim: int | None = Field(None, ge=8)
    """Dimension of the joint image-text embedding; None: chosen from the vision tower."""
    context_length: int = Field(77, ge=4)
    """Caption tokens (start and end tokens included); longer captions are truncated."""
    vocab_size: int = Field(49408, ge=260)
    """Target size of the byte-level BPE vocabulary built from the training captions (the
    256 bytes and the special tokens included); a small corpus may yield fewer merges."""
    init_logit_scale: float = 2.659260036932778
    """Initial log of the logit multiplier: log(1 / 0.07)."""
    max_logit_scale: float = 4.605170185988092
    """Clamp of the learnable log multiplier: log(100)."""
    gather_with_grad: bool = True
    """Gather features from all ranks with gradients flowing back through the gather."""
    crop_scale: tuple[float, float] = (0.9, 1.0)
    """RandomResizedCrop area range of the single training view."""


class MaeConfig(Frozen):
    mask_ratio: float = Field(0.75, gt=0, lt=1)
    """Fraction of patches removed from the encoder's input."""
    decoder_width: int = Field(512, ge=8)
    decoder_layers: int = Field(8, ge=1)
    decoder_heads: int = Field(16, ge=1)
    norm_pix_loss: bool = True
    """Regress per-patch normalised pixels (mean/variance per target patch)."""
    crop_scale: tuple[float, float] = (0.2, 1.0)
    """RandomResizedCrop area range of the single training view."""
