"""Report plots (PNG + SVG). Each figure stands on its own: title, axis units, legend, log axes
where scale is the point. Functions return the PNG path, or None when the study has nothing
to show on that axis (e.g. a single samples-seen budget)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from webssl_cli.report.fits import Fit
from webssl_cli.report.tables import fmt_count, label_order

_MAX_LINES = 8


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 130, "axes.grid": True, "grid.alpha": 0.3,
                         "axes.spines.top": False, "axes.spines.right": False, "font.size": 9,
                         "svg.hashsalt": "webssl", "svg.fonttype": "none"})  # fmt: skip
    return plt


def _save(fig: Any, out: Path, name: str) -> Path:
    png = out / f"{name}.png"
    fig.savefig(png, bbox_inches="tight")
    fig.savefig(out / f"{name}.svg", bbox_inches="tight", metadata={"Date": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return png


def _log_x(ax: Any, values: Any = None) -> None:
    """Log x axis labelled 10K / 1M / 2B, no crowded minor labels; ticks at the data's own
    values when there are few of them within less than two decades (else one label in view)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.set_xscale("log")
    if values is not None:
        v = sorted({float(x) for x in values if x is not None and x > 0})
        if 1 < len(v) <= 8 and v[-1] / v[0] < 100:
            ax.xaxis.set_major_locator(FixedLocator(v))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt_count(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 3)
    return math.ceil(n / cols), cols


def _colors(n: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    return [cmap(0.1 + 0.75 * i / max(1, n - 1)) for i in range(n)]


def headline_labels(scores: Any) -> list[str]:
    import polars as pl

    s = scores.filter(pl.col("kind").is_in(["category", "probe"]))
    return label_order(s["label"].unique().to_list())


def _yerr(est: dict[Any, Any] | None, keys: list[tuple[Any, ...]], ys: list[float]) -> Any:
    """Asymmetric error bars (2, n) from the estimates' 95% intervals; None without any."""
    lo, hi, any_iv = [], [], False
    for k, y in zip(keys, ys, strict=True):
        e = (est or {}).get(k)
        if e is not None and e.has_interval:
            lo.append(max(0.0, y - e.lo))
            hi.append(max(0.0, e.hi - y))
            any_iv = True
        else:
            lo.append(0.0)
            hi.append(0.0)
    return [lo, hi] if any_iv else None


def score_vs(
    axis: str,
    main: Any,
    refs: Any,
    out: Path,
    main_filter: str | None,
    study: str,
    est: dict[Any, Any] | None = None,
) -> Path | None:
    """Score vs ``axis`` ('params' or 'samples_seen'): one panel per headline score, one line
    per value of the other axis, 95% intervals as error bars (``est``: (label, model,
    samples_seen, data_filter) -> Estimate); references dashed grey."""
    import polars as pl

    other = "samples_seen" if axis == "params" else "model"
    s = main if main_filter is None else main.filter(pl.col("data_filter") == main_filter)
    if s[axis].drop_nulls().n_unique() < 2:
        return None
    labels = headline_labels(s)
    if not labels:
        return None
    plt = _plt()
    nr, nc = _grid(len(labels))
    fig, axes = plt.subplots(nr, nc, figsize=(4.2 * nc, 3.3 * nr), squeeze=False)
    groups = sorted(s[other].unique().to_list(), key=lambda v: _order(s, other, v))
    shown = ""
    if len(groups) > _MAX_LINES:  # a readable legend: evenly spaced lines, both extremes kept
        keep = sorted({round(i * (len(groups) - 1) / (_MAX_LINES - 1)) for i in range(_MAX_LINES)})
        shown = f" ({len(keep)} of {len(groups)} {'budgets' if other == 'samples_seen' else 'models'} shown)"
        groups = [groups[i] for i in keep]
    colors = _colors(len(groups))
    for ax, lab in zip(axes.flat, labels, strict=False):
        d = s.filter(pl.col("label") == lab)
        for g, col in zip(groups, colors, strict=True):
            firsts = [pl.col(c).first() for c in ("model", "samples_seen") if c != axis]
            dg = (
                d.filter(pl.col(other) == g)
                .group_by(axis)
                .agg(pl.col("value").mean(), *firsts)
                .sort(axis)
            )
            if dg.is_empty():
                continue
            name = fmt_count(g) + " samples" if other == "samples_seen" else str(g)
            keys = [
                (lab, r["model"], r["samples_seen"], main_filter) for r in dg.iter_rows(named=True)
            ]
            yerr = _yerr(est, keys, dg["value"].to_list())
            ax.errorbar(dg[axis], dg["value"], yerr=yerr, fmt="o-", color=col, label=name, lw=1.6,
                        ms=4, capsize=2.5 if yerr else 0)  # fmt: skip
        xs = d[axis].to_list()
        if refs is not None and not refs.is_empty():
            r = refs.filter(pl.col("label") == lab)
            groups_r = sorted(
                r.group_by(["study", other]),
                key=lambda g: (str(g[0][0]), _order(r, other, g[0][1])),
            )
            for k, ((rs, rg), dr) in enumerate(groups_r):
                dr = dr.group_by(axis).agg(pl.col("value").mean()).sort(axis)
                if dr.height:
                    tag = fmt_count(rg) if other == "samples_seen" else rg
                    ax.plot(dr[axis], dr["value"], "s^vDP"[k % 5] + "--", color="0.5", ms=4, lw=1,
                            label=f"{rs} ({tag})")  # fmt: skip
                    xs += dr[axis].to_list()
        _log_x(ax, xs)
        ax.set_title(lab)
        ax.set_xlabel("backbone parameters (log)" if axis == "params" else "samples seen (log)")
        ax.set_ylabel("score (%)")
    for ax in list(axes.flat)[len(labels) :]:
        ax.axis("off")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(6, len(names)), frameon=False,
               bbox_to_anchor=(0.5, -0.02), title="samples seen" if other == "samples_seen" else "model")  # fmt: skip
    what = "model size" if axis == "params" else "samples seen"
    flt = f", filter = {main_filter}" if main_filter else ""
    fig.suptitle(f"{study}: score vs {what}{flt}{shown}", fontsize=12)
    fig.tight_layout(rect=(0, 0.75 / fig.get_figheight(), 1, 1))
    return _save(fig, out, "score_vs_params" if axis == "params" else "score_vs_samples")


