"""Report tables: built once as data, rendered as Markdown (tabulate) and as HTML."""

from __future__ import annotations

import html as _html
import math
import re
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from webssl_cli.report.fits import Fit

_NUMERIC = re.compile(r"[-+]?[0-9.]+(e[-+]?[0-9]+)?[KMBT%]?( \[[-+0-9.]+, [-+0-9.]+\])?|—")
HEADLINE_ORDER = ("Average", "General", "Knowledge", "OCR & Chart", "Vision-Centric")
# Errors in their own units (depth RMSE in metres, AbsRel), where lower is better: never shown
# in %, with three decimals, and left out of the headline findings (whose wording reads higher
# as better).
ERROR_METRICS = r"^depth (rmse|absrel)\b"


def is_error(label: str) -> bool:
    return re.match(ERROR_METRICS, label) is not None


def digits(label: str | None) -> int:
    """Decimals a score is shown with: points of % at one, errors in their units at three."""
    return 3 if label is not None and is_error(label) else 1


def unit(label: str) -> str:
    return "lower is better" if is_error(label) else "%"


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[Any]]
    note: str = ""

    def markdown(self) -> str:
        body = tabulate(self.rows, headers=self.headers, tablefmt="github", disable_numparse=True)
        note = f"\n\n{self.note}" if self.note else ""
        return f"### {self.title}\n\n{body}{note}\n"

    def html(self) -> str:
        def td(c: Any) -> str:
            text = str(c)
            num = _NUMERIC.fullmatch(text) is not None
            return (
                f"<td class='num'>{_html.escape(text)}</td>"
                if num
                else f"<td>{_html.escape(text)}</td>"
            )

        head = "".join(f"<th>{_html.escape(h)}</th>" for h in self.headers)
        rows = "\n".join("<tr>" + "".join(td(c) for c in r) + "</tr>" for r in self.rows)
        body = f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>"
        note = f"<p class='note'>{_html.escape(self.note)}</p>" if self.note else ""
        return f"<h3>{_html.escape(self.title)}</h3>\n{body}\n{note}\n"


def fmt_count(x: Any) -> str:
    """1234567 -> '1.23M'; None -> '—'."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    x = float(x)
    for div, suf in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suf}"
    return f"{x:.3g}"


def fmt_score(x: Any, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{float(x):.{digits}f}"


def fmt_num(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:.3g}" if abs(x) < 1e4 else fmt_count(x)


def fmt_est(est: Any, fallback: Any = None, label: str | None = None) -> str:
    """An ``Estimate`` as ``62.1 [58.3, 65.8]`` (just the number without an interval); an error
    metric's ``label`` gives three decimals."""
    if est is None:
        return (
            f"{fallback:.3f}"
            if fallback is not None and label and is_error(label)
            else fmt_score(fallback)
        )
    return str(est.text(digits(label)))


def label_order(labels: list[str]) -> list[str]:
    first = [h for h in HEADLINE_ORDER if h in labels]
    return first + sorted(x for x in labels if x not in first)


def cell_table(
    cells: Any, scores: Any, final_loss: dict[str, float], est: dict[Any, Any] | None = None
) -> Table:
    """One row per cell: axes, state, final loss and every headline score (categories, probes),
    with its 95% interval where ``est`` ((uid, label) -> Estimate) has one."""
    import polars as pl

    head = scores.filter(pl.col("kind").is_in(["category", "probe"]))
    labels = label_order(head["label"].unique().to_list())
    by = {(r["uid"], r["label"]): r["value"] for r in head.iter_rows(named=True)}
    rows = []
    for c in cells.iter_rows(named=True):
        rows.append(
            [c["model"], fmt_count(c["params"]), fmt_count(c["samples_seen"]), c["data_filter"] or "—",
             c["state"], fmt_num(final_loss.get(c["uid"], float("nan")))]
            + [fmt_est((est or {}).get((c["uid"], lab)), by.get((c["uid"], lab)), lab) for lab in labels]
        )  # fmt: skip
    return Table(
        "Scores per cell",
        ["model", "params", "samples seen", "filter", "state", "final loss", *labels],
        rows,
        "Scores in % [95% bootstrap interval over the evaluation examples]"
        + (
            "; depth RMSE (metres) and AbsRel in their own units, lower is better"
            if any(is_error(x) for x in labels)
            else ""
        )
        + ". Categories are means of their benchmarks; Average is the mean of the categories.",
    )


