"""What a study shows, measured: trends along each scaling axis, gains over the baselines run
beside each cell, training diagnostics, and the findings sentences built from them.

Cells that differ only by seed form a group (one point of the study, averaged over seeds);
``groups`` maps a group id to its cells. Every number carries its 95% interval when the cells
left per-example outcomes, and a verdict: "detectable" when the interval excludes zero.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from webssl_cli.report.evidence import Evidence, ScoreRef, plain_trend
from webssl_cli.report.stats import Estimate, Trend, describe_difference, describe_trend, verdict
from webssl_cli.report.tables import Table, digits, fmt_count, is_error

BASELINE_FILTERS = ("none", "full")
UNIFORM_FRACTION = 0.98  # final teacher entropy above this share of log K: still uniform
DEFAULT_PROTOTYPES = 131072
COLLAPSED_SPREAD = 1e-3  # images spread by less than 0.1% of the features' scale: collapsed


@dataclass
class Group:
    gid: str
    model: str | None
    params: int | None
    samples_seen: int | None
    data_filter: str | None
    uids: list[str]

    @property
    def name(self) -> str:
        seeds = f", {len(self.uids)} seeds" if len(self.uids) > 1 else ""
        return f"{self.model}, {fmt_count(self.samples_seen)} samples, {self.data_filter}{seeds}"


def make_groups(cells: Any, axes: dict[str, str]) -> dict[str, Group]:
    """Cells whose axes agree once ``seed`` is set aside share a group."""
    out: dict[str, Group] = {}
    for c in cells.iter_rows(named=True):
        a = json.loads(axes.get(c["uid"]) or "{}")
        a.pop("seed", None)
        key = json.dumps([c["model"], c["samples_seen"], c["data_filter"], a], sort_keys=True,
                         default=str)  # fmt: skip
        g = out.setdefault(key, Group(key, c["model"], c["params"], c["samples_seen"],
                                      c["data_filter"], []))  # fmt: skip
        g.uids.append(c["uid"])
    return out


def score_refs(main: Any) -> dict[str, ScoreRef]:
    """label -> the outcomes it is the mean of (first occurrence; labels are per eval)."""
    refs: dict[str, ScoreRef] = {}
    for r in main.select("eval_name", "kind", "label", "benchmark").unique(maintain_order=True).iter_rows(named=True):  # fmt: skip
        refs.setdefault(r["label"], ScoreRef(r["eval_name"], r["kind"], r["label"], r["benchmark"]))
    return refs


def group_value(main: Any, g: Group, label: str) -> float | None:
    vals = [r["value"] for r in main.iter_rows(named=True)
            if r["uid"] in g.uids and r["label"] == label and r["value"] is not None]  # fmt: skip
    return sum(vals) / len(vals) if len(vals) == len(g.uids) else None


def group_estimate(ev: Evidence, main: Any, g: Group, ref: ScoreRef) -> Estimate | None:
    e = ev.mean(g.uids, ref)
    if e is not None:
        return e
    v = group_value(main, g, ref.label)
    return None if v is None else Estimate(v, n_seeds=len(g.uids))


# ---- trends ----------------------------------------------------------------------------------
@dataclass
class TrendRow:
    label: str
    axis: str  # 'parameters' | 'samples seen' | '<filter> − <baseline filter>'
    where: str
    estimate: Trend | None  # slope per doubling (None for a filter difference)
    diff: Estimate | None = None  # filter − baseline filter
    n_points: int = 0
    order: tuple[Any, ...] = ()  # larger = a slice at larger values of the other axes

    @property
    def effect(self) -> Estimate:
        return self.diff if self.diff is not None else self.estimate.slope  # type: ignore[union-attr]

    def sentence(self) -> str:
        if self.diff is not None:
            a, _, b = self.axis.partition(" − ")
            return describe_difference(self.diff, f"{self.label} at {self.where}", a, b)
        assert self.estimate is not None
        return describe_trend(self.estimate, f"{self.label} ({self.where})", self.axis)


def trends(main: Any, groups: dict[str, Group], ev: Evidence, labels: list[str]) -> list[TrendRow]:
    refs = score_refs(main)
    gs = list(groups.values())
    out: list[TrendRow] = []
    for lab in labels:
        ref = refs.get(lab)
        if ref is None:
            continue
        for axis, x_of, fixed in (
            ("parameters", lambda g: g.params, lambda g: (g.samples_seen, g.data_filter)),
            ("samples seen", lambda g: g.samples_seen, lambda g: (g.model, g.data_filter)),
        ):
            slices: dict[Any, list[Group]] = {}
            for g in gs:
                if x_of(g):
                    slices.setdefault(fixed(g), []).append(g)
            for key, members in sorted(slices.items(), key=lambda kv: str(kv[0])):
                members = sorted(members, key=x_of)
                if len({x_of(g) for g in members}) < 2:
                    continue
                xs = [float(x_of(g)) for g in members]
                t = ev.trend(xs, [g.uids for g in members], ref)
                if t is None:
                    means = [group_value(main, g, lab) for g in members]
                    if any(m is None for m in means):
                        continue
                    t = plain_trend(xs, means)  # type: ignore[arg-type]
                where = (f"{fmt_count(key[0])} samples seen, filter {key[1]}" if axis == "parameters"
                         else f"{key[0]}, filter {key[1]}")  # fmt: skip
                other = members[0].samples_seen if axis == "parameters" else members[0].params
                order = (len(members), key[1] in BASELINE_FILTERS, other or 0)
                out.append(TrendRow(lab, axis, where, t, n_points=len(members), order=order))
        by_cell: dict[Any, dict[str, Group]] = {}
        for g in gs:
            by_cell.setdefault((g.model, g.samples_seen), {})[str(g.data_filter)] = g
        for (model, samples), fl in sorted(by_cell.items(), key=lambda kv: str(kv[0])):
            base = next((fl[b] for b in BASELINE_FILTERS if b in fl), None)
            if base is None:
                continue
            for f, g in sorted(fl.items()):
                if g is base:
                    continue
                d = ev.difference(g.uids, base.uids, ref)
                if d is None:
                    va, vb = group_value(main, g, lab), group_value(main, base, lab)
                    if va is None or vb is None:
                        continue
                    d = Estimate(va - vb)
                out.append(TrendRow(lab, f"{f} − {base.data_filter}",
                                    f"{model}, {fmt_count(samples)} samples seen", None, d, 2,
                                    (g.params or 0, samples or 0)))  # fmt: skip
    return out


def trend_table(rows: list[TrendRow]) -> Table | None:
    if not rows:
        return None
    body = [[r.label, r.axis, r.where, r.n_points, r.effect.text(1, sign=True), verdict(r.effect)]
            for r in rows]  # fmt: skip
    return Table("Trends along each axis", ["score", "axis", "at", "points", "effect [95% CI]", "verdict"],
                 body, "Parameters and samples seen: change in points per doubling (least-squares slope of "
                 "score vs log2 x, paired bootstrap over shared examples). Data filter: the filtered "
                 "cell minus the unfiltered one.")  # fmt: skip


# ---- gains over baselines ----------------------------------------------------------------------
@dataclass
class GainRow:
    group: Group
    label: str
    baseline: str
    encoder: Estimate | None
    base: Estimate | None
    gain: Estimate | None


def gains(main: Any, base_scores: Any, groups: dict[str, Group], ev: Evidence,
          labels: list[str]) -> list[GainRow]:  # fmt: skip
    """Encoder − baseline variant (random-init for probes, blind for VQA) per group and label."""
    refs = score_refs(main)
    out: list[GainRow] = []
    variants: dict[str, str] = {}
    for r in base_scores.select("eval_name", "variant").unique().iter_rows(named=True):
        variants.setdefault(r["eval_name"], r["variant"])
    for g in groups.values():
        for lab in labels:
            ref = refs.get(lab)
            if ref is None or ref.eval_name not in variants:
                continue
            var = variants[ref.eval_name]
            enc = group_estimate(ev, main, g, ref)
            b = ev.mean(g.uids, ref, var)
            if b is None:
                v = group_value(base_scores.filter(base_scores["variant"] == var), g, lab)
                b = None if v is None else Estimate(v)
            d = ev.difference(g.uids, g.uids, ref, "encoder", var)
            if d is None and enc is not None and b is not None:
                d = Estimate(enc.value - b.value)
            out.append(GainRow(g, lab, var, enc, b, d))
    return out


def gain_table(rows: list[GainRow], title: str) -> Table | None:
    if not rows:
        return None
    body = [[r.group.name, r.label, "—" if r.encoder is None else r.encoder.text(digits(r.label)),
             r.baseline, "—" if r.base is None else r.base.text(digits(r.label)),
             "—" if r.gain is None else r.gain.text(digits(r.label), sign=True),
             "—" if r.gain is None else verdict(r.gain)] for r in rows]  # fmt: skip
    return Table(title, ["cell", "score", "encoder", "baseline", "baseline score", "gain [95% CI]", "verdict"],
                 body, "Gain = encoder − baseline on the same examples (paired bootstrap). random-init: the "
                 "same architecture untrained, same probe; blind: the same VQA training without the image."
                 + (" Depth RMSE (m) and AbsRel: lower is better, so a negative gain is the better one."
                    if any(is_error(r.label) for r in rows) else ""))  # fmt: skip


# ---- training diagnostics ------------------------------------------------------------------
@dataclass
class Diagnostics:
    table: Table | None
    warnings: list[str] = field(default_factory=list)


def _prototypes(spec_json: str | None) -> int:
    try:
        spec = json.loads(spec_json or "{}")
        k = ((spec.get("train") or {}).get("dino_head") or {}).get("n_prototypes")
        return int(k) if k else DEFAULT_PROTOTYPES
    except (ValueError, TypeError, AttributeError):
        return DEFAULT_PROTOTYPES


def diagnostics(cells: Any, final: dict[tuple[str, str], float], specs: dict[str, str],
                feats: dict[tuple[str, str], float]) -> Diagnostics:  # fmt: skip
    """``final``: (uid, metric) -> last logged value; ``feats``: (uid, name) -> the encoder's
    feature diagnostics (effective rank, per-dimension std) from a probe's eval."""
    rows, warns = [], []
    for c in cells.iter_rows(named=True):
        uid = c["uid"]
        k = _prototypes(specs.get(uid))
        ent = final.get((uid, "teacher_entropy"))
        share = None if ent is None else ent / math.log(k)
        rank, smean, smin, rms = (
            feats.get((uid, n)) for n in ("effective_rank", "dim_std_mean", "dim_std_min", "feature_rms")
        )  # fmt: skip
        # spread across images relative to the features' own scale (LayerNorm keeps each
        # vector's scale near 1 even when every image maps to the same vector)
        rel = None if smean is None or not rms else smean / rms
        rows.append([c["model"], fmt_count(c["samples_seen"]), c["data_filter"] or "—", f"{k:,}",
                     _n(ent), _n(share), _n(final.get((uid, "dino_loss"))), _n(final.get((uid, "ibot_loss"))),
                     _n(final.get((uid, "koleo_loss"))), _n(rank), _n(smean), _n(smin), _n(rel)])  # fmt: skip
        who = f"{c['model']}, {fmt_count(c['samples_seen'])} samples, filter {c['data_filter']} ({uid})"
        if share is not None and share > UNIFORM_FRACTION:
            warns.append(f"Warning: {who} did not leave the uniform assignment (final teacher entropy "
                         f"{ent:.2f} = {100 * share:.1f}% of log K = {math.log(k):.2f}).")  # fmt: skip
        flat = smean is not None and (smean < 1e-9 or (rel is not None and rel < COLLAPSED_SPREAD))
        if (rank is not None and rank < 2) or flat:
            warns.append(f"Warning: {who} collapsed (feature effective rank {_n(rank)}, "
                         f"per-dimension std mean {_n(smean)}, {_n(rel)} of the features' scale): "
                         "every image maps to nearly the same vector.")  # fmt: skip
    if not rows:
        return Diagnostics(None, warns)
    t = Table("Training diagnostics per cell",
              ["model", "samples seen", "filter", "K", "teacher entropy", "÷ log K", "DINO loss", "iBOT loss",
               "KoLeo", "eff. rank", "dim std mean", "dim std min", "std ÷ rms"], rows,
              "Final logged values. Teacher entropy near log K (÷ log K > 0.98): the teacher still assigns "
              "uniformly over the K prototypes. Effective rank: exp of the entropy of the normalised singular "
              "values of the centred CLS features of the probe's images (1 = one direction). std ÷ rms: the "
              "per-dimension spread across images relative to the features' scale (below 0.001: collapsed).")  # fmt: skip
    return Diagnostics(t, warns)


