"""DINOv2's linear monocular-depth probe on frozen patch tokens (its NYUv2 protocol).

Head: batch norm + 1x1 convolution on the patch tokens each concatenated with the CLS token of
its block (last block: "linear"; last four: "multilayer"). ``bins`` (DINOv2: 256 uniform bins
between min and max depth, "linear" normalisation): the outputs, upsampled 4x bilinearly
(``upsample``; 1 skips it, 16x cheaper on a CPU), go
through ReLU + 0.1 and are normalised to sum to one; depth is their weighted sum of the bin
centres. ``regression``: one output, depth = ReLU(x) + min_depth. Depth is upsampled bilinearly
to the target. Loss: DINOv2's scale-invariant log loss, sqrt(var(g) + 0.15 mean(g)^2) with
g = log d - log d* over valid pixels (the first tenth of the steps on the mean term alone, its
warm-up; its gradient-matching term is left out). AdamW with a cosine schedule over features
computed once; every learning rate trains together and the lowest val RMSE is reported.
Metrics (``dense_metrics.depth_metrics``) per image at the target's own size, averaged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from webssl_cli.eval.dense_features import DenseFeatures, resize_target
from webssl_cli.eval.dense_metrics import depth_metrics
from webssl_cli.eval.segmentation import HEADS, BNLinearHead

METRICS = ("rmse", "absrel", "delta1")


class DepthHead(nn.Module):
    """Patch-grid features (B, C, h, w) -> depth in metres (B, 1, h', w')."""

    def __init__(self, channels: int, mode: str, n_bins: int, min_depth: float,
                 max_depth: float, upsample: int = 4) -> None:  # fmt: skip
        super().__init__()
        self.mode, self.min_depth, self.upsample = mode, min_depth, upsample
        self.head = BNLinearHead(channels, n_bins if mode == "bins" else 1)
        self.register_buffer("centres", torch.linspace(min_depth, max_depth, n_bins))

    def forward(self, x: Tensor) -> Tensor:
        y = self.head(x)
        if self.mode == "regression":
            return F.relu(y) + self.min_depth
        if self.upsample > 1:
            y = F.interpolate(y, scale_factor=self.upsample, mode="bilinear", align_corners=False)
        p = F.relu(y) + 0.1
        p = p / p.sum(1, keepdim=True)
        return torch.einsum("bkhw,k->bhw", p, self.centres)[:, None]  # type: ignore[no-any-return]


def sig_loss(pred: Tensor, gt: Tensor, valid: Tensor, warm: bool) -> Tensor:
    g = torch.log(pred[valid].clamp_min(1e-6)) - torch.log(gt[valid])
    if g.numel() < 2:
        return pred.sum() * 0.0
    if warm:
        return torch.sqrt(0.15 * g.mean() ** 2 + 1e-12)
    return torch.sqrt(g.var() + 0.15 * g.mean() ** 2 + 1e-12)


@dataclass
class DepthResult:
    lr: float
    scores: dict[str, float]  # mean over images of each metric
    grid: dict[str, float]  # RMSE of every learning rate
    per_image: list[dict[str, Any] | None]  # per val image (None: no valid pixel)


def depth_probe(
    train: DenseFeatures, train_depth: list[np.ndarray], val: DenseFeatures,
    val_depth: list[np.ndarray], *, head: str = "linear", mode: str = "bins", n_bins: int = 256,
    lrs: tuple[float, ...] = (1e-3,), epochs: int = 10, batch_size: int = 16,
    label_size: int | None = None, min_depth: float = 1e-3, max_depth: float = 10.0,
    crop: str = "none", upsample: int = 4, seed: int = 0,
) -> DepthResult:  # fmt: skip
    n_blocks = HEADS[head]
    xtr, xva = train.inputs(n_blocks, True), val.inputs(n_blocks, True)
    size = label_size or xtr.shape[-1] * 4
    ytr = torch.stack([resize_target(t, size) for t in train_depth]).float()[:, None]
    vtr = (ytr > min_depth) & (ytr <= max_depth)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    heads = [DepthHead(xtr.shape[1], mode, n_bins, min_depth, max_depth, upsample) for _ in lrs]
    opt = torch.optim.AdamW([{"params": h.parameters(), "lr": lr, "base": lr}
                             for h, lr in zip(heads, lrs, strict=True)], weight_decay=1e-4)  # fmt: skip
    bs = min(batch_size, len(xtr))
    steps, step = epochs * math.ceil(len(xtr) / bs), 0
    for _ in range(epochs):
        order = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(order), bs):
            idx = order[i : i + bs]
            if len(idx) < 2:
                continue
            for g in opt.param_groups:
                g["lr"] = g["base"] * 0.5 * (1 + math.cos(math.pi * step / steps))
            xb, yb, vb = xtr[idx], ytr[idx], vtr[idx]
            warm = step < steps // 10
            loss = sum(sig_loss(F.interpolate(h(xb), size=(size, size), mode="bilinear",
                                              align_corners=False), yb, vb, warm) for h in heads)  # fmt: skip
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            opt.step()
            step += 1
    results: dict[float, list[dict[str, Any] | None]] = {}
    grid = {}
    with torch.no_grad():
        for h, lr in zip(heads, lrs, strict=True):
            h.eval()
            per = []
            for i, t in enumerate(val_depth):
                d = F.interpolate(h(xva[i : i + 1]), size=t.shape[:2], mode="bilinear",
                                  align_corners=False)[0, 0].numpy()  # fmt: skip
                per.append(depth_metrics(d, t, min_depth=min_depth, max_depth=max_depth, crop=crop))
            results[lr] = per
            grid[f"lr{lr:g}"] = mean_metrics(per)["rmse"]
    best = min(lrs, key=lambda lr: np.nan_to_num(grid[f"lr{lr:g}"], nan=np.inf))
    return DepthResult(best, mean_metrics(results[best]), grid, results[best])


def mean_metrics(per: list[dict[str, Any] | None]) -> dict[str, float]:
    """The dataset's metrics: each the mean over the images that have valid pixels."""
    ok = [p for p in per if p is not None]
    return {m: float(np.mean([p[m] for p in ok])) if ok else float("nan") for m in METRICS}
