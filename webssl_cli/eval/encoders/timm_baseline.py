"""Optional baselines from timm (``timm:<model name>[@<local weights file>]``)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from webssl_cli.errors import UserError
from webssl_cli.eval.encoders.base import Encoder


class _TimmBackbone(nn.Module):
    """timm ViTs: DINOv2-style ``get_intermediate_layers`` over ``forward_intermediates``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def get_intermediate_layers(
        self, x: Tensor, n: int, return_class_token: bool = True, norm: bool = True
    ) -> Any:
        _, inter = self.model.forward_intermediates(
            x, indices=n, norm=norm, output_fmt="NLC", return_prefix_tokens=True
        )
        return [(p, c[:, 0]) for p, c in inter]


def load_timm(spec: str) -> Encoder:
    """``timm:<model name>[@<local weights file>]`` (OpenCLIP towers exist in timm too)."""
    try:
        import timm
    except ImportError as exc:
        raise UserError(f"{spec}: timm baselines need `pip install timm` (not installed)") from exc
    name, _, weights = spec.removeprefix("timm:").partition("@")
    kwargs: dict[str, Any] = {"pretrained": bool(weights)}
    if weights:
        kwargs["pretrained_cfg_overlay"] = {"file": weights}
    model = timm.create_model(name, num_classes=0, **kwargs)
    size = model.patch_embed.img_size[0]
    patch = model.patch_embed.patch_size[0]
    return Encoder(
        _TimmBackbone(model), name=name, width=model.num_features, patch=patch, img_size=size
    )
