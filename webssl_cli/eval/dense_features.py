"""Frozen patch-token grids for the dense probes (segmentation, depth).

Each image is resized as a whole to ``size`` x ``size`` (a multiple of the patch; no crop, so
that the prediction covers the whole label map) and encoded once; the last ``n_blocks`` blocks'
final-normed patch tokens are kept as a grid, with their CLS tokens, in half precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from webssl_cli import device as dev
from webssl_cli.eval.features import decode_rgb


@dataclass
class DenseFeatures:
    """``patches`` (N, n_blocks, D, h, w) and ``cls`` (N, n_blocks, D), oldest block first."""

    patches: Tensor
    cls: Tensor

    def inputs(self, n_blocks: int, with_cls: bool) -> Tensor:
        """The head's input grid (N, C, h, w): the last ``n_blocks`` blocks' patch tokens
        concatenated over channels, each followed by its CLS token broadcast over the grid
        when ``with_cls`` (DINOv2's depth head)."""
        p = self.patches[:, -n_blocks:].float()  # (N, n, D, h, w)
        if with_cls:
            c = self.cls[:, -n_blocks:].float()[..., None, None].expand_as(p)
            p = torch.cat([p, c], dim=2)
        return p.flatten(1, 2)


def resize_image(rgb: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """The whole image resized to (3, size, size), normalised."""
    import cv2

    h, w = rgb.shape[:2]
    interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_CUBIC
    x = torch.from_numpy(np.ascontiguousarray(cv2.resize(rgb, (size, size), interpolation=interp)))
    x = x.permute(2, 0, 1).float() / 255.0
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


@torch.no_grad()
def extract_dense(encoder: Any, images: Sequence[bytes], size: int, *, n_blocks: int = 4,
                  batch_size: int = 32) -> DenseFeatures:  # fmt: skip
    """Patch-token grids of ``images`` from the frozen ``encoder`` (on its device)."""
    size = max(encoder.patch, size // encoder.patch * encoder.patch)
    g = size // encoder.patch
    device = encoder.device
    amp = dev.autocast_dtype(device)
    pats, clss = [], []
    for i in range(0, len(images), batch_size):
        x = torch.stack([resize_image(decode_rgb(b), size, encoder.mean, encoder.std)
                         for b in images[i : i + batch_size]]).to(device)  # fmt: skip
        with dev.autocast(device, amp):
            outs = encoder.blocks(x, n_blocks)  # [(cls (B, D), patches (B, g*g, D))]
        p = torch.stack([t.float().transpose(1, 2).reshape(len(x), -1, g, g) for _, t in outs], 1)
        pats.append(p.half().cpu())
        clss.append(torch.stack([c.float() for c, _ in outs], 1).half().cpu())
    return DenseFeatures(torch.cat(pats), torch.cat(clss))


def resize_target(t: np.ndarray, size: int) -> Tensor:
    """A label or depth map resized to (size, size) by nearest neighbour (no blending of class
    ids, and invalid depth stays invalid)."""
    import cv2

    return torch.from_numpy(cv2.resize(t, (size, size), interpolation=cv2.INTER_NEAREST))
