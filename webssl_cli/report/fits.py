"""Scaling-law fits with bootstrap intervals, a hold-out of the largest scale, extrapolation.

Forms (DESIGN.md, scaling-law facts):

- ``saturating``: score = c − a·(x/x₀)^(−α) in one variable x (parameters or samples seen),
  x₀ the geometric mean of the fitted x (so ``a`` is the gap to the ceiling at x₀);
  plain least squares from a grid of starts (as Gadre et al. 2024 fit a·x^b + c).
- ``joint``: error = E + A·(N/N₀)^(−α) + B·(D/D₀)^(−β), error = ceiling − score (Hoffmann et al.
  2022, approach 3): Huber loss on log-errors from a grid of starts.

Intervals: a parametric bootstrap. Each replicate draws a noise level σ_b = σ̂·sqrt(df/χ²_df)
(df = points − parameters; this widens the interval when points are few, as a t interval does),
adds N(0, σ_b²) noise to the fitted curve, and refits from the estimate. Percentile intervals
(2.5–97.5%) of parameters; predictive intervals of new observations (curve + noise). With as
many points as parameters there is no noise estimate: the fit is reported without intervals
("too few points"); with fewer it is not made.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LEVEL = 0.95


@dataclass(frozen=True)
class Law:
    name: str
    params: tuple[str, ...]  # reported names
    # theta -> (X) -> prediction on the residual scale; X has one column per variable
    predict_raw: Callable[[np.ndarray, np.ndarray], np.ndarray]
    to_raw: Callable[[np.ndarray], np.ndarray]  # observed score -> residual scale
    from_raw: Callable[[np.ndarray], np.ndarray]  # residual scale -> score
    report: Callable[[np.ndarray], np.ndarray]  # theta -> reported parameter values
    jac: Callable[[np.ndarray, np.ndarray], np.ndarray]  # d predict_raw / d theta, (n, p)
    loss: str = "linear"


def saturating_law(ceiling: float) -> Law:
    """score = c − a·x^(−α) with theta = (c, log a, α); x already divided by x₀."""

    def f(th: np.ndarray, X: np.ndarray) -> np.ndarray:
        return th[0] - np.exp(th[1]) * X[:, 0] ** (-th[2])

    def jac(th: np.ndarray, X: np.ndarray) -> np.ndarray:
        t = np.exp(th[1]) * X[:, 0] ** (-th[2])
        return np.stack([np.ones_like(t), -t, t * np.log(X[:, 0])], axis=1)

    def ident(v: np.ndarray) -> np.ndarray:
        return v

    return Law(
        "saturating", ("c", "a", "alpha"), f, ident, ident,
        lambda th: np.array([th[0], math.exp(th[1]), th[2]]), jac,
    )  # fmt: skip


def joint_law(ceiling: float) -> Law:
    """log error = log(E + A·N^(−α) + B·D^(−β)); theta = (log E, log A, log B, α, β)."""

    def f(th: np.ndarray, X: np.ndarray) -> np.ndarray:
        err = (
            np.exp(th[0])
            + np.exp(th[1]) * X[:, 0] ** (-th[3])
            + np.exp(th[2]) * X[:, 1] ** (-th[4])
        )
        return np.log(err)

    def jac(th: np.ndarray, X: np.ndarray) -> np.ndarray:
        e = np.full(len(X), math.exp(th[0]))
        a = np.exp(th[1]) * X[:, 0] ** (-th[3])
        b = np.exp(th[2]) * X[:, 1] ** (-th[4])
        tot = e + a + b
        return (
            np.stack([e, a, b, -a * np.log(X[:, 0]), -b * np.log(X[:, 1])], axis=1) / tot[:, None]
        )

    return Law(
        "joint", ("E", "A", "B", "alpha", "beta"), f,
        lambda s: np.log(np.maximum(ceiling - s, ceiling * 1e-6)),
        lambda r: ceiling - np.exp(r),
        lambda th: np.array([math.exp(th[0]), math.exp(th[1]), math.exp(th[2]), th[3], th[4]]),
        jac, loss="huber",
    )  # fmt: skip


@dataclass
class HoldOut:
    x: float  # the held-out (largest) scale (N·D for the joint form)
    point: tuple[float, ...]  # the held-out x (or (N, D))
    actual: float  # mean observed score there
    predicted: float
    lo: float | None
    hi: float | None

    @property
    def error(self) -> float:
        return self.predicted - self.actual

    @property
    def inside(self) -> bool | None:
        return None if self.lo is None or self.hi is None else self.lo <= self.actual <= self.hi


@dataclass
class Fit:
    form: str  # 'params' | 'samples_seen' | 'joint'
    target: str
    slice: str
    law: Law
    X: np.ndarray  # raw x (n, k)
    y: np.ndarray  # scores (n,)
    x0: np.ndarray  # normalisers (k,)
    ceiling: float = 100.0  # the best possible score (1 or 100)
    theta: np.ndarray | None = None
    boot: np.ndarray | None = None  # (B, p) replicate thetas
    boot_sigma: np.ndarray | None = None  # (B,) replicate noise levels
    note: str = ""
    holdout: HoldOut | None = None
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def ok(self) -> bool:
        return self.theta is not None

    def estimate(self) -> dict[str, float]:
        assert self.theta is not None
        return dict(zip(self.law.params, self.law.report(self.theta), strict=True))

    def intervals(self) -> dict[str, tuple[float, float]] | None:
        if self.boot is None:
            return None
        rep = np.array([self.law.report(t) for t in self.boot])
        q = (1 - LEVEL) / 2
        lo, hi = np.quantile(rep, [q, 1 - q], axis=0)
        return {k: (float(a), float(b)) for k, a, b in zip(self.law.params, lo, hi, strict=True)}

    def predict(self, X: np.ndarray) -> np.ndarray:
        assert self.theta is not None
        Xn = np.atleast_2d(np.asarray(X, float)) / self.x0
        return self.law.from_raw(self.law.predict_raw(self.theta, Xn))

    def predict_interval(
        self, X: np.ndarray, observation: bool = True
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """95% interval of the fitted curve (``observation=False``) or of a new observation."""
        if self.boot is None or self.boot_sigma is None:
            return None
        Xn = np.atleast_2d(np.asarray(X, float)) / self.x0
        rng = np.random.default_rng(self.seed + 1)
        draws = np.array([self.law.predict_raw(t, Xn) for t in self.boot])  # (B, m)
        if observation:
            draws = draws + rng.normal(size=draws.shape) * self.boot_sigma[:, None]
        q = (1 - LEVEL) / 2
        lo, hi = np.quantile(self.law.from_raw(draws), [q, 1 - q], axis=0)
        return np.minimum(lo, hi), np.maximum(lo, hi)


# ---- solving ---------------------------------------------------------------------------------
def _bounds(law: Law, y: np.ndarray, ceiling: float) -> tuple[np.ndarray, np.ndarray]:
    if law.name == "saturating":
        lo_c = float(np.min(y))
        return (np.array([lo_c, math.log(ceiling * 1e-6), 0.01]),
                np.array([max(ceiling, lo_c + 1e-9), math.log(ceiling * 100), 3.0]))  # fmt: skip
    big = math.log(ceiling * 1e3)
    small = math.log(ceiling * 1e-8)
    return np.array([small, small, small, 0.01, 0.01]), np.array([big, big, big, 3.0, 3.0])


def _starts(law: Law, Xn: np.ndarray, y: np.ndarray, ceiling: float) -> list[np.ndarray]:
    out = []
    if law.name == "saturating":
        top, rng_y = float(np.max(y)), float(np.ptp(y)) or 0.01 * ceiling
        for alpha in (0.1, 0.3, 0.6, 1.0, 2.0):
            for c in (top + 0.1 * rng_y, top + rng_y, top + 5 * rng_y):
                c = min(c, ceiling)
                gap = np.maximum(c - y, 1e-6 * ceiling) / Xn[:, 0] ** (-alpha)
                out.append(np.array([c, math.log(float(np.mean(gap))), alpha]))
    else:
        err_min = float(np.min(ceiling - y))
        err_min = max(err_min, 1e-6 * ceiling)
        for e in (0.1, 0.5, 0.9):
            for a in (0.2, 0.5, 1.0):
                for b in (0.2, 0.5, 1.0):
                    rest = max(err_min * (1 - e), 1e-9)
                    out.append(
                        np.array(
                            [math.log(err_min * e), math.log(rest / 2), math.log(rest / 2), a, b]
                        )
                    )
    return out


def _solve(law: Law, Xn: np.ndarray, r_obs: np.ndarray, starts: list[np.ndarray],
           bounds: tuple[np.ndarray, np.ndarray]) -> np.ndarray | None:  # fmt: skip
    from scipy.optimize import least_squares

    best = None
    for s in starts:
        s = np.clip(s, bounds[0] + 1e-12, bounds[1] - 1e-12)
        try:
            res = least_squares(
                lambda th: law.predict_raw(th, Xn) - r_obs, s, jac=lambda th: law.jac(th, Xn),
                bounds=bounds, loss=law.loss, f_scale=1e-2 if law.loss == "huber" else 1.0,
                max_nfev=200, x_scale="jac",
            )  # fmt: skip
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            continue
        if res.success and np.all(np.isfinite(res.x)) and (best is None or res.cost < best.cost):
            best = res
    return None if best is None else np.asarray(best.x)


def fit(
    form: str,
    target: str,
    X: np.ndarray,
    y: np.ndarray,
    *,
    ceiling: float,
    slice_desc: str = "",
    n_boot: int = 500,
    seed: int = 0,
    holdout: bool = True,
) -> Fit:
    """Fit the saturating law (X with one column) or the joint law (two columns)."""
    X = np.atleast_2d(np.asarray(X, float))
    if X.shape[0] != len(y):
        X = X.T
    y = np.asarray(y, float)
    law = saturating_law(ceiling) if X.shape[1] == 1 else joint_law(ceiling)
    x0 = np.exp(np.mean(np.log(X), axis=0))
    out = Fit(form, target, slice_desc, law, X, y, x0, ceiling=ceiling, seed=seed)
    p = len(law.params)
    distinct = [len(np.unique(X[:, j])) for j in range(X.shape[1])]
    if len(y) < p or min(distinct) < 2 or (law.name == "saturating" and distinct[0] < 3):
        out.note = f"too few points (n={len(y)}, {min(distinct)} distinct scales, {p} parameters): not fitted"
        return out
    Xn = X / x0
    bounds = _bounds(law, y, ceiling)
    r_obs = law.to_raw(y)
    theta = _solve(law, Xn, r_obs, _starts(law, Xn, y, ceiling), bounds)
    if theta is None:
        out.note = "the fit did not converge"
        return out
    out.theta = theta
    at = [n for n, v, lo, hi in zip(law.params, theta, *bounds, strict=True)
          if min(v - lo, hi - v) <= 1e-6 * max(1.0, abs(hi - lo))]  # fmt: skip
    if at:
        out.extra["at_bound"] = at
    df = len(y) - p
    if n_boot <= 0:
        out.note = "no bootstrap requested: no intervals"
    elif df < 1:
        out.note = (
            f"too few points for intervals (n={len(y)} for {p} parameters): exact fit, no intervals"
        )
    else:
        resid = law.predict_raw(theta, Xn) - r_obs
        sigma = max(float(np.sqrt(np.sum(resid**2) / df)), 1e-9 * (float(np.ptp(r_obs)) or 1.0))
        rng = np.random.default_rng(seed)
        thetas, sigmas = [], []
        base = law.predict_raw(theta, Xn)
        for _ in range(n_boot):
            s_b = sigma * math.sqrt(df / rng.chisquare(df))
            th_b = _solve(law, Xn, base + rng.normal(0, s_b, len(y)), [theta], bounds)
            if th_b is not None:
                thetas.append(th_b)
                sigmas.append(s_b)
        if len(thetas) >= max(20, n_boot // 2):
            out.boot, out.boot_sigma = np.array(thetas), np.array(sigmas)
            if df < 3:
                out.note = f"few points (n={len(y)} for {p} parameters, {df} degree(s) of freedom): intervals widened accordingly"
        else:
            out.note = "bootstrap refits failed: no intervals"
    if at:
        why = (
            "the data show no saturation below the ceiling"
            if "c" in at
            else "at the edge of its range"
        )
        out.note = "; ".join(filter(None, [out.note, f"{', '.join(at)} at its bound ({why})"]))
    if holdout:
        out.holdout = _holdout(out, n_boot=max(50, n_boot // 2))
    return out


def _holdout(f: Fit, n_boot: int) -> HoldOut | None:
    """Refit without the largest scale (largest x, or largest N·D for the joint form) and
    predict it: the error a user would have made extrapolating one step."""
    key = f.X[:, 0] if f.X.shape[1] == 1 else f.X[:, 0] * f.X[:, 1]
    top = key == key.max()
    if top.all() or (~top).sum() < len(f.law.params):
        return None
    sub = fit(f.form, f.target, f.X[~top], f.y[~top], ceiling=f.ceiling, n_boot=n_boot,
              seed=f.seed + 7, holdout=False)  # fmt: skip
    if not sub.ok:
        return None
    x_top = f.X[top][:1]
    pred = float(sub.predict(x_top)[0])
    iv = sub.predict_interval(x_top)
    return HoldOut(
        x=float(key.max()), point=tuple(float(v) for v in x_top[0]), actual=float(np.mean(f.y[top])), predicted=pred,
        lo=None if iv is None else float(iv[0][0]), hi=None if iv is None else float(iv[1][0]),
    )  # fmt: skip


def ceiling_for(values: np.ndarray) -> float:
    """Scores in [0, 1] have ceiling 1; percentages 100."""
    return 1.0 if float(np.nanmax(np.abs(values))) <= 1.0 else 100.0
