"""Self-supervised objectives behind ``train.objective.Objective``."""

from __future__ import annotations

from webssl_cli.specs.registry import ModelSpec
from webssl_cli.specs.train import TrainConfig
from webssl_cli.train.objective import Objective, RunContext


def build_objective(spec: ModelSpec, cfg: TrainConfig, ctx: RunContext) -> Objective:
    """The objective of the cell's method (``ctx.method``); each is imported on first use."""
    if ctx.method == "mae":
        from webssl_cli.train.objectives.mae import MAE

        return MAE(spec, cfg, ctx)
    if ctx.method == "clip":
        from webssl_cli.train.objectives.clip import CLIP

        return CLIP(spec, cfg, ctx)
    if ctx.method != "webdino":
        raise ValueError(f"unknown method {ctx.method!r}; valid: webdino, clip, mae")
    from webssl_cli.train.objectives.dinov2 import DINOv2

    return DINOv2(spec, cfg, ctx)
