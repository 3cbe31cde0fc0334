"""iBOT block masks (BEiT-style rectangles), as DINOv2 draws them for the global crops.

A fraction ``mask_prob`` of the images get masks whose ratios are spread evenly over
``mask_ratio`` (one uniform draw per slice of the range); the rest get none. The draws come from
a numpy Generator, so masks are a pure function of the seed the loop passes (seed, step).
"""

from __future__ import annotations

import math

import numpy as np


def block_mask(
    rng: np.random.Generator,
    grid: tuple[int, int],
    n_masked: int,
    min_block: int = 4,
    max_block_frac: float = 0.5,
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
) -> np.ndarray:
    """A (h, w) bool mask with about ``n_masked`` patches covered by random rectangles."""
    h, w = grid
    mask = np.zeros((h, w), dtype=bool)
    max_block = max(int(max_block_frac * h * w), 1)
    log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
    count = 0
    while count < n_masked:
        budget = min(n_masked - count, max_block)
        added = 0
        for _ in range(10):  # a few tries to place one rectangle that adds something
            area = rng.uniform(min(min_block, budget), budget)
            ratio = math.exp(rng.uniform(*log_aspect))
            bh = int(round(math.sqrt(area * ratio)))
            bw = int(round(math.sqrt(area / ratio)))
            if bh < 1 or bw < 1 or bh >= h or bw >= w:
                continue
            top = int(rng.integers(0, h - bh + 1))
            left = int(rng.integers(0, w - bw + 1))
            window = mask[top : top + bh, left : left + bw]
            new = bh * bw - int(window.sum())
            if 0 < new <= budget:
                window[:] = True
                added = new
                break
        if added == 0:
            break
        count += added
    return mask


def batch_masks(
    rng: np.random.Generator,
    n_images: int,
    grid: tuple[int, int],
    mask_prob: float,
    ratio: tuple[float, float],
) -> np.ndarray:
    """(n_images, h*w) bool masks for the global crops of one batch, order shuffled."""
    h, w = grid
    n = h * w
    n_masked_images = int(n_images * mask_prob)
    edges = np.linspace(ratio[0], ratio[1], n_masked_images + 1)
    masks = [
        block_mask(rng, grid, int(n * rng.uniform(edges[i], edges[i + 1]))).reshape(n)
        for i in range(n_masked_images)
    ]
    masks += [np.zeros(n, dtype=bool)] * (n_images - n_masked_images)
    out = np.stack(masks) if masks else np.zeros((0, n), dtype=bool)
    return out[rng.permutation(n_images)]
