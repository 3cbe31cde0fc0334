"""mIoU, RMSE, AbsRel and δ1 against values computed by hand (ignore labels, invalid depth)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from webssl_cli.eval.dense_metrics import (
    bootstrap_miou,
    crop_mask,
    depth_metrics,
    miou,
    miou_shares,
    seg_counts,
)


def test_seg_counts_and_miou_by_hand() -> None:
    # image 1: 2x3, one pixel ignored (255)
    label1 = np.array([[0, 0, 1], [1, 2, 255]])
    pred1 = np.array([[0, 1, 1], [1, 2, 0]])
    i1, u1 = seg_counts(pred1, label1, 3)
    # class 0: pred {(0,0)} & label {(0,0),(0,1)} -> I 1, U 2 (the ignored pixel's 0 is not counted)
    # class 1: pred {(0,1),(0,2),(1,0)}, label {(0,2),(1,0)} -> I 2, U 3; class 2: I 1, U 1
    assert i1.tolist() == [1, 2, 1] and u1.tolist() == [2, 3, 1]
    # image 2: class 2 absent everywhere, class 0 predicted but not present
    label2 = np.array([[1, 1]])
    pred2 = np.array([[0, 1]])
    i2, u2 = seg_counts(pred2, label2, 3)
    assert i2.tolist() == [0, 1, 0] and u2.tolist() == [1, 2, 0]
    # dataset: class 0: 1/3, class 1: 3/5, class 2: 1/1 -> mean
    inter, union = np.stack([i1, i2]), np.stack([u1, u2])
    assert miou(inter, union) == pytest.approx((1 / 3 + 3 / 5 + 1) / 3)
    # a class with an empty union is left out of the mean
    assert miou(np.array([[2, 0]]), np.array([[4, 0]])) == pytest.approx(0.5)
    assert math.isnan(miou(np.zeros((1, 2)), np.zeros((1, 2))))


def test_miou_shares_mean_is_miou_and_bootstrap_recomputes_the_ratio() -> None:
    rng = np.random.default_rng(0)
    inter = rng.integers(0, 50, size=(40, 5))
    union = inter + rng.integers(0, 50, size=(40, 5))
    union[:, 4] = 0  # a class never seen
    inter[:, 4] = 0
    shares = miou_shares(inter, union)
    assert shares.mean() == pytest.approx(miou(inter, union))
    m, lo, hi = bootstrap_miou(inter, union, n_boot=300, seed=1)
    assert m == pytest.approx(miou(inter, union)) and lo < m < hi
    # identical images: no spread
    same = bootstrap_miou(np.tile(inter[:1], (10, 1)), np.tile(union[:1], (10, 1)), n_boot=50)
    assert same[1] == pytest.approx(same[0]) and same[2] == pytest.approx(same[0])


def test_depth_metrics_by_hand_with_invalid_pixels() -> None:
    gt = np.array([[1.0, 2.0], [0.0, 12.0]])  # 0: missing, 12 m: beyond the 10 m cap
    pred = np.array([[1.2, 1.0], [5.0, 5.0]])
    m = depth_metrics(pred, gt, max_depth=10.0)
    assert m is not None and m["n"] == 2
    # valid pixels: (1.2 vs 1.0), (1.0 vs 2.0)
    assert m["rmse"] == pytest.approx(math.sqrt((0.2**2 + 1.0**2) / 2))
    assert m["absrel"] == pytest.approx((0.2 / 1.0 + 1.0 / 2.0) / 2)
    # ratios 1.2 (< 1.25) and 2.0
    assert m["delta1"] == pytest.approx(0.5)
    # predictions are clipped to [min_depth, max_depth] before scoring
    m2 = depth_metrics(np.array([[-3.0, 50.0]]), np.array([[1.0, 9.0]]), max_depth=10.0)
    assert m2 is not None and m2["rmse"] == pytest.approx(math.sqrt(((1e-3 - 1.0) ** 2 + 1.0) / 2))
    assert depth_metrics(pred, np.zeros((2, 2))) is None


def test_eigen_crop_at_nyu_size() -> None:
    m = crop_mask((480, 640), "eigen")
    assert m.sum() == (471 - 45) * (601 - 41)
    assert m[45, 41] and not m[44, 41] and not m[45, 40] and m[470, 600] and not m[471, 600]
    gt = np.full((480, 640), 2.0)
    pred = np.full((480, 640), 2.0)
    pred[:10] = 9.0  # wrong only outside the crop
    got = depth_metrics(pred, gt, crop="eigen")
    assert got is not None and got["rmse"] == 0.0 and got["delta1"] == 1.0
    with pytest.raises(ValueError, match="unknown crop"):
        crop_mask((4, 4), "garg")
