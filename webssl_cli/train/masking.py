"""iBOT block masks (BEiT-style rectangles), as DINOv2 draws them for the global crops.

A fraction ``mask_prob`` of the images get masks whose ratios are spread evenly over
``mask_ratio`` (one uniform draw per slice of the range); the rest get none. The draws come from
a numpy Generator, so masks are a pure function of (seed, step, crop).
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


def crop_masks(
    seed: int,
    it: int,
    n_crops: int,
    crops: np.ndarray,
    grid: tuple[int, int],
    mask_prob: float,
    ratio: tuple[float, float],
) -> np.ndarray:
    """(len(crops), h*w) bool masks of the global crops ``crops`` (indices into the step's
    ``n_crops`` global crops, view-major) at step ``it``.

    A fraction ``mask_prob`` of the step's crops are masked, with ratios spread evenly over
    ``ratio`` (one uniform draw per slice of the range). Which crop gets which slice comes from
    a permutation drawn from (seed, it); each mask from (seed, it, crop): a rank draws only its
    own crops, and any world size gives the same mask to the same crop.
    """
    h, w = grid
    n = h * w
    n_masked = int(n_crops * mask_prob)
    edges = np.linspace(ratio[0], ratio[1], n_masked + 1)
    slot = np.random.default_rng([seed, it, 0x1B07]).permutation(n_crops)  # crop -> slot
    out = np.zeros((len(crops), n), dtype=bool)
    for i, crop in enumerate(crops):
        if slot[crop] < n_masked:
            rng = np.random.default_rng([seed, it, 0x1B07, int(crop)])
            r = rng.uniform(edges[slot[crop]], edges[slot[crop] + 1])
            out[i] = block_mask(rng, grid, int(n * r)).reshape(n)
    return out
