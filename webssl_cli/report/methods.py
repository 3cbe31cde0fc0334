"""Method as a curve family: Web-DINO, CLIP and Web-MAE compared on the same axes.

For a study whose cells train more than one method: the average and each category versus model
size (at the samples-seen budget most methods share) and versus samples seen (for the model
most methods share), one line per method, with 95% intervals from the per-example outcomes as
every other score of the report; tables of method x model size; and each other method against
the main one (Web-DINO) per model size, paired over the evaluation examples both share, saying
whether the difference is detectable. Cells repeated over seeds are pooled; the main data
filter only, so a line differs by its method alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from webssl_cli.report import findings as fnd
from webssl_cli.report.evidence import Evidence
from webssl_cli.report.plots import _grid, _log_x, _plt, _save, headline_labels
from webssl_cli.report.stats import Estimate, verdict
from webssl_cli.report.tables import Table, digits, fmt_count, fmt_est, is_error, unit

METHOD_ORDER = ("webdino", "clip", "mae")
METHOD_NAMES = {"webdino": "Web-DINO", "clip": "CLIP", "mae": "Web-MAE"}
_COLORS = {"webdino": "tab:blue", "clip": "tab:orange", "mae": "tab:green"}

Key = tuple[str, str, str, int]  # (label, method, model, samples_seen)


def main_method(methods: list[str]) -> str:
    """The method the rest of the report measures: Web-DINO when the study trains it."""
    return "webdino" if "webdino" in methods else sorted(methods, key=_rank)[0]


def _rank(m: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m)


def _name(m: str) -> str:
    return METHOD_NAMES.get(m, m)


def _groups(s: Any) -> dict[tuple[str, str, int], list[str]]:
    """(method, model, samples seen) -> the uids of its cells (seeds pooled)."""
    return {(str(m), str(mo), int(n)): sorted(g["uid"].unique().to_list())
            for (m, mo, n), g in s.group_by(["method", "model", "samples_seen"])}  # fmt: skip


def estimates(s: Any, ev: Evidence, labels: list[str]) -> dict[Key, Estimate]:
    """Every (label, method, model, budget) score of ``s`` (one data filter), seeds pooled."""
    import polars as pl

    refs = fnd.score_refs(s)
    out: dict[Key, Estimate] = {}
    for (method, model, samples), g in s.group_by(["method", "model", "samples_seen"]):
        uids = sorted(g["uid"].unique().to_list())
        for lab in labels:
            e = ev.mean(uids, refs[lab]) if lab in refs else None
            if e is None:
                vals = g.filter(pl.col("label") == lab)["value"].drop_nulls()
                e = Estimate(float(vals.mean())) if len(vals) else None  # type: ignore[arg-type]
            if e is not None:
                out[(lab, str(method), str(model), int(samples))] = e
    return out


def _slice(s: Any, axis: str) -> Any:
    """The fixed value of the other axis with the most (method, ``axis`` value) points, the
    largest on ties: a budget for the model-size curves, a model for the samples curves."""
    other = "samples_seen" if axis == "params" else "model"
    counts: dict[Any, tuple[int, int, Any]] = {}
    for (v,), g in s.group_by([other]):
        k = g.select("method", axis).unique().height
        methods = g["method"].n_unique()
        size = g["params"].max() if other == "model" else v
        counts[v] = (methods, k, size or 0)
    return max(counts, key=lambda v: counts[v]) if counts else None


def method_plot(axis: str, s: Any, est: dict[Key, Estimate], labels: list[str], out: Path,
                study: str, flt: str | None) -> Path | None:  # fmt: skip
    """Score vs ``axis`` ('params' | 'samples_seen'): one panel per label, one line per method."""
    import polars as pl

    fixed = _slice(s, axis)
    if fixed is None:
        return None
    other = "samples_seen" if axis == "params" else "model"
    d = s.filter(pl.col(other) == fixed)
    if d[axis].n_unique() < 2:
        return None
    plt = _plt()
    nr, nc = _grid(len(labels))
    fig, axes = plt.subplots(nr, nc, figsize=(4.2 * nc, 3.3 * nr), squeeze=False)
    methods = sorted(d["method"].unique().to_list(), key=_rank)
    for ax, lab in zip(axes.flat, labels, strict=False):
        for m in methods:
            pts = (d.filter((pl.col("method") == m) & (pl.col("label") == lab))
                   .select("model", "params", "samples_seen").unique().sort(axis))  # fmt: skip
            xs, ys, lo, hi, has_iv = [], [], [], [], False
            for r in pts.iter_rows(named=True):
                e = est.get((lab, m, r["model"], r["samples_seen"]))
                if e is None:
                    continue
                xs.append(r[axis])
                ys.append(e.value)
                iv = e.has_interval and e.lo is not None and e.hi is not None
                lo.append(max(0.0, e.value - e.lo) if iv else 0.0)  # type: ignore[operator]
                hi.append(max(0.0, e.hi - e.value) if iv else 0.0)  # type: ignore[operator]
                has_iv = has_iv or iv
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi] if has_iv else None, fmt="o-", lw=1.6, ms=4,
                            capsize=2.5 if has_iv else 0, color=_COLORS.get(m), label=_name(m))  # fmt: skip
        _log_x(ax, d[axis].to_list())
        ax.set_title(lab)
        ax.set_xlabel("backbone parameters (log)" if axis == "params" else "samples seen (log)")
        ax.set_ylabel("score (%)")
    for ax in list(axes.flat)[len(labels) :]:
        ax.axis("off")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=max(1, len(names)), frameon=False,
               bbox_to_anchor=(0.5, -0.02), title="method")  # fmt: skip
    at = f"{fmt_count(fixed)} samples seen" if axis == "params" else f"model {fixed}"
    what = "model size" if axis == "params" else "samples seen"
    fig.suptitle(f"{study}: score vs {what} per method ({at}{f', filter = {flt}' if flt else ''})",
                 fontsize=12)  # fmt: skip
    fig.tight_layout(rect=(0, 0.75 / fig.get_figheight(), 1, 1 - 0.45 / fig.get_figheight()))
    return _save(fig, out, "method_vs_params" if axis == "params" else "method_vs_samples")


def method_table(s: Any, est: dict[Key, Estimate], label: str) -> Table | None:
    """``label`` with the methods down and the model sizes across, at the shared budget."""
    import polars as pl

    budget = _slice(s, "params")
    d = s.filter((pl.col("samples_seen") == budget) & (pl.col("label") == label))
    if d.is_empty():
        return None
    models = d.select("model", "params").unique().sort("params")
    methods = sorted(d["method"].unique().to_list(), key=_rank)
    rows = [[_name(m)] + [fmt_est(est.get((label, m, r["model"], budget)), label=label)
                          for r in models.iter_rows(named=True)] for m in methods]  # fmt: skip
    headers = ["method"] + [f"{r['model']} ({fmt_count(r['params'])})" for r in models.iter_rows(named=True)]  # fmt: skip
    return Table(f"{label}: method × model size", headers, rows,
                 f"{label} ({unit(label)}) at {fmt_count(budget)} samples seen, 95% intervals.")  # fmt: skip


def _judged(e: Estimate, label: str | None = None) -> str:
    """``+3.1 [0.4, 5.5] detectable``: a difference with its interval and verdict."""
    return f"{e.text(digits(label), sign=True)} {verdict(e)}"


def difference_table(s: Any, ev: Evidence, labels: list[str], main: str) -> Table | None:
    """Each other method minus ``main`` per label and model size at the shared budget, paired
    over the examples both cells were evaluated on, with the verdict."""
    import polars as pl

    budget = _slice(s, "params")
    groups, refs = _groups(s), fnd.score_refs(s)
    d = s.filter(pl.col("samples_seen") == budget)
    models = d.select("model", "params").unique().sort("params")["model"].to_list()
    others = [m for m in sorted(d["method"].unique().to_list(), key=_rank) if m != main]
    rows = []
    for other in others:
        for lab in (x for x in labels if x in refs):
            cells = []
            for model in models:
                a, b = groups.get((other, model, budget)), groups.get((main, model, budget))
                e = ev.difference(a, b, refs[lab]) if a and b else None
                cells.append("" if e is None else _judged(e, lab))
            if any(cells):
                rows.append([f"{_name(other)} − {_name(main)}", lab, *cells])
    if not rows:
        return None
    return Table(f"Methods against {_name(main)}, paired", ["difference", "score", *models], rows,
                 f"Points at {fmt_count(budget)} samples seen: the other method's score minus "
                 f"{_name(main)}'s on the same evaluation examples (paired bootstrap, 95%).")  # fmt: skip


def own_scores_table(s: Any, ev: Evidence, labels: list[str], also: dict[str, list[str]] | None = None,
                     counts: dict[str, tuple[int, int]] | None = None) -> Table | None:  # fmt: skip
    """Scores only some methods have (zero-shot, retrieval), and for the methods in ``also``
    (method -> labels) those labels too, per cell, against the cell's own random-init twin on
    the same examples (paired), with the verdict. ``counts`` receives, per method name, (pairs,
    pairs detectably better than the twin)."""
    refs = fnd.score_refs(s)
    params = dict(s.select("model", "params").unique().iter_rows())
    rows: list[list[str]] = []
    tally = {} if counts is None else counts  # method -> (pairs, detectably better than the twin)
    for (method, model, samples), uids in sorted(
        _groups(s).items(), key=lambda kv: (_rank(kv[0][0]), params[kv[0][1]] or 0, kv[0][2])
    ):
        for lab in [*labels, *(also or {}).get(method, [])]:
            if lab not in refs:
                continue
            e = ev.mean(uids, refs[lab])
            r = ev.mean(uids, refs[lab], "random-init")
            d = ev.difference(uids, uids, refs[lab], "encoder", "random-init")
            if e is not None and r is not None and d is not None:
                rows.append([_name(method), model, fmt_count(samples), lab, fmt_est(e, label=lab),
                             fmt_est(r, label=lab), _judged(d, lab)])  # fmt: skip
                better = d.detectable and (d.value < 0) == is_error(lab)
                n, k = tally.get(_name(method), (0, 0))
                tally[_name(method)] = (n + 1, k + better)
    if not rows:
        return None
    said = "; ".join(twin_counts(tally))
    return Table("Methods against their random-init twins",
                 ["method", "model", "samples seen", "score", "encoder", "random-init", "gain"],
                 rows, "Gain = encoder − the same towers at their initial weights, on the same "
                       "examples (paired bootstrap, 95%); for depth RMSE and AbsRel lower is "
                       f"better. {said}.")  # fmt: skip


def twin_counts(tally: dict[str, tuple[int, int]]) -> list[str]:
    """``Web-MAE: detectably better than its twin in 4 of 8 (cell, score) pairs`` per method."""
    return [f"{m}: detectably better than its random-init twin in {k} of {n} (cell, score) pairs"
            for m, (n, k) in tally.items()]  # fmt: skip


def method_section(con: Any, study: str, cells: Any, main: Any, factors: Any, out: Path,
                   main_filter: str | None, n_boot: int, seed: int
                   ) -> tuple[list[Any], list[str]]:  # fmt: skip
    """Report blocks of the method comparison and its findings (each other method against its
    random-init twins); none when the study trains a single method. ``cells`` carries a
    ``method`` column; ``main``: the study's encoder scores in %."""
    import polars as pl

    from webssl_cli.results import queries

    if cells["method"].n_unique() < 2:
        return [], []
    uids = cells["uid"].to_list()
    s = main.join(cells.select("uid", "method"), on="uid", how="inner")
    if main_filter is not None:
        s = s.filter(pl.col("data_filter") == main_filter)
    labels = headline_labels(s)
    if s.is_empty() or not labels:
        return [("h2", "Methods"), ("p", "No method has scores yet.")], []
    factor = {r["label"]: r["_f"] for r in factors.filter(pl.col("study") == study).iter_rows(named=True)}  # fmt: skip
    results: Any = pl.from_arrow(con.sql(
        "SELECT uid, eval_name, variant, benchmark, category FROM eval_results").to_arrow_table())  # fmt: skip
    ev = Evidence(queries.examples(con, uids), results.filter(pl.col("uid").is_in(uids)), factor,
                  n_boot=n_boot, seed=seed)  # fmt: skip
    est = estimates(s, ev, labels)
    main_m = main_method(cells["method"].unique().to_list())
    names = ", ".join(_name(m) for m in sorted(s["method"].unique().to_list(), key=_rank))
    blocks: list[Any] = [("h2", "Methods"), ("p", (
        f"Methods trained on the same data and evaluated the same way: {names}. One line per "
        "method; intervals as in the tables. The sections below measure the "
        f"{_name(main_m)} cells only."))]  # fmt: skip
    shared = [lab for lab in labels
              if s.filter(pl.col("label") == lab)["method"].n_unique() > 1]  # fmt: skip
    probes = s.filter(pl.col("kind") == "probe")["label"].unique().to_list()
    for lab in [labels[0], *(x for x in shared if x in probes and x != labels[0])]:
        table = method_table(s, est, lab)
        if table is not None:
            blocks.append(table)
    diff = difference_table(s, ev, shared, main_m)
    if diff is not None:
        blocks.append(diff)
    also = {
        m: [x for x in shared if x in probes] for m in s["method"].unique().to_list() if m != main_m
    }
    counts: dict[str, tuple[int, int]] = {}
    own = own_scores_table(s, ev, [x for x in labels if x not in shared], also, counts)
    if own is not None:
        blocks.append(own)
    for axis, cap in (("params", "Score vs model size, one line per method (95% intervals)"),
                      ("samples_seen", "Score vs samples seen, one line per method (95% intervals)")):  # fmt: skip
        p = method_plot(axis, s, est, labels, out, study, main_filter)
        if p is not None:
            blocks.append(("img", p.name, cap))
    return blocks, [f"{c}." for c in twin_counts(counts)]