def _n(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "—"
    return f"{v:.3g}"


# ---- findings ----------------------------------------------------------------------------------
def findings(trend_rows: list[TrendRow], gain_rows: list[GainRow], warnings: list[str],
             headline: list[str], has_outcomes: bool) -> list[str]:  # fmt: skip
    """Sentences, each backed by a number and its interval: gains over baselines, the trend
    along each axis at the largest value of the others, the filters, then warnings."""
    out: list[str] = []
    if not has_outcomes:
        out.append("No per-example outcomes: the evaluations of this study predate them, so no score "
                   "has an interval and no effect below is tested (re-run the evals to get them).")  # fmt: skip
    for lab in headline:
        rows = [(r, r.gain) for r in gain_rows if r.label == lab and r.gain is not None]
        if rows:
            up = sum(g.detectable and g.value > 0 for _, g in rows)
            down = sum(g.detectable and g.value < 0 for _, g in rows)
            top, g = max(
                rows, key=lambda rg: (rg[0].group.params or 0, rg[0].group.samples_seen or 0)
            )
            out.append(f"{lab}: the encoder is detectably above its {top.baseline} baseline in {up} of "
                       f"{len(rows)} cells (below in {down}); at the largest ({top.group.name}) the gain "
                       f"is {g.text(1, sign=True)} points: {verdict(g)}.")  # fmt: skip
        for axis in ("parameters", "samples seen"):
            rows_a = [r for r in trend_rows if r.label == lab and r.axis == axis]
            if rows_a:
                best = max(rows_a, key=lambda r: r.order)
                n_det = sum(r.effect.detectable for r in rows_a)
                tested = sum(r.effect.has_interval for r in rows_a)
                extra = (f" Along {axis}, {n_det} of {tested} tested slices show a detectable trend."
                         if len(rows_a) > 1 and tested else "")  # fmt: skip
                out.append(best.sentence() + extra)
        rows_f = [r for r in trend_rows if r.label == lab and r.diff is not None]
        if rows_f:
            n_det = sum(r.effect.detectable for r in rows_f)
            tested = sum(r.effect.has_interval for r in rows_f)
            top_f = max(rows_f, key=lambda r: r.order)
            more = (
                f" {n_det} of {tested} tested filter comparisons are detectable." if tested else ""
            )
            out.append(top_f.sentence() + more)
    return out + warnings


def law_sentences(fits: list[Any]) -> list[str]:
    """One sentence per fitted law: where it was fitted and how well it predicted the largest
    scale when fitted without it (the check a user needs before trusting an extrapolation)."""
    out = []
    for f in fits:
        if not f.ok:
            continue
        what = {"params": "along parameters", "samples_seen": "along samples seen",
                "joint": "over parameters × samples seen"}[f.form]  # fmt: skip
        s = f"{f.target}: a saturating law {what} ({f.slice}) is fitted to {f.n} points"
        h = f.holdout
        if h is None:
            out.append(s + "; no hold-out (too few points without the largest scale).")
            continue
        pt = ", ".join(fmt_count(v) for v in h.point)
        if h.lo is None or h.hi is None:
            out.append(f"{s}; fitted without its largest scale ({pt}) it predicts {h.predicted:.1f} "
                       f"(no interval) where {h.actual:.1f} was measured.")  # fmt: skip
            continue
        where = "inside" if h.inside else "outside"
        out.append(f"{s}; fitted without its largest scale ({pt}) it predicts {h.predicted:.1f} "
                   f"[{h.lo:.1f}, {h.hi:.1f}], and the measured {h.actual:.1f} falls {where} that "
                   f"95% interval.")  # fmt: skip
    return out
