"""Our own checkpoints: ``train/teacher_backbone.pt`` ({"model", "spec", "state_dict"}),
read and written, and the randomly initialised encoder of a registry size (the baseline)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from webssl_cli.errors import UserError
from webssl_cli.eval.encoders.base import Encoder, build_vit, spec_from_dict
from webssl_cli.specs.registry import ModelSpec


def load_own(path: Path) -> Encoder:
    """``train/teacher_backbone.pt``: {"model": name, "spec": asdict(ModelSpec), "state_dict"}."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: one line for the user
        raise UserError(
            f"{path}: not a readable webssl backbone checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "spec" not in ckpt:
        raise UserError(
            f"{path}: expected keys 'model', 'spec', 'state_dict' (a train/teacher_backbone.pt)"
        )
    spec = spec_from_dict(ckpt["spec"])
    model = build_vit(spec, ckpt["state_dict"])
    return Encoder(
        model,
        name=str(ckpt.get("model", spec.name)),
        width=spec.width,
        patch=spec.patch,
        img_size=spec.img_size,
    )


def save_own(model: nn.Module, spec: ModelSpec, path: Path) -> None:
    """Write a backbone in the teacher_backbone.pt format (used by tests and exports)."""
    import io

    from webssl_cli.rundir import atomic_write_bytes

    buf = io.BytesIO()
    torch.save(
        {"model": spec.name, "spec": dataclasses.asdict(spec), "state_dict": model.state_dict()},
        buf,
    )
    atomic_write_bytes(path, buf.getvalue())


def random_encoder(model: str, seed: int = 0) -> Encoder:
    """A randomly initialised encoder of a registry size (the untrained baseline)."""
    from webssl_cli.specs.registry import get_model
    from webssl_cli.train.vit import build_backbone

    spec = get_model(model)
    torch.manual_seed(seed)
    return Encoder(
        build_backbone(spec, layerscale=spec.layerscale),
        name=f"{spec.name}-random",
        width=spec.width,
        patch=spec.patch,
        img_size=spec.img_size,
    )
