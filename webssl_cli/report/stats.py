"""Intervals from per-example outcomes: a seeded, vectorised percentile bootstrap (numpy only).

A score is a (weighted) mean of per-example outcomes (``webssl_cli.outcomes``). What varies
from one run of a study to the next is which examples the benchmark happened to hold and, when
a study repeats cells over seeds, which training run came out; both are resampled:

- ``mean`` of one point: resample its examples (within each benchmark when a score averages
  several benchmarks, so every benchmark keeps its weight), 95% percentile interval.
- ``difference`` of two points (two cells, or a cell and its baseline variant) over their shared
  examples (inner join on the example id): each replicate draws one resample of the example
  ids and applies it to both, so what the two have in common cancels (a paired bootstrap).
- Seeds: a point may hold several cells that differ only by seed. Each replicate resamples the
  seeds (with replacement), then the examples: a hierarchical bootstrap; the estimate is the
  mean over seeds.
- ``trend`` along a scaling axis: the least-squares slope of score vs log2(x), i.e. the change
  per doubling, with every point's mean recomputed in each replicate from the same resampled
  example ids. "Detectable" means the 95% interval excludes zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
N_BOOT = 2000
_CHUNK_CELLS = 4_000_000  # replicate × example cells per chunk (bounds memory on big sets)

Key = tuple[str, str]  # (benchmark, example)
Outcomes = Mapping[Key, float]  # one cell's outcomes on one score's examples
Point = Sequence[Outcomes]  # one entry per seed (usually one)


@dataclass(frozen=True)
class Estimate:
    """A score (or a difference, or a slope) with its 95% bootstrap interval."""

    value: float
    lo: float | None = None
    hi: float | None = None
    n_examples: int = 0
    n_seeds: int = 1

    @property
    def has_interval(self) -> bool:
        return self.lo is not None and self.hi is not None

    @property
    def detectable(self) -> bool:
        """The interval excludes zero (for differences and slopes). Rounding in the slope's
        arithmetic can put a zero-width interval of identical outcomes a hair off zero: that
        is no evidence of an effect, so zero is excluded only beyond a relative tolerance."""
        if not self.has_interval:
            return False
        lo, hi = float(self.lo), float(self.hi)  # type: ignore[arg-type]
        tol = 1e-9 * max(1.0, abs(lo), abs(hi))
        return lo > tol or hi < -tol

    def scaled(self, k: float) -> Estimate:
        lo = None if self.lo is None else self.lo * k
        hi = None if self.hi is None else self.hi * k
        if lo is not None and hi is not None and k < 0:
            lo, hi = hi, lo
        return Estimate(self.value * k, lo, hi, self.n_examples, self.n_seeds)

    def text(self, digits: int = 1, sign: bool = False) -> str:
        """``62.1 [58.3, 65.8]``; just the number when there is no interval."""
        f = f"{{:{'+' if sign else ''}.{digits}f}}"
        if not self.has_interval:
            return f.format(self.value)
        return f"{f.format(self.value)} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"


@dataclass(frozen=True)
class Design:
    """Shared examples of a set of points and how a score weighs them: ``stratum`` (E,) the
    benchmark index of each example, ``scale`` (E,) its weight in the score (stratum weight /
    stratum size)."""

    keys: list[Key]
    stratum: np.ndarray
    scale: np.ndarray

    @property
    def n(self) -> int:
        return len(self.keys)


def design(keys: Sequence[Key], weights: Mapping[str, float] | None = None) -> Design:
    """``weights``: benchmark -> its weight in the score, used as given (a category of two
    benchmarks: 0.5 each; a benchmark on another scale carries its conversion too); the score
    is the weighted sum of the benchmarks' means. None: a plain mean over all examples."""
    keys = sorted(keys)
    if weights is None:
        n = len(keys)
        return Design(list(keys), np.zeros(n, int), np.full(n, 1.0 / max(n, 1)))
    benches = sorted({b for b, _ in keys})
    idx = {b: i for i, b in enumerate(benches)}
    stratum = np.array([idx[b] for b, _ in keys], int)
    sizes = np.bincount(stratum, minlength=len(benches))
    w = np.array([float(weights.get(b, 0.0)) for b in benches])
    return Design(list(keys), stratum, (w / sizes)[stratum])


def align(points: Sequence[Point], weights: Mapping[str, float] | None = None
          ) -> tuple[Design, list[np.ndarray]]:  # fmt: skip
    """The examples every seed of every point has (inner join), and one (seeds, E) matrix per
    point in that order."""
    shared: set[Key] | None = None
    for p in points:
        for o in p:
            shared = set(o) if shared is None else shared & set(o)
    d = design(sorted(shared or ()), weights)
    mats = [np.array([[o[k] for k in d.keys] for o in p], float).reshape(len(p), d.n)
            for p in points]  # fmt: skip
    return d, mats


def point_means(d: Design, mats: Sequence[np.ndarray]) -> np.ndarray:
    """(k,) the score of each point: mean over seeds of the weighted mean over examples."""
    return np.array([float(m.mean(axis=0) @ d.scale) for m in mats])


