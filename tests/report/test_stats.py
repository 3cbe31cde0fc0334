"""The bootstrap's calibration on synthetic outcomes with a known truth."""

from __future__ import annotations

import numpy as np
import pytest

from webssl_cli.report import stats

XS = (10_000, 20_000, 40_000)


def _draw(rng: np.random.Generator, slope: float, n: int = 300, seeds: int = 1,
          seed_sd: float = 0.0) -> list[list[dict[tuple[str, str], float]]]:  # fmt: skip
    """Per x: ``seeds`` cells whose outcomes are Bernoulli(p_e + slope·log2(x/x0) + u_seed),
    p_e an example's difficulty shared by every cell (what makes pairing pay)."""
    p = rng.uniform(0.25, 0.65, n)
    points = []
    for x in XS:
        cells = []
        for _ in range(seeds):
            u = rng.normal(0, seed_sd) if seed_sd else 0.0
            v = rng.random(n) < np.clip(p + slope * np.log2(x / XS[0]) + u, 0, 1)
            cells.append({("b", f"e{i}"): float(v[i]) for i in range(n)})
        points.append(cells)
    return points


@pytest.mark.parametrize("true_slope", [0.0, 0.08])
def test_trend_interval_covers_the_true_slope_about_95_percent(true_slope: float) -> None:
    rng = np.random.default_rng(1)
    covered = detected = 0
    draws = 200
    for i in range(draws):
        t = stats.trend(XS, _draw(rng, true_slope), n_boot=400, seed=i)
        assert t.slope.lo is not None and t.slope.hi is not None
        covered += t.slope.lo <= true_slope <= t.slope.hi
        detected += t.detectable
    assert 0.90 <= covered / draws <= 0.99
    if true_slope == 0:
        # no trend: "not detectable" in about 95% of the draws
        assert 0.90 <= 1 - detected / draws <= 0.99
    else:
        assert detected / draws >= 0.9


def test_a_known_trend_is_described_with_its_numbers() -> None:
    rng = np.random.default_rng(0)
    t = stats.trend(XS, _draw(rng, 0.1, n=1000), n_boot=500)
    assert t.detectable and t.slope.lo < 0.1 < t.slope.hi  # type: ignore[operator]
    text = stats.describe_trend(t.__class__(t.slope.scaled(100), t.xs, t.means), "kNN top-1",
                                "samples seen")  # fmt: skip
    assert text.startswith("kNN top-1 rises by ") and text.endswith(": detectable.")
    assert "per doubling of samples seen (95% CI " in text
    flat = stats.trend(XS, _draw(rng, 0.0, n=1000), n_boot=500)
    if not flat.detectable:
        assert stats.describe_trend(flat, "x", "y").endswith("not detectable at this scale.")


def test_two_x_values_give_the_paired_difference() -> None:
    rng = np.random.default_rng(2)
    pts = _draw(rng, 0.05)[:2]
    t = stats.trend(XS[:2], pts, n_boot=300, seed=3)
    d = stats.difference(pts[1], pts[0], n_boot=300, seed=3)
    assert t.slope.value == pytest.approx(d.value)  # one doubling: slope = difference
    assert t.slope.lo == pytest.approx(d.lo) and t.slope.hi == pytest.approx(d.hi)


def test_pairing_narrows_the_interval_of_a_difference() -> None:
    """Shared example difficulty cancels in the paired difference; an unpaired view of the
    same data (each cell's own interval) is much wider."""
    rng = np.random.default_rng(4)
    n = 500
    p = rng.uniform(0.05, 0.95, n)
    a = {("b", str(i)): float(rng.random() < p[i]) for i in range(n)}
    b = {k: v if rng.random() < 0.9 else 1 - v for k, v in a.items()}  # mostly the same answers
    d = stats.difference([a], [b], n_boot=500)
    ma, mb = stats.mean([a], n_boot=500), stats.mean([b], n_boot=500)
    assert d.hi - d.lo < 0.6 * ((ma.hi - ma.lo) + (mb.hi - mb.lo))  # type: ignore[operator]
    assert d.value == pytest.approx(ma.value - mb.value)


def test_inner_join_on_examples() -> None:
    a = {("b", "1"): 1.0, ("b", "2"): 1.0, ("b", "3"): 0.0}
    b = {("b", "2"): 0.0, ("b", "3"): 0.0, ("b", "4"): 1.0}
    d = stats.difference([a], [b], n_boot=50)
    assert d.n_examples == 2 and d.value == pytest.approx(0.5)


def test_seeds_are_resampled_too() -> None:
    """Cells that differ by seed: the estimate is the mean over seeds, and seed-to-seed spread
    widens the interval (hierarchical bootstrap)."""
    rng = np.random.default_rng(5)
    calm = _draw(rng, 0.0, n=400, seeds=4)[0]
    noisy = _draw(rng, 0.0, n=400, seeds=4, seed_sd=0.1)[0]
    ec, en = stats.mean(calm, n_boot=500), stats.mean(noisy, n_boot=500)
    assert ec.n_seeds == en.n_seeds == 4
    means = [np.mean(list(o.values())) for o in noisy]
    assert en.value == pytest.approx(np.mean(means))
    assert en.hi - en.lo > 1.5 * (ec.hi - ec.lo)  # type: ignore[operator]


def test_weighted_score_resamples_within_benchmarks() -> None:
    """A category is the mean of its benchmarks' means, whatever their sizes."""
    big = {("big", str(i)): 1.0 for i in range(900)}
    small = {("small", str(i)): float(i % 2) for i in range(100)}
    e = stats.mean([big | small], {"big": 0.5, "small": 0.5}, n_boot=300)
    assert e.value == pytest.approx(0.75)
    # the big benchmark is constant: all the spread comes from the small one, at half weight
    es = stats.mean([small], n_boot=300, seed=0)
    assert e.hi - e.lo == pytest.approx(0.5 * (es.hi - es.lo), rel=0.25)  # type: ignore[operator]


def test_text_and_degenerate_cases() -> None:
    assert stats.Estimate(62.12, 58.3, 65.84).text() == "62.1 [58.3, 65.8]"
    assert stats.Estimate(0.5).text() == "0.5"
    assert stats.Estimate(0.1, -0.2, 0.3).scaled(-1).lo == pytest.approx(-0.3)
    assert stats.mean([{("b", "x"): 1.0}]).has_interval is False
    with pytest.raises(ValueError):
        stats.trend((1, 1), [[{("b", "x"): 1.0}], [{("b", "x"): 0.0}]])


def test_identical_outcomes_are_not_an_effect() -> None:
    """Every cell scoring every example the same (e.g. a benchmark stuck at one answer): the
    slope and its interval are zero up to rounding, which must not read as detectable."""
    same = {("b", f"e{i}"): float(i % 3 == 0) for i in range(200)}
    t = stats.trend(XS, [[dict(same)] for _ in XS], n_boot=200)
    assert abs(t.slope.value) < 1e-9 and not t.detectable
    assert stats.describe_trend(t, "Knowledge", "parameters").endswith(
        "not detectable at this scale."
    )
    d = stats.difference([same], [dict(same)], n_boot=200)
    assert not d.detectable
