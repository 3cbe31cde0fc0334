"""The report's classic-vision section: segmentation (mIoU) and depth (RMSE, AbsRel, δ1) per
cell, the encoder beside its random-init twin, with 95% intervals, and a plot.

mIoU is a ratio summed over images, so its interval is a percentile bootstrap over images that
recomputes mIoU from the resampled images' class counts (``eval/<name>.counts.jsonl``), paired
for the difference to the twin. Depth metrics are means over images: their outcomes are
resampled as every other score's.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np

from webssl_cli.outcomes import ratio_miou
from webssl_cli.report import stats
from webssl_cli.report.evidence import Evidence, ScoreRef
from webssl_cli.report.stats import Estimate
from webssl_cli.report.tables import Table, fmt_count

_DEPTH = ("delta1", "rmse", "absrel")
_HEAD = {"miou": "mIoU (%)", "delta1": "δ1 (%)", "rmse": "RMSE (m)", "absrel": "AbsRel"}
_SCALE = {"miou": 100.0, "delta1": 100.0, "rmse": 1.0, "absrel": 1.0}


def miou_estimates(a: tuple[list[str], np.ndarray, np.ndarray],
                   b: tuple[list[str], np.ndarray, np.ndarray] | None, n_boot: int, seed: int
                   ) -> tuple[Estimate, Estimate | None]:  # fmt: skip
    """mIoU of ``a`` and, with ``b`` on the same images, a - b: images resampled, the ratio
    recomputed in each replicate."""
    keys, ia, ua = a
    idx = np.random.default_rng(seed).integers(0, len(keys), size=(n_boot, len(keys)))
    reps = np.array([ratio_miou(ia[r], ua[r]) for r in idx])
    est = Estimate(ratio_miou(ia, ua), *_pct(reps), len(keys))
    if b is None or b[0] != keys:
        return est, None
    _, ib, ub = b
    diff = reps - np.array([ratio_miou(ib[r], ub[r]) for r in idx])
    return est, Estimate(est.value - ratio_miou(ib, ub), *_pct(diff), len(keys))


def _pct(reps: np.ndarray) -> tuple[float | None, float | None]:
    ok = reps[np.isfinite(reps)]
    if len(ok) < 2:
        return None, None
    return float(np.quantile(ok, 0.025)), float(np.quantile(ok, 0.975))


def dense_section(study_dir: Path, out_dir: Path, study: str, n_boot: int = 1000,
                  seed: int = 0) -> list[Any]:  # fmt: skip
    """Report blocks (a heading, the tables, the plot), or [] when no cell ran a dense probe.
    Every cell of the study is here, whatever its method (named in the row when there are
    several)."""
    import polars as pl

    from webssl_cli.report.methods import METHOD_NAMES
    from webssl_cli.results import queries

    with queries.connect(study_dir) as con:
        every = queries.scores(con, variant=None)  # every variant, values on their own scale
        d = every.filter((pl.col("study") == study) & (pl.col("label").str.starts_with("segmentation ")
                         | pl.col("label").str.starts_with("depth ")))  # fmt: skip
        if d.is_empty():
            return []
        uids = d["uid"].unique().to_list()
        ev = Evidence(queries.examples(con, uids), None, {}, n_boot=n_boot, seed=seed)
        method_of = queries.cell_methods(con)
    methods = {method_of.get(str(u), "webdino") for u in uids}
    rank: dict[str, tuple[bool, int, int, str]] = {}  # cell label -> plot order
    rows_by: dict[str, list[list[str]]] = {"segmentation": [], "depth": []}
    plot_pts: list[tuple[str, str, Estimate, Estimate]] = []  # (cell, metric, encoder, twin) in %
    for (uid, ev_name), g in d.group_by(["uid", "eval_name"], maintain_order=True):
        first = g.row(0, named=True)
        cell = f"{first['model']} · {fmt_count(first['samples_seen'])} · {first['data_filter']}"
        m_ = method_of.get(str(uid), "webdino")
        if len(methods) > 1:
            cell = f"{METHOD_NAMES.get(m_, m_)} · {cell}"
        rank[cell] = (m_ != "webdino", first["params"] or 0, first["samples_seen"] or 0,
                      str(first["data_filter"]))  # fmt: skip
        task = "segmentation" if str(first["label"]).startswith("segmentation") else "depth"
        metrics = ["miou"] if task == "segmentation" else list(_DEPTH)
        row = [cell, str(ev_name)]
        for m in metrics:
            e, t, gain = _metric(study_dir, g, str(uid), str(ev_name), m, ev, n_boot, seed)
            k = _SCALE[m]
            row += [_txt(e, k, m), _txt(t, k, m), _txt(gain, k, m, sign=True)]
            if e is not None and t is not None and m in ("miou", "delta1"):
                plot_pts.append((cell, m, e.scaled(k), t.scaled(k)))
        rows_by[task].append(row)
    blocks: list[Any] = [("h2", "Classic vision: segmentation and depth")]
    cols = ["cell", "eval"]
    if rows_by["segmentation"]:
        blocks.append(Table("Segmentation (linear probe on frozen patch tokens)",
                            cols + ["mIoU (%)", "random-init", "gain"], rows_by["segmentation"],
                            "mIoU over the dataset's classes (ignore label left out). Intervals: "
                            "95% bootstrap over val images, mIoU recomputed from the resampled "
                            "images' class counts; gain paired on the same images."))  # fmt: skip
    if rows_by["depth"]:
        heads = [h for m in _DEPTH for h in (_HEAD[m], "random-init", "gain")]
        blocks.append(Table("Depth (linear probe on patch tokens + CLS)", cols + heads,
                            rows_by["depth"], "Per-image RMSE, AbsRel and δ1 (max(d/d*, d*/d) < "
                            "1.25) over valid pixels, averaged over val images; intervals: 95% "
                            "bootstrap over images, gains paired. Lower RMSE and AbsRel are better."))  # fmt: skip
    png = dense_plot(sorted(plot_pts, key=lambda p: rank[p[0]]), out_dir)
    if png is not None:
        blocks.append(("img", png.name, "Segmentation mIoU and depth δ1: encoder vs random-init"))
    return blocks


def _metric(study_dir: Path, g: Any, uid: str, ev_name: str, metric: str, ev: Evidence,
            n_boot: int, seed: int) -> tuple[Estimate | None, Estimate | None, Estimate | None]:  # fmt: skip
    """(encoder, random-init, encoder - random-init) of one metric of one cell's eval."""
    import polars as pl

    sub = g.filter(
        pl.col("label").str.starts_with(
            ("segmentation " if metric == "miou" else "depth ") + metric
        )
    )
    if sub.is_empty():
        return None, None, None
    vals = {r["variant"]: float(r["value"]) for r in sub.iter_rows(named=True)}
    s = seed + zlib.crc32(f"{uid}/{ev_name}/{metric}".encode())
    if metric == "miou":
        counts = load_counts(study_dir, uid, ev_name)
        if "encoder" in counts:
            e, gain = miou_estimates(counts["encoder"], counts.get("random-init"), n_boot, s)
            t = None
            if "random-init" in counts:
                t, _ = miou_estimates(counts["random-init"], None, n_boot, s)
            return e, t, gain
    bench = str(sub.row(0, named=True)["benchmark"])
    ref = ScoreRef(ev_name, "probe", str(sub.row(0, named=True)["label"]), bench)
    out = {}
    for variant in ("encoder", "random-init"):
        o = ev.outcomes(uid, variant, ref)
        out[variant] = (stats.mean([o[0]], None, n_boot=n_boot, seed=s) if o is not None
                        else Estimate(vals[variant]) if variant in vals else None)  # fmt: skip
    oe, ot = ev.outcomes(uid, "encoder", ref), ev.outcomes(uid, "random-init", ref)
    gain = (stats.difference([oe[0]], [ot[0]], None, n_boot=n_boot, seed=s) if oe and ot
            else None)  # fmt: skip
    return out["encoder"], out["random-init"], gain


