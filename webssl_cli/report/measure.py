"""Read what the report's statistics need from the database and measure it once: every score's
interval (per cell and per seed group), gains over baselines, trends, training diagnostics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from webssl_cli.report import findings as fnd
from webssl_cli.report.evidence import Evidence
from webssl_cli.report.stats import Estimate
from webssl_cli.report.tables import ERROR_METRICS, label_order

GroupKey = tuple[str, Any, Any, Any]  # (label, model, samples_seen, data_filter)


@dataclass
class Measured:
    groups: dict[str, fnd.Group]
    ev: Evidence
    cell_est: dict[tuple[str, str], Estimate] = field(default_factory=dict)  # (uid, label)
    group_est: dict[GroupKey, Estimate] = field(default_factory=dict)
    trends: list[fnd.TrendRow] = field(default_factory=list)
    gains: list[fnd.GainRow] = field(default_factory=list)
    diagnostics: fnd.Diagnostics = field(default_factory=lambda: fnd.Diagnostics(None))
    findings: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # scores their outcomes do not reproduce

    @property
    def has_outcomes(self) -> bool:
        return not self.ev.empty


def factors_of(scores: Any) -> Any:
    """(study, label, _f): 100 for a series whose values all lie in [0, 1], else 1."""
    import polars as pl

    frac = (pl.col("value").abs().max() <= 1.0) & ~pl.col("label").first().str.contains(
        ERROR_METRICS
    )
    return scores.group_by(["study", "label"]).agg(
        pl.when(frac).then(100.0).otherwise(1.0).alias("_f")
    )


def to_percent(scores: Any, factors: Any | None = None) -> Any:
    import polars as pl

    f = factors_of(scores) if factors is None else factors
    s = scores.join(f, on=["study", "label"], how="left")
    return s.with_columns((pl.col("value") * pl.col("_f").fill_null(1.0)).alias("value")).drop("_f")


def headline(main: Any) -> list[str]:
    import polars as pl

    s = main.filter(
        pl.col("kind").is_in(["category", "probe"]) & ~pl.col("label").str.contains(ERROR_METRICS)
    )
    return label_order(s["label"].unique().to_list())


def measure(con: Any, study: str, cells: Any, main: Any, factors: Any, n_boot: int = 1000,
            seed: int = 0) -> Measured:  # fmt: skip
    """``main``: the study's encoder scores in %; ``factors``: (study, label, _f) used for it."""
    import polars as pl

    from webssl_cli.results import queries

    uids = cells["uid"].to_list()
    specs = {r[0]: (r[1], r[2]) for r in con.execute(
        "SELECT uid, axes, spec FROM cell_specs WHERE study = ?", [study]).fetchall()}  # fmt: skip
    groups = fnd.make_groups(cells, {u: a for u, (a, _) in specs.items()})
    factor = {
        r["label"]: r["_f"] for r in factors.filter(pl.col("study") == study).iter_rows(named=True)
    }
    results: Any = pl.from_arrow(con.sql(
        "SELECT uid, eval_name, variant, benchmark, category FROM eval_results").to_arrow_table())  # fmt: skip
    results = results.filter(pl.col("uid").is_in(uids))
    ev = Evidence(queries.examples(con, uids), results, factor, n_boot=n_boot, seed=seed)
    every = queries.scores(con, variant=None).filter(pl.col("study") == study)
    base = to_percent(every.filter(pl.col("variant") != "encoder"), factors)
    m = Measured(groups, ev)

    refs = fnd.score_refs(main)
    for r in main.iter_rows(named=True):
        ref = refs.get(r["label"])
        e = None if ref is None else ev.mean([r["uid"]], ref)
        if (
            e is not None
            and r["value"] is not None
            and abs(e.value - r["value"]) > 1e-6 * max(1.0, abs(r["value"]))
        ):
            # the outcomes do not reproduce the reported score (another aggregation): no
            # interval rather than one around a different number
            m.mismatched.append(
                f"{r['label']} of {r['uid']}: outcomes give {e.value:.4g}, reported {r['value']:.4g}"
            )
            e = None
            ev.disabled.add(r["label"])
        if e is None and r["value"] is not None:
            e = Estimate(r["value"])
        if e is not None:
            m.cell_est[(r["uid"], r["label"])] = e
    m.cell_est = {k: Estimate(v.value) if k[1] in ev.disabled else v for k, v in m.cell_est.items()}
    for g in groups.values():
        for lab, ref in refs.items():
            e = fnd.group_estimate(ev, main, g, ref)
            if e is not None:
                m.group_est[(lab, g.model, g.samples_seen, g.data_filter)] = e

    heads = headline(main)
    m.trends = fnd.trends(main, groups, ev, heads)
    m.gains = fnd.gains(main, base, groups, ev, list(refs))
    final = {
        (r["uid"], r["name"]): r["value"] for r in queries.final_metrics(con).iter_rows(named=True)
    }
    feats: dict[tuple[str, str], float] = {}
    diag = queries.diagnostics(con).filter(pl.col("variant") == "encoder")
    for r in diag.sort("eval_name", descending=True).iter_rows(named=True):  # 'knn' before 'linear'
        feats.setdefault((r["uid"], r["name"]), r["value"])
    m.diagnostics = fnd.diagnostics(cells, final, {u: s for u, (_, s) in specs.items()}, feats)
    m.findings = fnd.findings(m.trends, [g for g in m.gains if g.label in heads],
                              m.diagnostics.warnings, heads, m.has_outcomes)  # fmt: skip
    return m