def benchmark_table(cells: Any, scores: Any, est: dict[Any, Any] | None = None) -> Table | None:
    import polars as pl

    b = scores.filter(pl.col("kind") == "benchmark")
    if b.is_empty():
        return None
    cat_of = {
        r["label"]: r["category"]
        for r in b.select("label", "category").unique().iter_rows(named=True)
    }
    labels = sorted(
        cat_of, key=lambda x: (label_order(list(set(cat_of.values()))).index(cat_of[x]), x)
    )
    by = {(r["uid"], r["label"]): r["value"] for r in b.iter_rows(named=True)}
    rows = [
        [c["model"], fmt_count(c["samples_seen"]), c["data_filter"] or "—"]
        + [fmt_est((est or {}).get((c["uid"], lab)), by.get((c["uid"], lab))) for lab in labels]
        for c in cells.iter_rows(named=True)
    ]
    return Table(
        "Scores per benchmark",
        ["model", "samples seen", "filter", *labels],
        rows,
        "Scores in % [95% bootstrap interval].",
    )


def pivot_table(
    scores: Any,
    label: str,
    rows_by: str,
    cols_by: str,
    fixed: dict[str, Any],
    title: str,
    est: dict[Any, Any] | None = None,
) -> Table | None:
    """``label`` with one axis down and one across, the others fixed (e.g. model × samples seen).
    ``est``: (label, model, samples_seen, data_filter) -> Estimate of the cell (seeds pooled)."""
    import polars as pl

    s = scores.filter(pl.col("label") == label)
    for k, v in fixed.items():
        s = s.filter(pl.col(k) == v)
    if s.is_empty():
        return None
    row_keys = sorted(s[rows_by].unique().to_list(), key=_axis_key(s, rows_by))
    col_keys = sorted(s[cols_by].unique().to_list(), key=_axis_key(s, cols_by))
    vals = s.group_by([rows_by, cols_by]).agg(
        pl.col("value").mean(), pl.col("model").first().alias("_m"),
        pl.col("samples_seen").first().alias("_s"), pl.col("data_filter").first().alias("_f"),
        pl.col("model").n_unique().alias("_nm"), pl.col("samples_seen").n_unique().alias("_ns"),
        pl.col("data_filter").n_unique().alias("_nf"),
    )  # fmt: skip
    by = {(r[rows_by], r[cols_by]): r for r in vals.iter_rows(named=True)}

    def cell(rk: Any, ck: Any) -> str:
        r = by.get((rk, ck))
        if r is None:
            return fmt_score(None)
        one = r["_nm"] == r["_ns"] == r["_nf"] == 1  # a single cell (its seeds pooled)
        e = (est or {}).get((label, r["_m"], r["_s"], r["_f"])) if one else None
        return fmt_est(e, r["value"], label)

    rows = []
    for rk in row_keys:
        rows.append([_axis_label(s, rows_by, rk)] + [cell(rk, ck) for ck in col_keys])
    headers = [rows_by.replace("_", " ")] + [_axis_label(s, cols_by, ck) for ck in col_keys]
    fixed_txt = ", ".join(
        f"{k.replace('_', ' ')} = {_axis_label(s, k, v)}" for k, v in fixed.items()
    )
    return Table(
        title,
        headers,
        rows,
        f"{label} ({unit(label)}); {fixed_txt}." if fixed_txt else f"{label} ({unit(label)}).",
    )


def _axis_key(s: Any, axis: str) -> Any:
    if axis == "model":
        params = {
            r["model"]: r["params"] or 0
            for r in s.select("model", "params").unique().iter_rows(named=True)
        }
        return lambda m: (params.get(m, 0), str(m))
    return lambda v: (v is None, v)