def load_counts(study_dir: Path, uid: str, ev_name: str) -> dict[str, Any]:
    from webssl_cli.results.dense import load_counts as _load

    return _load(study_dir, uid, ev_name)


def _txt(e: Estimate | None, k: float, metric: str, sign: bool = False) -> str:
    if e is None:
        return "—"
    return e.scaled(k).text(1 if k == 100.0 else 3, sign=sign)


def _span(e: Estimate) -> tuple[float, float]:
    """(below, above) the value: the error bar of a 95% interval, zero without one."""
    if e.lo is None or e.hi is None:
        return 0.0, 0.0
    return e.value - e.lo, e.hi - e.value


def dense_plot(points: list[tuple[str, str, Estimate, Estimate]], out_dir: Path) -> Path | None:
    """Grouped bars with their 95% intervals: per cell, encoder and random-init, one panel per
    metric, the cells in the order of ``points`` in every panel."""
    if not points:
        return None
    from webssl_cli.report.plots import _plt, _save

    plt = _plt()
    metrics = [m for m in ("miou", "delta1") if any(p[1] == m for p in points)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 3.6), squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=True):
        pts = [p for p in points if p[1] == m]
        x = np.arange(len(pts))
        for dx, ests, name in ((-0.2, [p[2] for p in pts], "encoder"),
                               (0.2, [p[3] for p in pts], "random-init")):  # fmt: skip
            err = np.array([_span(e) for e in ests]).T
            ax.bar(x + dx, [e.value for e in ests], 0.4, yerr=err, capsize=3, label=name)
        ax.set_xticks(x, [p[0] for p in pts], rotation=30, ha="right")
        ax.set_ylabel(_HEAD[m])
        ax.set_title({"miou": "Segmentation mIoU", "delta1": "Depth δ1"}[m])
        ax.margins(y=0.25)
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="upper center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return _save(fig, out_dir, "dense_probes")
