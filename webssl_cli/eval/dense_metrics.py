"""Metrics of the dense probes, computed as the protocols compute them.

Segmentation (mmsegmentation, as DINOv2 reports ADE20K): per class, intersection and union are
summed over the whole dataset (pixels whose label is the ignore label do not count), IoU =
intersection / union, and mIoU is the mean over the classes whose union is not empty. The
per-image counts are kept, so that a bootstrap over images recomputes that ratio.

Depth (the monocular-depth toolbox DINOv2 evaluates NYUv2 with): per image, over the valid
pixels (ground truth in (min_depth, max_depth], inside the evaluation crop), the prediction
clipped to [min_depth, max_depth]; RMSE = sqrt(mean((d - d*)^2)), AbsRel = mean(|d - d*| / d*),
δ1 = share of pixels with max(d / d*, d* / d) < 1.25; the reported value is the mean over images.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from webssl_cli.outcomes import ratio_miou

# The Eigen crop of NYUv2 at 480 x 640 (rows 45:471, cols 41:601), as fractions of the size.
EIGEN_CROP = (45 / 480, 471 / 480, 41 / 640, 601 / 640)


def seg_counts(
    pred: np.ndarray, label: np.ndarray, n_classes: int, ignore_index: int = 255
) -> tuple[np.ndarray, np.ndarray]:
    """One image's (intersection, union) per class, int64 (n_classes,); pixels labelled
    ``ignore_index`` (or with a label outside [0, n_classes)) are left out of both."""
    if pred.shape != label.shape:
        raise ValueError(f"prediction {pred.shape} and label {label.shape} differ in size")
    valid = (label != ignore_index) & (label >= 0) & (label < n_classes)
    p, t = pred[valid].astype(np.int64), label[valid].astype(np.int64)
    inter = np.bincount(t[p == t], minlength=n_classes)[:n_classes]
    area_p = np.bincount(np.clip(p, 0, n_classes), minlength=n_classes + 1)[:n_classes]
    area_t = np.bincount(t, minlength=n_classes)[:n_classes]
    return inter, area_p + area_t - inter


def miou(inter: np.ndarray, union: np.ndarray) -> float:
    """Mean IoU over the classes with a non-empty union, from counts summed over images
    (``inter``, ``union``: (n_classes,), or (n_images, n_classes) and summed here)."""
    return ratio_miou(inter, union)


def miou_shares(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """Per image (n_images,), its share of the dataset's mIoU: n_images / classes x the sum over
    classes of its intersection / the class's total union. Their mean is ``miou`` exactly (the
    per-example outcome contract); resampling images with the unions held fixed linearises the
    ratio, so intervals of mIoU itself come from ``bootstrap_miou``."""
    i = np.asarray(inter, np.float64)
    total = np.asarray(union, np.float64).sum(0)
    present = total > 0
    if not present.any():
        return np.zeros(len(i))
    return len(i) / present.sum() * (i[:, present] / total[present]).sum(1)  # type: ignore[no-any-return]


def bootstrap_miou(
    inter: np.ndarray, union: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(mIoU, lo, hi): percentile bootstrap over images, mIoU recomputed from the resampled
    images' summed counts in each replicate."""
    i = np.asarray(inter, np.float64)
    u = np.asarray(union, np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(i), size=(n_boot, len(i)))
    reps = np.array([miou(i[r], u[r]) for r in idx])
    a = (1 - level) / 2
    return miou(i, u), float(np.nanquantile(reps, a)), float(np.nanquantile(reps, 1 - a))


def crop_mask(shape: tuple[int, int], crop: str) -> np.ndarray:
    """Pixels inside the evaluation crop: ``none`` (all) or ``eigen`` (scaled to the size)."""
    h, w = shape
    m = np.zeros((h, w), bool)
    if crop == "none":
        m[:] = True
    elif crop == "eigen":
        t, b, left, r = EIGEN_CROP
        m[round(t * h) : round(b * h), round(left * w) : round(r * w)] = True
    else:
        raise ValueError(f"unknown crop {crop!r}; valid: none, eigen")
    return m


def depth_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    min_depth: float = 1e-3,
    max_depth: float = 10.0,
    crop: str = "none",
) -> dict[str, Any] | None:
    """One image's RMSE, AbsRel and δ1 (and its valid pixel count ``n``); None when no pixel is
    valid. Invalid: ground truth 0 (missing), <= min_depth or > max_depth, or outside the crop."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and depth {gt.shape} differ in size")
    valid = (gt > min_depth) & (gt <= max_depth) & np.isfinite(gt) & crop_mask(gt.shape, crop)
    if not valid.any():
        return None
    d = np.clip(pred[valid].astype(np.float64), min_depth, max_depth)
    t = gt[valid].astype(np.float64)
    ratio = np.maximum(d / t, t / d)
    return {
        "rmse": float(np.sqrt(np.mean((d - t) ** 2))),
        "absrel": float(np.mean(np.abs(d - t) / t)),
        "delta1": float(np.mean(ratio < 1.25)),
        "n": int(valid.sum()),
    }
