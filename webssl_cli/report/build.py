"""Assemble a study's report: read the database, measure, fit, draw, write report.md + .html.

Scores are shown in percent: a score series (study × label) whose values all lie in [0, 1]
is multiplied by 100, so our fractions and a paper's percentages share an axis.

Order of the report: findings (each sentence a number with its 95% interval), tables (every
score with its interval), gains over the baselines, trends along each axis, then laws fitted
only where the points support their form, training diagnostics, plots.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webssl_cli.report import dense, plots
from webssl_cli.report import findings as fnd
from webssl_cli.report.fits import Fit, fit
from webssl_cli.report.html import markdown, render
from webssl_cli.report.measure import Measured, factors_of, measure, to_percent
from webssl_cli.report.methods import METHOD_NAMES, main_method, method_section
from webssl_cli.report.resolution import resolution_blocks
from webssl_cli.report.store import store_fits
from webssl_cli.report.tables import (
    Table,
    benchmark_table,
    cell_table,
    filter_table,
    fit_tables,
    fmt_count,
    pivot_table,
)

_LAW_MARGIN = 2  # a law is fitted only with at least (its parameters + this) distinct x values


@dataclass
class ReportResult:
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fits: list[Fit] = field(default_factory=list)


def _main_filter(cells: Any) -> str | None:
    """The data filter most cells train on, preferring an unfiltered one (cell.json's kind)."""
    cols = ["data_filter", "filter_kind"] if "filter_kind" in cells.columns else ["data_filter"]
    counts = cells.group_by(cols).len().rows(named=True)
    if not counts:
        return None
    best = max(
        counts, key=lambda r: (r["len"], r.get("filter_kind") == "none", str(r["data_filter"]))
    )
    return best["data_filter"]  # type: ignore[no-any-return]


def _pick_slice(
    main: Any, vary: str, fixed: list[str], main_filter: str | None
) -> dict[str, Any] | None:
    """The combination of ``fixed`` axes with the most distinct ``vary`` values."""
    import polars as pl

    g = main.group_by(fixed).agg(pl.col(vary).n_unique().alias("k"))
    if g.is_empty():
        return None
    rows = g.rows(named=True)
    best = max(rows, key=lambda r: (r["k"], r.get("data_filter") == main_filter,
                                    r.get("samples_seen") or 0, r.get("params") or 0))  # fmt: skip
    return {k: best[k] for k in fixed}


def _gated_fit(form: str, lab: str, X: Any, y: Any, desc: str, n_boot: int, seed: int,
               detectable: bool | None) -> Fit:  # fmt: skip
    """Fit the law only where the points support its form: enough distinct x values for its
    parameters plus a margin; the extrapolation only from a detectable trend."""
    import numpy as np

    from webssl_cli.report.fits import joint_law, saturating_law

    law = saturating_law(100.0) if X.shape[1] == 1 else joint_law(100.0)
    p = len(law.params)
    distinct = len({tuple(r) for r in np.asarray(X).tolist()})
    per_axis = min(len(np.unique(X[:, j])) for j in range(X.shape[1]))
    if distinct < p + _LAW_MARGIN or per_axis < 3:
        f = Fit(form, lab, desc, law, X, y, np.ones(X.shape[1]), seed=seed)
        f.note = (f"not fitted: {distinct} distinct point(s), {p} parameters need ≥ {p + _LAW_MARGIN}; "
                  "see the log-linear trend")  # fmt: skip
        return f
    out = fit(form, lab, X, y, ceiling=100.0, slice_desc=desc, n_boot=n_boot, seed=seed)
    out.extra["extrapolate"] = bool(detectable)
    if detectable is False:
        out.note = "; ".join(filter(None, [out.note, "trend not detectable: no extrapolation"]))
    return out


def _group_means(d: Any, cols: list[str]) -> Any:
    """Per-cell means (cells differing only by seed averaged) for fits of the means, in the
    order of ``cols``: the fits' seeded bootstrap draws its noise point by point, so an order
    that changed from run to run (polars' group_by) gave other intervals on the same data."""
    import polars as pl

    return d.group_by(cols).agg(pl.col("value").mean()).sort(cols)


def _fits(main: Any, main_filter: str | None, n_boot: int, seed: int,
          trend_rows: list[fnd.TrendRow]) -> list[Fit]:  # fmt: skip
    import numpy as np
    import polars as pl

    out: list[Fit] = []
    labels = plots.headline_labels(main)

    def detectable(lab: str, axis: str, where: str | None = None) -> bool | None:
        rows = [r for r in trend_rows if r.label == lab and r.axis == axis
                and (where is None or r.where == where)]  # fmt: skip
        if not rows or not any(r.effect.has_interval for r in rows):
            return None
        return any(r.effect.detectable for r in rows)

    for axis, fixed in (
        ("params", ["samples_seen", "data_filter"]),
        ("samples_seen", ["model", "params", "data_filter"]),
    ):
        sl = _pick_slice(main, axis, fixed, main_filter)
        if sl is None:
            continue
        d = main
        for k, v in sl.items():
            d = d.filter(pl.col(k).is_null() if v is None else pl.col(k) == v)
        desc = ", ".join(f"{k.replace('_', ' ')}={fmt_count(v) if k in ('samples_seen', 'params') else v}"
                         for k, v in sl.items() if k != "params")  # fmt: skip
        where = (f"{fmt_count(sl['samples_seen'])} samples seen, filter {sl['data_filter']}"
                 if axis == "params" else f"{sl['model']}, filter {sl['data_filter']}")  # fmt: skip
        t_axis = "parameters" if axis == "params" else "samples seen"
        for lab in labels:
            dl = d.filter(
                (pl.col("label") == lab)
                & pl.col(axis).is_not_null()
                & pl.col("value").is_not_null()
            )
            if dl.is_empty():
                continue
            dl = _group_means(dl, [axis])
            out.append(_gated_fit(axis, lab, dl[axis].to_numpy().astype(float)[:, None], dl["value"].to_numpy(),
                                  desc, n_boot, seed, detectable(lab, t_axis, where)))  # fmt: skip
    # the joint law on the headline score, over every model × budget of the main filter
    if labels:
        lab = labels[0]
        d = main.filter(
            (pl.col("label") == lab)
            & pl.col("params").is_not_null()
            & pl.col("samples_seen").is_not_null()
        )
        if main_filter is not None:
            d = d.filter(pl.col("data_filter") == main_filter)
        if d.height:
            d = _group_means(d, ["params", "samples_seen"])
            X = np.c_[
                d["params"].to_numpy().astype(float), d["samples_seen"].to_numpy().astype(float)
            ]
            both = [detectable(lab, a) for a in ("parameters", "samples seen")]
            det = None if None in both else all(both)
            out.append(_gated_fit("joint", lab, X, d["value"].to_numpy(),
                                  f"data filter={main_filter}, all models × budgets", n_boot, seed, det))  # fmt: skip
    return out


def build_report(
    study_dir: Path, out_dir: Path, n_boot: int = 200, seed: int = 0, n_boot_stats: int = 1000
) -> ReportResult:
    """``n_boot``: replicates of the law fits' parametric bootstrap; ``n_boot_stats``: of the
    bootstrap over per-example outcomes (intervals of scores, gains and trends)."""
    import polars as pl

    from webssl_cli.results import queries
    from webssl_cli.results.ingest import DB_NAME
    from webssl_cli.rundir import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    res = ReportResult(out_dir)
    with queries.connect(study_dir) as con:
        studies = dict(con.execute("SELECT study, kind FROM studies").fetchall())
        cells_all = queries.cells(con)
        raw = queries.scores(con)
        factors = factors_of(raw)
        scores_all = to_percent(raw, factors)
        n_loss = con.execute("SELECT count(*) FROM train_metrics WHERE name = 'loss'").fetchall()
        every = max(1, int(n_loss[0][0]) // 200_000)  # keep plots light for huge studies
        curves = queries.curves(con, "loss", every=every)
        fm = queries.final_metrics(con).filter(pl.col("name") == "loss")
        fstats = pl.from_arrow(
            con.sql("SELECT * FROM filter_stats ORDER BY filter_key").to_arrow_table()
        )
        runs = [s for s, k in studies.items() if k == "run"]
        if not runs:
            from webssl_cli.errors import UserError

            raise UserError(
                f"{study_dir}: the database holds no ingested cells; run `webssl results ingest` first"
            )
        study = max(runs, key=lambda s: cells_all.filter(pl.col("study") == s).height)
        method_of = queries.cell_methods(con)
        cells = cells_all.filter(pl.col("study") == study)
        cells = cells.with_columns(pl.Series("method", [method_of.get(u, "webdino") for u in cells["uid"]]))  # fmt: skip
        main = scores_all.filter(pl.col("study") == study)
        all_cells = cells
        main_m = main_method(cells["method"].unique().to_list())
        family, method_findings = method_section(con, study, cells, main, factors, out_dir,
                                                 _main_filter(cells),
                                n_boot_stats, seed)  # fmt: skip
        if family:  # the other sections measure one method: lines differ by model and budget
            cells = cells.filter(pl.col("method") == main_m)
            main = main.filter(pl.col("uid").is_in(cells["uid"].to_list()))
        ms = measure(con, study, cells, main, factors, n_boot=n_boot_stats, seed=seed)
    refs = scores_all.filter(
        pl.col("study").is_in([s for s, k in studies.items() if k == "reference"])
    )
    curves = curves.filter(pl.col("study") == study)
    final_loss = dict(zip(fm["uid"].to_list(), fm["value"].to_list(), strict=True))
    main_filter = _main_filter(cells)

    blocks: list[Any] = []
    states = ", ".join(f"{n} {s}" for s, n in sorted(all_cells.group_by("state").len().rows()))
    axes_txt = "; ".join(
        f"{name}: {', '.join(vals)}"
        for name, vals in (
            ("models", [str(m) for m in all_cells.sort("params", nulls_last=True)["model"].unique(maintain_order=True).to_list()]),
            ("samples seen", [fmt_count(v) for v in sorted(all_cells["samples_seen"].drop_nulls().unique().to_list())]),
            ("data filters", [str(v) for v in sorted(all_cells["data_filter"].drop_nulls().unique().to_list())]),
        )
    )  # fmt: skip
    per_method = ""
    if family:
        n_by = dict(all_cells.group_by("method").len().rows())
        per_method = (
            " (" + ", ".join(f"{METHOD_NAMES.get(m, m)} {n_by[m]}" for m in sorted(n_by)) + ")"
        )
    blocks.append(("p", f"{all_cells.height} cells{per_method}: {states}. {axes_txt}."))
    blocks.append(("h2", "Findings"))
    mine = ms.findings
    if family:  # several methods: say whose cells the measured findings are about
        mine = [f"{METHOD_NAMES.get(main_m, main_m)}: {f}" for f in mine]
    blocks += [("li", f) for f in mine + method_findings] or [
        ("p", "Nothing measured yet: no cell has scores.")
    ]
    blocks.append(("p", _method_note(ms)))
    blocks += family
    if not refs.is_empty():
        blocks.append(
            (
                "p",
                "Reference studies overlaid: "
                + ", ".join(sorted(refs["study"].unique().to_list()))
                + ".",
            )
        )
    if ms.mismatched:
        res.notes.append(
            f"{len(ms.mismatched)} score(s) are not the mean of their per-example outcomes, so they "
            f"carry no interval (first: {ms.mismatched[0]})"
        )
    for axis, name in (
        ("params", "model size"),
        ("samples_seen", "samples seen"),
        ("data_filter", "data filter"),
    ):
        if cells[axis].drop_nulls().n_unique() < 2:
            res.notes.append(f"{name} has a single value: no curve along it")

    blocks.append(("h2", "Tables"))
    tables: list[Table | None] = [cell_table(cells, main, final_loss, ms.cell_est)]
    labels = plots.headline_labels(main)
    if labels:
        head = labels[0]
        tables.append(pivot_table(main.filter(pl.col("data_filter") == main_filter) if main_filter else main,
                                  head, "model", "samples_seen", {"data_filter": main_filter} if main_filter else {},
                                  f"{head}: model size × samples seen", ms.group_est))  # fmt: skip
        if cells["data_filter"].n_unique() > 1:
            top = cells["samples_seen"].max()
            tables.append(pivot_table(main, head, "model", "data_filter", {"samples_seen": top},
                                      f"{head}: model size × data filter", ms.group_est))  # fmt: skip
    tables += [benchmark_table(cells, main, ms.cell_est), filter_table(fstats)]
    for ref in sorted(refs["study"].unique().to_list()):
        t = cell_table(
            cells_all.filter(pl.col("study") == ref), refs.filter(pl.col("study") == ref), {}
        )
        t.title = f"Reference: {ref}"
        t.note = "Imported published numbers; categories recomputed with the paper's aggregation."
        tables.append(t)
    blocks += [t for t in tables if t is not None]
    blocks += resolution_blocks(study_dir, study, main, out_dir, ms.cell_est)
    blocks += dense.dense_section(study_dir, out_dir, study, n_boot_stats, seed)

    blocks.append(("h2", "Gains over baselines"))
    heads = set(labels)
    g_head = fnd.gain_table(
        [g for g in ms.gains if g.label in heads], "Gain over the baseline, per cell"
    )
    top = max(ms.groups.values(), key=lambda g: (g.params or 0, g.samples_seen or 0), default=None)
    g_bench = fnd.gain_table([g for g in ms.gains if g.label not in heads and g.group is top],
                             f"Gain over the baseline per benchmark, {top.name if top else ''}")  # fmt: skip
    blocks += [t for t in (g_head, g_bench) if t is not None] or [
        ("p", "No baseline was evaluated beside these cells (no random-init or blind variant).")
    ]
    blocks.append(("h2", "Trends"))
    tt = fnd.trend_table(ms.trends)
    blocks.append(tt if tt is not None else ("p", "No axis has two values: no trend to measure."))

    blocks.append(("h2", "Plots"))
    drawn = [
        (plots.score_vs("params", main, refs, out_dir, main_filter, study, ms.group_est), "Score vs model size, per samples-seen budget (95% intervals)"),
        (plots.score_vs("samples_seen", main, refs, out_dir, main_filter, study, ms.group_est), "Score vs samples seen, per model (95% intervals)"),
        (plots.filter_bars(main, out_dir, study, ms.group_est), "Scores per data filter, per category and benchmark (95% intervals)"),
        (plots.loss_curves(curves, out_dir, study), "Training loss curves"),
    ]  # fmt: skip

    blocks.append(("h2", "Scaling-law fits"))
    fits = _fits(main, main_filter, n_boot, seed, ms.trends)
    res.fits = fits
    i = blocks.index(("h2", "Findings")) + 1 + len(ms.findings)  # after the other findings
    blocks[i:i] = [("li", s) for s in fnd.law_sentences(fits)]
    blocks += fit_tables(fits)
    fp = plots.fit_plot(fits, out_dir, study)
    drawn_fits = [
        (fp, "Fitted saturating power laws with 95% intervals, hold-out and extrapolation")
    ]
    # images go under their headings: plots before the fit section
    i = blocks.index(("h2", "Scaling-law fits"))
    blocks[i:i] = [("img", p.name, cap) for p, cap in drawn if p is not None]
    blocks += [("img", p.name, cap) for p, cap in drawn_fits if p is not None]
    blocks.append(("h2", "Training diagnostics"))
    if ms.diagnostics.table is not None:
        blocks.append(ms.diagnostics.table)
    blocks += [("p", w) for w in ms.diagnostics.warnings] or [
        ("p", "No cell stayed at the uniform assignment or collapsed (where measured).")
    ]
    if res.notes:
        blocks.append(("h2", "Notes"))
        blocks += [("p", n + ".") for n in res.notes]

    note = store_fits(study_dir / DB_NAME, study, fits)
    if note:
        res.notes.append(note)
    title = f"webssl report: {study}"
    md, html_path = out_dir / "report.md", out_dir / "report.html"
    atomic_write_text(md, markdown(title, blocks))
    atomic_write_text(html_path, render(title, blocks, out_dir))
    fit_rows = [{"target": f.target, "form": f.form, "slice": f.slice, "n": f.n, "note": f.note,
                 "estimate": f.estimate() if f.ok else None, "interval": f.intervals() if f.ok else None}
                for f in fits]  # fmt: skip
    atomic_write_text(out_dir / "fits.json", json.dumps(fit_rows, indent=2, default=float) + "\n")
    for p in (md, html_path, out_dir / "fits.json"):
        p.chmod(0o644)  # a report is for sharing (atomic writes create 0600 temp files)
    res.files = (
        [md, html_path, out_dir / "fits.json"]
        + sorted(out_dir.glob("*.png"))
        + sorted(out_dir.glob("*.svg"))
    )
    return res


def _method_note(ms: Measured) -> str:
    if not ms.has_outcomes:
        return ("Scores are shown without intervals: this study's evaluations left no per-example "
                "outcomes.")  # fmt: skip
    return ("Intervals: 95% percentile bootstrap over the evaluation examples (within each benchmark "
            "for categories; seeds resampled first where cells repeat over seeds). Differences and "
            "trends are paired: one resample of the shared example ids per replicate. \"Detectable\": "
            "the interval excludes zero; \"not detectable at this scale\": it does not (a null result "
            "at this study's size, not proof of no effect).")  # fmt: skip