def replicate_means(d: Design, mats: Sequence[np.ndarray], n_boot: int = N_BOOT, seed: int = 0
                    ) -> np.ndarray:  # fmt: skip
    """(n_boot, k) bootstrap replicates of every point's score. One resample of the example
    ids per replicate is shared by all points (paired); seeds are resampled per point."""
    rng = np.random.default_rng(seed)
    k, n = len(mats), d.n
    out = np.empty((n_boot, k))
    if n == 0:
        out[:] = np.nan
        return out
    sizes = np.bincount(d.stratum)
    order = np.argsort(d.stratum, kind="stable")  # examples grouped by stratum
    chunk = max(1, _CHUNK_CELLS // max(n, 1))
    for b0 in range(0, n_boot, chunk):
        b = min(chunk, n_boot - b0)
        # draw each stratum's examples with replacement, then count the draws per example
        picks = np.empty((b, n), np.int64)
        start = 0
        for size in sizes:
            if size:
                cols = order[start : start + size]
                picks[:, start : start + size] = cols[rng.integers(0, size, (b, size))]
            start += size
        flat = (picks + np.arange(b)[:, None] * n).ravel()
        counts = np.bincount(flat, minlength=b * n).reshape(b, n).astype(float)
        weighted = counts * d.scale  # (b, E): each example's weight in this replicate
        for j, m in enumerate(mats):
            s = m.shape[0]
            if s == 1:
                out[b0 : b0 + b, j] = weighted @ m[0]
            else:
                seeds = rng.multinomial(s, np.full(s, 1.0 / s), size=b) / s  # (b, S), few seeds
                out[b0 : b0 + b, j] = np.einsum("bs,se,be->b", seeds, m, weighted)
    return out


def _interval(reps: np.ndarray) -> tuple[float | None, float | None]:
    reps = reps[np.isfinite(reps)]
    if reps.size < 2:
        return None, None
    q = (1 - LEVEL) / 2
    lo, hi = np.quantile(reps, [q, 1 - q])
    return float(lo), float(hi)


def mean(point: Point, weights: Mapping[str, float] | None = None, *, n_boot: int = N_BOOT,
         seed: int = 0) -> Estimate:  # fmt: skip
    """A score with its interval (examples resampled; seeds too when the point has several)."""
    d, mats = align([point], weights)
    if d.n == 0:
        return Estimate(math.nan)
    reps = replicate_means(d, mats, n_boot, seed)[:, 0]
    lo, hi = _interval(reps) if d.n > 1 else (None, None)
    return Estimate(float(point_means(d, mats)[0]), lo, hi, d.n, len(point))


def difference(a: Point, b: Point, weights: Mapping[str, float] | None = None, *,
               n_boot: int = N_BOOT, seed: int = 0) -> Estimate:  # fmt: skip
    """Score of ``a`` minus score of ``b`` over their shared examples (paired bootstrap)."""
    d, mats = align([a, b], weights)
    if d.n == 0:
        return Estimate(math.nan)
    reps = replicate_means(d, mats, n_boot, seed)
    m = point_means(d, mats)
    lo, hi = _interval(reps[:, 0] - reps[:, 1]) if d.n > 1 else (None, None)
    return Estimate(float(m[0] - m[1]), lo, hi, d.n, min(len(a), len(b)))


def slope_weights(xs: Sequence[float]) -> np.ndarray:
    """Least-squares weights c with slope = c · means, on log2(x): change per doubling."""
    lx = np.log2(np.asarray(xs, float))
    c = lx - lx.mean()
    ss = float(c @ c)
    if ss <= 0:
        raise ValueError("a trend needs at least two distinct x values")
    return c / ss


@dataclass(frozen=True)
class Trend:
    """Change of a score per doubling of x, with its interval, and the means it rests on."""

    slope: Estimate
    xs: list[float]
    means: list[float]

    @property
    def detectable(self) -> bool:
        return self.slope.detectable


def trend(xs: Sequence[float], points: Sequence[Point],
          weights: Mapping[str, float] | None = None, *, n_boot: int = N_BOOT,
          seed: int = 0) -> Trend:  # fmt: skip
    """Slope of score vs log2(x) over the points' shared examples; points at equal x are
    separate points (they enter the least squares each)."""
    c = slope_weights(xs)
    d, mats = align(points, weights)
    if d.n == 0:
        return Trend(Estimate(math.nan), list(map(float, xs)), [math.nan] * len(xs))
    m = point_means(d, mats)
    reps = replicate_means(d, mats, n_boot, seed) @ c
    lo, hi = _interval(reps) if d.n > 1 else (None, None)
    seeds = min(len(p) for p in points)
    return Trend(Estimate(float(m @ c), lo, hi, d.n, seeds), list(map(float, xs)),
                 [float(v) for v in m])  # fmt: skip


def verdict(e: Estimate) -> str:
    if not e.has_interval:
        return "no interval (no per-example outcomes)"
    return "detectable" if e.detectable else "not detectable at this scale"


def describe_trend(t: Trend, what: str, axis: str, unit: str = "points", digits: int = 1) -> str:
    """'kNN top-1 rises by 4.1 points per doubling of samples seen (95% CI 2.0 to 6.3): detectable.'"""
    s = t.slope
    if not math.isfinite(s.value):
        return f"{what} vs {axis}: no shared examples to compare."
    word = "rises" if s.value > 0 else "falls" if s.value < 0 else "changes"
    ci = f" (95% CI {s.lo:.{digits}f} to {s.hi:.{digits}f})" if s.has_interval else ""
    return (f"{what} {word} by {abs(s.value):.{digits}f} {unit} per doubling of {axis}{ci}: "
            f"{verdict(s)}.")  # fmt: skip


def describe_difference(e: Estimate, what: str, a: str, b: str, unit: str = "points",
                        digits: int = 1) -> str:  # fmt: skip
    """'kNN top-1: encoder − random-init = +12.3 points (95% CI 8.1 to 16.0): detectable.'"""
    if not math.isfinite(e.value):
        return f"{what}: {a} and {b} share no examples."
    ci = f" (95% CI {e.lo:+.{digits}f} to {e.hi:+.{digits}f})" if e.has_interval else ""
    return f"{what}: {a} − {b} = {e.value:+.{digits}f} {unit}{ci}: {verdict(e)}."
