"""Frozen encoders behind one interface: our own checkpoints (``own``), Hugging Face
``Dinov2Model`` directories (``hf``), CLIP / SigLIP vision towers (``hf_clip``) and optional
timm baselines (``timm_baseline``), with
``load_encoder`` choosing among them. Shared types live in ``base``.
"""

from __future__ import annotations

from pathlib import Path

from webssl_cli.errors import UserError
from webssl_cli.eval.encoders.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Encoder,
    build_vit,
    spec_from_dict,
)
from webssl_cli.eval.encoders.hf import (
    export_hf,
    hf_config_from_spec,
    hf_ffn_hidden,
    hf_to_ours,
    load_hf_dinov2,
    ours_to_hf,
    spec_from_hf_config,
)
from webssl_cli.eval.encoders.hf_clip import hf_model_type, load_hf_clip
from webssl_cli.eval.encoders.own import load_own, random_encoder, save_own
from webssl_cli.eval.encoders.timm_baseline import load_timm

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "Encoder", "build_vit", "export_hf", "hf_config_from_spec",
    "hf_ffn_hidden", "hf_to_ours", "load_encoder", "load_hf_clip", "load_hf_dinov2", "load_own", "load_timm",
    "ours_to_hf", "random_encoder", "save_own", "spec_from_dict", "spec_from_hf_config",
]  # fmt: skip


def load_encoder(source: str | Path) -> Encoder:
    """An encoder from ``source``: our ``.pt`` checkpoint, an HF Dinov2, CLIP or SigLIP
    directory, or ``timm:...``."""
    s = str(source)
    if s.startswith("timm:"):
        return load_timm(s)
    path = Path(s)
    if path.is_dir() and (path / "config.json").exists():
        if hf_model_type(path) in ("clip", "clip_vision_model", "siglip", "siglip_vision_model"):
            return load_hf_clip(path)
        return load_hf_dinov2(path)
    if path.is_file():
        return load_own(path)
    raise UserError(
        f"{s}: not an encoder; give a teacher_backbone.pt, a Dinov2Model, CLIPVisionModel or SiglipVisionModel directory, or timm:<name>"
    )