def _order(s: Any, axis: str, v: Any) -> Any:
    if axis == "model":
        p = s.filter(s["model"] == v)["params"].to_list()
        return (p[0] or 0) if p else 0
    return (v is None, v)


def filter_bars(main: Any, out: Path, study: str, est: dict[Any, Any] | None = None) -> Path | None:
    """Per-filter bars per benchmark (and category) for the model/budget with the most filters,
    with 95% intervals as error bars."""
    import polars as pl

    if main["data_filter"].n_unique() < 2:
        return None
    combos = main.group_by(["model", "params", "samples_seen"]).agg(
        pl.col("data_filter").n_unique().alias("k")
    )
    best = combos.sort(["k", "params", "samples_seen"], descending=True).row(0, named=True)
    d = main.filter(
        (pl.col("model") == best["model"]) & (pl.col("samples_seen") == best["samples_seen"])
    )
    d = d.filter(pl.col("kind").is_in(["category", "benchmark", "probe"]))
    cats = [
        x for x in label_order(d.filter(pl.col("kind") != "benchmark")["label"].unique().to_list())
    ]
    benches = sorted(d.filter(pl.col("kind") == "benchmark")["label"].unique().to_list(),
                     key=lambda b: (label_order(cats).index(c) if (c := _cat(d, b)) in cats else 99, b))  # fmt: skip
    labels = cats + benches
    filters = sorted(
        d["data_filter"].unique().to_list(),
        key=lambda f: ({"none": 0, "full": 0, "light": 1, "heavy": 2}.get(f, 3), f),
    )
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(labels) * len(filters) ** 0.5 + 2), 4.0))
    width = 0.8 / len(filters)
    colors = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860"]
    for i, f in enumerate(filters):
        df = d.filter(pl.col("data_filter") == f).group_by("label").agg(pl.col("value").mean())
        vals = dict(zip(df["label"].to_list(), df["value"].to_list(), strict=True))
        xs = [j + (i - (len(filters) - 1) / 2) * width for j in range(len(labels))]
        ys = [vals.get(lab, float("nan")) for lab in labels]
        keys = [(lab, best["model"], best["samples_seen"], f) for lab in labels]
        ax.bar(xs, ys, width, label=f, color=colors[i % len(colors)],
               yerr=_yerr(est, keys, ys), capsize=2, error_kw={"lw": 0.8})  # fmt: skip
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=40, ha="right")
    if cats and benches:
        ax.axvline(len(cats) - 0.5, color="0.5", lw=0.8, ls=":")
    ax.set_ylabel("score (%)")
    ax.set_title(
        f"{study}: data filters, {best['model']} at {fmt_count(best['samples_seen'])} samples seen"
    )
    ax.legend(title="data filter", frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return _save(fig, out, "filter_bars")


def _cat(d: Any, bench: str) -> Any:
    c = d.filter(d["label"] == bench)["category"].to_list()
    return c[0] if c else None


def _spread(values: list[Any], k: int) -> list[Any]:
    """At most ``k`` evenly spaced items, first and last kept."""
    if len(values) <= k:
        return values
    return [values[i] for i in sorted({round(n * (len(values) - 1) / (k - 1)) for n in range(k)})]


def loss_curves(curves: Any, out: Path, study: str) -> Path | None:
    """Training loss vs samples seen: a panel per data filter (rows) × budget (columns), one
    line per model (colour). Large studies show at most 4 × 4 evenly spaced panels."""
    import polars as pl
    from matplotlib.ticker import FuncFormatter

    if curves is None or curves.is_empty():
        return None
    plt = _plt()
    filters = sorted(curves["data_filter"].drop_nulls().unique().to_list(),
                     key=lambda f: ({"none": 0, "full": 0, "light": 1, "heavy": 2}.get(f, 3), f)) or [None]  # fmt: skip
    budgets = sorted(curves["budget"].drop_nulls().unique().to_list()) or [None]
    shown_f, shown_b = _spread(filters, 4), _spread(budgets, 4)
    models = sorted(curves["model"].unique().to_list(), key=lambda m: _order(curves, "model", m))
    colors = dict(zip(models, _colors(len(models)), strict=True))
    nr, nc = len(shown_f), len(shown_b)
    fig, axes = plt.subplots(
        nr, nc, figsize=(3.6 * nc + 0.8, 2.7 * nr + 0.9), squeeze=False, sharey=True
    )
    for r, f in enumerate(shown_f):
        for c, b in enumerate(shown_b):
            ax = axes[r][c]
            d = curves
            if f is not None:
                d = d.filter(pl.col("data_filter") == f)
            if b is not None:
                d = d.filter(pl.col("budget") == b)
            for _uid, dc in d.group_by(["uid"]):
                m = dc["model"][0]
                ax.plot(dc["samples_seen"], dc["value"], color=colors[m], lw=1.3)
            ax.set_title(f"filter = {f}, budget = {fmt_count(b)}", fontsize=9)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt_count(v)))
            if r == nr - 1:
                ax.set_xlabel("samples seen")
            if c == 0:
                ax.set_ylabel("training loss")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[m], lw=2, label=m) for m in models]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), frameon=False,
               bbox_to_anchor=(0.5, 0.0), title="model")  # fmt: skip
    more = ""
    if len(shown_f) < len(filters) or len(shown_b) < len(budgets):
        more = f" ({len(shown_f)} of {len(filters)} filters × {len(shown_b)} of {len(budgets)} budgets shown)"
    fig.suptitle(f"{study}: training loss (DINO + iBOT + KoLeo){more}", fontsize=12)
    fig.tight_layout(rect=(0, 0.7 / (2.7 * nr + 0.9), 1, 1))
    return _save(fig, out, "loss_curves")


