"""Fits recover known parameters from noisy synthetic power laws, within their intervals."""

from __future__ import annotations

import numpy as np
import pytest

from webssl_cli.report.fits import fit


def synth(
    n: int, seed: int, c: float = 80.0, a: float = 20.0, alpha: float = 0.4, noise: float = 0.5
):
    x = np.geomspace(1e5, 1e9, n)
    x0 = np.exp(np.mean(np.log(x)))
    y = c - a * (x / x0) ** -alpha + np.random.default_rng(seed).normal(0, noise, n)
    return x, y


def test_recovers_saturating_law_within_bootstrap_interval() -> None:
    x, y = synth(10, seed=1)
    f = fit("params", "Average", x[:, None], y, ceiling=100.0, n_boot=300, seed=0)
    est, iv = f.estimate(), f.intervals()
    assert iv is not None
    for name, true in (("c", 80.0), ("a", 20.0), ("alpha", 0.4)):
        assert iv[name][0] <= true <= iv[name][1], (name, est[name], iv[name])
        assert iv[name][0] <= est[name] <= iv[name][1]
    # the hold-out of the largest scale lands near the truth
    assert f.holdout is not None and abs(f.holdout.error) < 3.0
    # the extrapolation interval at 10x covers the noiseless truth
    lo, hi = f.predict_interval(np.array([[1e10]]))
    true = 80 - 20 * (1e10 / np.exp(np.mean(np.log(x)))) ** -0.4
    assert lo[0] <= true <= hi[0]


def test_coverage_over_replicates() -> None:
    hits = 0
    for seed in range(10):
        x, y = synth(8, seed=100 + seed)
        iv = fit(
            "params", "t", x[:, None], y, ceiling=100.0, n_boot=80, seed=seed, holdout=False
        ).intervals()
        assert iv is not None
        hits += iv["alpha"][0] <= 0.4 <= iv["alpha"][1]
    assert hits >= 8  # nominal 95%: at least 8 of 10


def test_few_points_give_wide_intervals_or_none() -> None:
    x, y = synth(10, seed=3)
    many = fit("params", "t", x[:, None], y, ceiling=100.0, n_boot=150, holdout=False).intervals()
    xs, ys = x[[0, 3, 6, 9]], y[[0, 3, 6, 9]]
    few = fit("params", "t", xs[:, None], ys, ceiling=100.0, n_boot=150, holdout=False)
    assert few.intervals() is not None and "few points" in few.note
    w_many = many["alpha"][1] - many["alpha"][0]
    w_few = few.intervals()["alpha"][1] - few.intervals()["alpha"][0]
    assert w_few > 2 * w_many
    exact = fit("params", "t", xs[:3, None], ys[:3], ceiling=100.0, n_boot=50)
    assert exact.ok and exact.intervals() is None and "too few points" in exact.note
    none = fit("params", "t", xs[:2, None], ys[:2], ceiling=100.0)
    assert not none.ok and "not fitted" in none.note


def test_joint_law_recovers_exponents() -> None:
    rng = np.random.default_rng(0)
    N = np.repeat(np.geomspace(1e5, 1e8, 4), 4)
    D = np.tile(np.geomspace(1e4, 1e7, 4), 4)
    n0, d0 = np.exp(np.mean(np.log(N))), np.exp(np.mean(np.log(D)))
    err = 10 + 15 * (N / n0) ** -0.35 + 8 * (D / d0) ** -0.5
    score = 100 - err * np.exp(rng.normal(0, 0.01, len(N)))
    f = fit("joint", "Average", np.c_[N, D], score, ceiling=100.0, n_boot=150, seed=0)
    iv = f.intervals()
    assert iv is not None
    assert iv["alpha"][0] <= 0.35 <= iv["alpha"][1]
    assert iv["beta"][0] <= 0.5 <= iv["beta"][1]
    assert f.estimate()["E"] == pytest.approx(10, rel=0.3)
    assert f.holdout is not None and abs(f.holdout.error) < 1.5


def test_no_bootstrap_means_no_intervals() -> None:
    x, y = synth(6, seed=5)
    f = fit("params", "t", x[:, None], y, ceiling=100.0, n_boot=0)
    assert f.ok and f.intervals() is None and "no bootstrap" in f.note
    assert f.predict_interval(x[:, None]) is None


def test_fits_see_their_points_in_one_order_so_a_rebuilt_report_has_the_same_intervals() -> None:
    import polars as pl

    from webssl_cli.report.build import _group_means

    rng = np.random.default_rng(0)
    d = pl.DataFrame({"samples_seen": rng.permutation(np.repeat(np.arange(1, 41) * 1000, 3)),
                      "value": rng.uniform(20, 60, 120)})  # fmt: skip
    outs = [
        _group_means(d.sample(fraction=1.0, shuffle=True, seed=s), ["samples_seen"])
        for s in range(5)
    ]
    for o in outs:
        assert o["samples_seen"].to_list() == sorted(o["samples_seen"].to_list())
        assert o.equals(outs[0])
