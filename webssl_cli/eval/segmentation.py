"""DINOv2's linear semantic-segmentation probe on frozen patch tokens.

Head ("linear"): batch norm over the channels, then a 1x1 convolution to the classes, on the
last block's patch tokens; "multilayer": the same on the last four blocks' patch tokens
concatenated over channels (DINOv2's "+ms" head without its multi-scale test-time
augmentation). Logits are upsampled bilinearly to the label map, the loss is cross-entropy with
the ignore label left out. Trained with AdamW (weight decay 1e-4, as DINOv2's ADE20K config) and
a cosine schedule on features computed once; every learning rate of the grid trains together,
the best mIoU on val is reported. Inference resizes each whole image to the evaluation size
(DINOv2 slides 512-px windows over ADE20K images; resize inference is cheaper and the same on
square images at the evaluation size), upsamples the logits to the label's own size and counts
intersection and union per class (``dense_metrics``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from webssl_cli.eval.dense_features import DenseFeatures, resize_target
from webssl_cli.eval.dense_metrics import miou, seg_counts

HEADS = {"linear": 1, "multilayer": 4}


class BNLinearHead(nn.Module):
    """BatchNorm over channels + 1x1 convolution: (B, C, h, w) -> (B, K, h, w)."""

    def __init__(self, channels: int, outputs: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.conv = nn.Conv2d(channels, outputs, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.bn(x))  # type: ignore[no-any-return]


@dataclass
class SegResult:
    lr: float
    miou: float
    grid: dict[str, float]
    inter: np.ndarray  # (n_val, K): per val image, the best head's intersection per class
    union: np.ndarray


def train_heads(
    x: Tensor, targets: Tensor, n_classes: int, lrs: tuple[float, ...], *, epochs: int,
    batch_size: int, ignore_index: int, seed: int, weight_decay: float = 1e-4,
) -> list[BNLinearHead]:  # fmt: skip
    """One head per learning rate on inputs ``x`` (N, C, h, w) and labels (N, L, L)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the heads' initial weights
    heads = [BNLinearHead(x.shape[1], n_classes) for _ in lrs]
    opt = torch.optim.AdamW([{"params": h.parameters(), "lr": lr, "base": lr}
                             for h, lr in zip(heads, lrs, strict=True)], weight_decay=weight_decay)  # fmt: skip
    bs = min(batch_size, len(x))
    steps, step = epochs * math.ceil(len(x) / bs), 0
    size = targets.shape[-2:]
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(order), bs):
            idx = order[i : i + bs]
            if len(idx) < 2:  # batch norm needs two samples
                continue
            for g in opt.param_groups:
                g["lr"] = g["base"] * 0.5 * (1 + math.cos(math.pi * step / steps))
            xb, yb = x[idx], targets[idx].long()
            loss = sum(F.cross_entropy(F.interpolate(h(xb), size=size, mode="bilinear",
                                                     align_corners=False), yb, ignore_index=ignore_index)
                       for h in heads)  # fmt: skip
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            opt.step()
            step += 1
    return heads


@torch.no_grad()
def predict(head: nn.Module, x: Tensor, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    """Class maps at each image's own label size (logits upsampled bilinearly)."""
    head.eval()
    out = []
    for i in range(len(x)):
        logits = head(x[i : i + 1])
        out.append(F.interpolate(logits, size=shapes[i], mode="bilinear", align_corners=False)
                   .argmax(1)[0].numpy().astype(np.int64))  # fmt: skip
    return out


def seg_probe(
    train: DenseFeatures, train_labels: list[np.ndarray], val: DenseFeatures,
    val_labels: list[np.ndarray], *, n_classes: int, head: str = "linear",
    lrs: tuple[float, ...] = (1e-3,), epochs: int = 10, batch_size: int = 16,
    label_size: int | None = None, ignore_index: int = 255, seed: int = 0,
) -> SegResult:  # fmt: skip
    """Train the heads on ``train`` and score them on ``val`` (labels at their own size)."""
    n_blocks = HEADS[head]
    xtr, xva = train.inputs(n_blocks, False), val.inputs(n_blocks, False)
    size = label_size or xtr.shape[-1] * 4
    ytr = torch.stack([resize_target(t, size) for t in train_labels]).long()
    ytr[ytr >= n_classes] = ignore_index  # labels past the scored classes are not trained on
    heads = train_heads(xtr, ytr, n_classes, lrs, epochs=epochs, batch_size=batch_size,
                        ignore_index=ignore_index, seed=seed)  # fmt: skip
    shapes = [tuple(t.shape[:2]) for t in val_labels]
    grid, counts = {}, {}
    for h, lr in zip(heads, lrs, strict=True):
        preds = predict(h, xva, shapes)  # type: ignore[arg-type]
        c = [
            seg_counts(p, t, n_classes, ignore_index)
            for p, t in zip(preds, val_labels, strict=True)
        ]
        inter, union = np.stack([a for a, _ in c]), np.stack([b for _, b in c])
        grid[f"lr{lr:g}"] = miou(inter, union)
        counts[lr] = (inter, union)
    best = max(lrs, key=lambda lr: np.nan_to_num(grid[f"lr{lr:g}"], nan=-1.0))
    return SegResult(best, grid[f"lr{best:g}"], grid, *counts[best])