def fit_plot(fits: list[Fit], out: Path, study: str) -> Path | None:
    """Data, fitted saturating laws with 95% bands, the held-out point and the extrapolation."""
    import numpy as np

    fs = [f for f in fits if f.ok and f.form != "joint"]
    if not fs:
        return None
    plt = _plt()
    nr, nc = _grid(len(fs))
    fig, axes = plt.subplots(nr, nc, figsize=(4.4 * nc, 3.4 * nr), squeeze=False)
    for ax, f in zip(axes.flat, fs, strict=False):
        x = f.X[:, 0]
        grid = np.geomspace(x.min() / 1.5, x.max() * 10, 120)[:, None]
        band = f.predict_interval(grid, observation=False)
        if band is not None:
            ax.fill_between(
                grid[:, 0],
                band[0],
                band[1],
                color="C0",
                alpha=0.2,
                lw=0,
                label="95% interval (curve)",
            )
        ax.plot(grid[:, 0], f.predict(grid), "C0-", lw=1.5, label="fit")
        ax.plot(x, f.y, "ko", ms=4, label="cells")
        h = f.holdout
        if h is not None:
            ax.errorbar([h.x], [h.predicted], yerr=None if h.lo is None or h.hi is None else [[h.predicted - h.lo], [h.hi - h.predicted]],
                        fmt="D", color="C3", ms=5, capsize=3, label="hold-out prediction")  # fmt: skip
        ax.axvspan(x.max(), grid[-1, 0], color="0.9", zorder=0, label="extrapolation")
        _log_x(ax)
        ax.set_xlabel("backbone parameters (log)" if f.form == "params" else "samples seen (log)")
        ax.set_ylabel("score (%)")
        extra = "" if band is not None else " (no interval: too few points)"
        ax.set_title(
            f"{f.target} vs {'params' if f.form == 'params' else 'samples'}{extra}\n{f.slice}",
            fontsize=9,
        )
    for ax in list(axes.flat)[len(fs) :]:
        ax.axis("off")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(
        handles, names, loc="lower center", ncol=5, frameon=False, bbox_to_anchor=(0.5, -0.02)
    )
    fig.suptitle(
        f"{study}: saturating power-law fits, score = " + r"$c - a\,(x/x_0)^{-\alpha}$", fontsize=12
    )
    fig.tight_layout(rect=(0, 0.45 / fig.get_figheight(), 1, 1))
    return _save(fig, out, "fits")
