"""What every encoder source shares: the ``Encoder`` interface and building our ViT from a
state dict. ``Encoder.blocks(x, n)`` gives the final-normed (CLS, patch tokens) of the last
``n`` blocks; the probes and the MLLM use nothing else.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from webssl_cli.errors import UserError
from webssl_cli.specs.registry import ModelSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Encoder(nn.Module):
    """A frozen image encoder: normalised pixels (B, 3, H, W) -> per-block (CLS, patches)."""

    def __init__(
        self, backbone: nn.Module, *, name: str, width: int, patch: int, img_size: int
    ) -> None:
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)
        self.name = name
        self.width = width
        self.patch = patch
        self.img_size = img_size
        self.mean = IMAGENET_MEAN
        self.std = IMAGENET_STD

    @property
    def device(self) -> torch.device:
        """Where the weights are (``.to(device)`` moves them); features are computed there."""
        return next(self.backbone.parameters()).device

    @torch.no_grad()
    def blocks(self, x: Tensor, n: int = 1) -> list[tuple[Tensor, Tensor]]:
        """(CLS (B, D), patches (B, N, D)) of the last ``n`` blocks, each through the final norm."""
        outs = self.backbone.get_intermediate_layers(x, n, return_class_token=True, norm=True)
        return [(cls, patches) for patches, cls in outs]

    @torch.no_grad()
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.blocks(x, 1)[0]


def spec_from_dict(d: dict[str, Any]) -> ModelSpec:
    fields = {f.name for f in dataclasses.fields(ModelSpec)}
    return ModelSpec(**{k: v for k, v in d.items() if k in fields})


def build_vit(spec: ModelSpec, state_dict: dict[str, Tensor]) -> nn.Module:
    from webssl_cli.train.vit import build_backbone

    # LayerScale is present iff the state dict has it; its init value is then overwritten.
    has_ls = any(k.endswith("ls1.gamma") for k in state_dict)
    model = build_backbone(spec, layerscale=(spec.layerscale or 1e-5) if has_ls else None)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise UserError(
            f"checkpoint does not match model {spec.name}: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return model
