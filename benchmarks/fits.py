"""Do the scaling-law fits recover known parameters, and do their intervals cover the truth?

    .venv/bin/python benchmarks/fits.py [--datasets 100] [--boot 200]

Synthetic data from known laws with Gaussian noise:
- saturating: score = 80 − 20·(x/x₀)^−0.4 + N(0, 0.5²), x log-spaced over 1e5..1e9, with 8 points
  and with 4 points (few);
- joint: error = 10 + 15·(N/N₀)^−0.35 + 8·(D/D₀)^−0.5, 4 × 4 grid, 1% multiplicative noise.
Prints, per parameter, how often the 95% bootstrap interval covers the true value (nominal 95%),
the median interval width, and the hold-out (largest scale) prediction error.

Then the trend estimate of the report (``report.stats.trend``: slope per doubling with a paired
bootstrap over examples, seeds resampled first): on 0/1 outcomes with a shared per-example
difficulty, how often its 95% interval covers the true slope and how often the verdict is
"detectable", for no trend and a known trend, with one seed per cell and with 3 seeds whose
runs differ (a seed effect of sd 3 points).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from webssl_cli.report.fits import fit

TRUE_SAT = {"c": 80.0, "a": 20.0, "alpha": 0.4}
TRUE_JOINT = {"E": 10.0, "A": 15.0, "B": 8.0, "alpha": 0.35, "beta": 0.5}


def saturating(n: int, datasets: int, boot: int) -> None:
    cover = {k: 0 for k in TRUE_SAT}
    widths: dict[str, list[float]] = {k: [] for k in TRUE_SAT}
    hold, hold_in, hold_iv, done = [], 0, 0, 0
    for s in range(datasets):
        x = np.geomspace(1e5, 1e9, n)
        x0 = np.exp(np.mean(np.log(x)))
        y = 80 - 20 * (x / x0) ** -0.4 + np.random.default_rng(s).normal(0, 0.5, n)
        f = fit("params", "t", x[:, None], y, ceiling=100.0, n_boot=boot, seed=s)
        iv = f.intervals()
        if iv is None:
            continue
        done += 1
        for k, true in TRUE_SAT.items():
            cover[k] += iv[k][0] <= true <= iv[k][1]
            widths[k].append(iv[k][1] - iv[k][0])
        if f.holdout is not None:
            hold.append(abs(f.holdout.error))
            if f.holdout.inside is not None:
                hold_iv += 1
                hold_in += f.holdout.inside
    print(f"saturating law, {n} points, {done} datasets with intervals:")
    for k in TRUE_SAT:
        print(f"  {k:6s} true {TRUE_SAT[k]:<5g} coverage {100 * cover[k] / max(1, done):5.1f}%   "
              f"median 95% width {statistics.median(widths[k]) if widths[k] else float('nan'):.3g}")  # fmt: skip
    if hold:
        inside = (f"inside its predictive interval {100 * hold_in / hold_iv:.0f}% of {hold_iv}" if hold_iv
                  else "no interval (an exact fit to the remaining points)")  # fmt: skip
        print(
            f"  hold-out of the largest x: median |error| {statistics.median(hold):.2f} points, {inside}"
        )


def joint(datasets: int, boot: int) -> None:
    cover = {k: 0 for k in TRUE_JOINT}
    N = np.repeat(np.geomspace(1e5, 1e8, 4), 4)
    D = np.tile(np.geomspace(1e4, 1e7, 4), 4)
    n0, d0 = np.exp(np.mean(np.log(N))), np.exp(np.mean(np.log(D)))
    err = 10 + 15 * (N / n0) ** -0.35 + 8 * (D / d0) ** -0.5
    done = 0
    hold = []
    for s in range(datasets):
        score = 100 - err * np.exp(np.random.default_rng(1000 + s).normal(0, 0.01, len(N)))
        f = fit("joint", "t", np.c_[N, D], score, ceiling=100.0, n_boot=boot, seed=s)
        iv = f.intervals()
        if iv is None:
            continue
        done += 1
        for k, true in TRUE_JOINT.items():
            cover[k] += iv[k][0] <= true <= iv[k][1]
        if f.holdout is not None:
            hold.append(abs(f.holdout.error))
    print(f"joint law (Huber on log error), 16 points, {done} datasets:")
    print(
        "  coverage: " + ", ".join(f"{k} {100 * v / max(1, done):.0f}%" for k, v in cover.items())
    )
    if hold:
        print(f"  hold-out (largest N·D): median |error| {statistics.median(hold):.2f} points")


def _outcomes(rng: np.random.Generator, xs: np.ndarray, slope: float, n: int, seeds: int,
              seed_sd: float) -> list[list[dict[tuple[str, str], float]]]:  # fmt: skip
    p = rng.uniform(0.25, 0.65, n)
    out = []
    for x in xs:
        cells = []
        for _ in range(seeds):
            u = rng.normal(0, seed_sd) if seed_sd else 0.0
            v = rng.random(n) < np.clip(p + slope * np.log2(x / xs[0]) + u, 0, 1)
            cells.append({("b", str(i)): float(v[i]) for i in range(n)})
        out.append(cells)
    return out


def trends(datasets: int, boot: int) -> None:
    from webssl_cli.report.stats import trend

    print(f"trend per doubling (paired bootstrap, {boot} replicates, {datasets} datasets):")
    for k, n, seeds, seed_sd in ((3, 300, 1, 0.0), (5, 300, 1, 0.0), (3, 300, 3, 0.03)):
        xs = np.geomspace(1e4, 1e4 * 2 ** (k - 1), k)
        for slope in (0.0, 0.03):
            rng = np.random.default_rng(7)
            cover = det = 0
            widths = []
            for s in range(datasets):
                t = trend(xs, _outcomes(rng, xs, slope, n, seeds, seed_sd), n_boot=boot, seed=s)
                lo, hi = t.slope.lo, t.slope.hi
                assert lo is not None and hi is not None
                cover += lo <= slope <= hi
                det += t.detectable
                widths.append(hi - lo)
            print(f"  {k} x values, {n} examples, {seeds} seed(s) (seed sd {100 * seed_sd:g} pts), true "
                  f"slope {100 * slope:g} pts: coverage {100 * cover / datasets:.0f}%, detectable "
                  f"{100 * det / datasets:.0f}%, median width {100 * statistics.median(widths):.1f} pts")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", type=int, default=100)
    ap.add_argument("--boot", type=int, default=200)
    args = ap.parse_args()
    t0 = time.process_time()
    saturating(8, args.datasets, args.boot)
    saturating(4, args.datasets, args.boot)
    joint(max(10, args.datasets // 4), max(50, args.boot // 2))
    trends(args.datasets * 2, max(400, args.boot * 2))
    print(f"cpu {time.process_time() - t0:.0f} s")


if __name__ == "__main__":
    main()
