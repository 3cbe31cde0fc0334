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


# (vision width up to, text width, layers, heads, embed dim): OpenCLIP's / MetaCLIP's model
# configurations pair the text tower with the vision tower this way (ViT-B/16, ViT-L/14,
# ViT-H/14, ViT-bigG/14). Wider vision towers (Web-DINO 1B-7B) keep bigG's text tower.
TEXT_TOWERS: tuple[tuple[int, int, int, int, int], ...] = (
    (768, 512, 12, 8, 512),
    (1024, 768, 12, 12, 768),
    (1280, 1024, 24, 16, 1024),
)
BIGG_TEXT_TOWER = (1280, 32, 20, 1280)


def clip_text_tower(vision_width: int) -> tuple[int, int, int, int]:
    """(text width, layers, heads, joint embedding dim) paired with a vision tower of
    ``vision_width``, as OpenCLIP/MetaCLIP pair them: ViT-B/16 (768) -> 512w 12L 8h embed 512,
    ViT-L/14 (1024) -> 768w 12L 12h embed 768, ViT-H/14 (1280) -> 1024w 24L 16h embed 1024,
    wider (ViT-bigG, Web-DINO 1B-7B) -> 1280w 32L 20h embed 1280. Narrower than ViT-B (CPU
    models): the text tower has the vision width, 12 layers, width/64 heads (at least 1) and
    embeds into the vision width, as OpenCLIP's ViT-S/16 does."""
    if vision_width < 512:
        return vision_width, 12, max(1, vision_width // 64), vision_width
    for up_to, width, layers, heads, embed in TEXT_TOWERS:
        if vision_width <= up_to:
            return width, layers, heads, embed
    return BIGG_TEXT_TOWER


def resolved_text_tower(cfg: ClipConfig, vision_width: int) -> tuple[int, int, int, int]:
    """The text tower a CLIP cell trains: ``cfg``'s explicit sizes, the rest from
    ``clip_text_tower``; heads default to width / 64 when the width is set."""
    width, layers, heads, embed = clip_text_tower(vision_width)
    if cfg.text_width is not None:
        width, heads = cfg.text_width, max(1, cfg.text_width // 64)
    return (
        width,
        cfg.text_layers or layers,
        cfg.text_heads or heads,
        cfg.embed_dim or embed,
    )