def _axis_label(s: Any, axis: str, v: Any) -> str:
    if axis == "model":
        p = s.filter(s["model"] == v)["params"].to_list()
        return f"{v} ({fmt_count(p[0])})" if p and p[0] else str(v)
    if axis == "samples_seen":
        return fmt_count(v)
    return str(v)


def filter_table(stats: Any) -> Table | None:
    if stats is None or stats.is_empty():
        return None
    rows = [[r["filter_key"], fmt_count(r["kept"]), fmt_count(r["total"]),
             "—" if r["fraction"] is None else f"{100 * r['fraction']:.1f}%"] for r in stats.iter_rows(named=True)]  # fmt: skip
    return Table("Data filters", ["filter", "kept", "total", "kept %"], rows)


def _iv(iv: tuple[float, float] | None) -> str:
    return "—" if iv is None else f"[{fmt_num(iv[0])}, {fmt_num(iv[1])}]"


def fit_tables(fits: list[Fit]) -> list[Table]:
    """Parameters with 95% intervals; hold-out errors; extrapolation with predictive intervals."""
    if not fits:
        return []
    prm_rows, hold_rows, ext_rows = [], [], []
    for f in fits:
        form = {"params": "score = c − a·(N/N₀)^−α", "samples_seen": "score = c − a·(D/D₀)^−α",
                "joint": "error = E + A·(N/N₀)^−α + B·(D/D₀)^−β"}[f.form]  # fmt: skip
        x0 = ", ".join(fmt_count(v) for v in f.x0)
        if not f.ok:
            prm_rows.append([f.target, form, f.slice, f.n, "—", f.note])
            continue
        est, ivs = f.estimate(), f.intervals()
        txt = "; ".join(
            f"{k} = {fmt_num(v)} {_iv(ivs[k]) if ivs else ''}".strip() for k, v in est.items()
        )
        prm_rows.append([f.target, form, f.slice, f.n, f"{txt} (x₀ = {x0})", f.note or "ok"])
        h = f.holdout
        if h is not None:
            inside = "—" if h.inside is None else ("yes" if h.inside else "no")
            held = ", ".join(f"{a}={fmt_count(v)}" for a, v in zip(_axes(f), h.point, strict=True))
            hold_rows.append([f.target, f.form, held, fmt_score(h.actual), fmt_score(h.predicted),
                              f"{h.error:+.2f}", _iv(None if h.lo is None or h.hi is None else (h.lo, h.hi)), inside])  # fmt: skip
        if not f.extra.get("extrapolate", True):
            continue  # no extrapolation from a trend that is not detectable
        xmax = f.X.max(axis=0)
        for k in (2, 4, 10):
            pt = xmax * k
            pred = float(f.predict(pt[None, :])[0])
            iv = f.predict_interval(pt[None, :])
            where = ", ".join(f"{a}={fmt_count(v)}" for a, v in zip(_axes(f), pt, strict=True))
            ext_rows.append([f.target, f.form, f"{where} ({k}× largest)", fmt_score(pred),
                             "too few points" if iv is None else _iv((float(iv[0][0]), float(iv[1][0])))])  # fmt: skip
        if f.form != "joint" and "c" in est:
            civ = ivs["c"] if ivs else None
            ext_rows.append([f.target, f.form, "limit (x → ∞)", fmt_score(est["c"]), _iv(civ)])
    out = [Table("Scaling-law fits", ["target", "form", "cells", "n", "parameters [95% bootstrap interval]", "note"],
                 prm_rows, "Multi-start least squares (joint: Huber on log error); parametric bootstrap.")]  # fmt: skip
    if hold_rows:
        out.append(Table("Hold-out of the largest scale", ["target", "form", "held out", "actual", "predicted",
                                                          "error", "95% interval", "inside"], hold_rows,
                         "Fitted without the largest scale, then asked to predict it."))  # fmt: skip
    if ext_rows:
        out.append(Table("Extrapolation", ["target", "form", "at", "predicted", "95% interval"], ext_rows,
                         "Predictive intervals (curve uncertainty + observation noise); few points give wide ones."))  # fmt: skip
    return out


def _axes(f: Fit) -> list[str]:
    return ["N", "D"] if f.form == "joint" else (["N"] if f.form == "params" else ["D"])
