"""The report's access to per-example outcomes: every score of the tables as an ``Estimate``
with its interval, differences against baselines or other cells, trends along an axis.

A score row of ``queries.scores`` is identified by (eval name, kind, label, benchmark); its
outcomes are those of ``eval_examples`` for the same cell, eval, variant and benchmark. A
category is the mean of its benchmarks (each weighted equally, the bootstrap resampling within
each), Average the mean of the categories: the same aggregation the evaluations report.
Estimates are on the score's own scale times ``factor[label]`` (100 for fractions shown in %).
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from webssl_cli.report import stats
from webssl_cli.report.stats import Estimate, Key, Trend
from webssl_cli.specs.categories import NATIVE_SCALE


@dataclass(frozen=True)
class ScoreRef:
    """Which outcomes a score is the mean of."""

    eval_name: str
    kind: str  # category | benchmark | probe
    label: str
    benchmark: str | None  # None for categories


class Evidence:
    def __init__(self, examples: Any, results: Any, factor: Mapping[str, float],
                 n_boot: int = 1000, seed: int = 0) -> None:  # fmt: skip
        """``examples``: eval_examples rows; ``results``: eval_results rows (uid, eval_name,
        variant, benchmark, category) for the study's cells."""
        self.factor = dict(factor)
        self.n_boot, self.seed = n_boot, seed
        self._raw: dict[tuple[str, str, str, str], dict[Key, float]] = {}
        if examples is not None and examples.height:
            for (uid, ev, var, bench), g in examples.group_by(
                ["uid", "eval_name", "variant", "benchmark"]
            ):
                b = str(bench)
                self._raw[(str(uid), str(ev), str(var), b)] = dict(
                    zip(((b, str(e)) for e in g["example"].to_list()), g["value"].to_list(),
                        strict=True)
                )  # fmt: skip
        self._cats: dict[tuple[str, str, str], dict[str, str]] = defaultdict(dict)
        if results is not None:
            for r in results.iter_rows(named=True):
                if r["category"] is not None:
                    self._cats[(r["uid"], r["eval_name"], r["variant"])][r["benchmark"]] = r[
                        "category"
                    ]
        self._cache: dict[Any, Any] = {}
        self.disabled: set[str] = set()  # labels whose outcomes do not reproduce their scores

    @property
    def empty(self) -> bool:
        return not self._raw

    def variants(self, uid: str, eval_name: str) -> list[str]:
        return sorted({v for (u, e, v, _) in self._raw if u == uid and e == eval_name})

    def outcomes(self, uid: str, variant: str, ref: ScoreRef
                 ) -> tuple[dict[Key, float], dict[str, float] | None] | None:  # fmt: skip
        """(outcomes, benchmark weights or None for a plain mean), or None without outcomes."""
        if ref.kind != "category":
            o = self._raw.get((uid, ref.eval_name, variant, ref.benchmark or ""))
            return None if o is None else (o, None)
        cats = self._cats.get((uid, ref.eval_name, variant), {})
        if ref.label == "Average":
            per_cat: dict[str, list[str]] = defaultdict(list)
            for b, c in cats.items():
                per_cat[c].append(b)
            weights = {
                b: _scale(b) / (len(per_cat) * len(bs)) for bs in per_cat.values() for b in bs
            }
        else:
            benches = [b for b, c in cats.items() if c == ref.label]
            weights = {b: _scale(b) / len(benches) for b in benches}
        if not weights:
            return None
        merged: dict[Key, float] = {}
        for b in weights:
            o = self._raw.get((uid, ref.eval_name, variant, b))
            if o is None:
                return None
            merged.update(o)
        return merged, weights

    def _point(self, uids: Sequence[str], variant: str, ref: ScoreRef
               ) -> tuple[list[dict[Key, float]], dict[str, float] | None] | None:  # fmt: skip
        if ref.label in self.disabled:
            return None
        got = [self.outcomes(u, variant, ref) for u in uids]
        if not got or any(g is None for g in got):
            return None
        return [g[0] for g in got if g], got[0][1] if got[0] else None

    def _seed(self, *key: Any) -> int:
        return self.seed + zlib.crc32(repr(key).encode())

    def _f(self, ref: ScoreRef) -> float:
        return self.factor.get(ref.label, 1.0)

    def mean(self, uids: Sequence[str], ref: ScoreRef, variant: str = "encoder"
             ) -> Estimate | None:  # fmt: skip
        """The score of the cells ``uids`` (seeds of one cell: averaged, hierarchical)."""
        key = ("mean", tuple(uids), ref, variant)
        if key not in self._cache:
            p = self._point(uids, variant, ref)
            self._cache[key] = None if p is None else stats.mean(
                p[0], p[1], n_boot=self.n_boot, seed=self._seed(key)).scaled(self._f(ref))  # fmt: skip
        return self._cache[key]  # type: ignore[no-any-return]

    def difference(self, a: Sequence[str], b: Sequence[str], ref: ScoreRef,
                   variant_a: str = "encoder", variant_b: str = "encoder") -> Estimate | None:  # fmt: skip
        """Score of ``a`` minus score of ``b`` over their shared examples (paired)."""
        key = ("diff", tuple(a), tuple(b), ref, variant_a, variant_b)
        if key not in self._cache:
            pa, pb = self._point(a, variant_a, ref), self._point(b, variant_b, ref)
            self._cache[key] = None if pa is None or pb is None else stats.difference(
                pa[0], pb[0], pa[1], n_boot=self.n_boot, seed=self._seed(key)).scaled(self._f(ref))  # fmt: skip
        return self._cache[key]  # type: ignore[no-any-return]

    def trend(self, xs: Sequence[float], groups: Sequence[Sequence[str]], ref: ScoreRef
              ) -> Trend | None:  # fmt: skip
        """Slope of the score per doubling of x across the groups (paired over examples)."""
        points = [self._point(g, "encoder", ref) for g in groups]
        if any(p is None for p in points):
            return None
        t = stats.trend(xs, [p[0] for p in points if p], points[0][1] if points[0] else None,
                        n_boot=self.n_boot, seed=self._seed("trend", tuple(map(tuple, groups)), ref))  # fmt: skip
        f = self._f(ref)
        return Trend(t.slope.scaled(f), t.xs, [m * f for m in t.means])


def _scale(benchmark: str) -> float:
    """A benchmark's conversion inside its category, whose stored score is a fraction: MME
    (out of 2000) and OCRBench (out of 1000) enter divided by their maximum, as the
    evaluation aggregates them (``specs.categories.NATIVE_SCALE``)."""
    return 1.0 / NATIVE_SCALE.get(benchmark, 1.0)


def plain_trend(xs: Sequence[float], means: Sequence[float]) -> Trend:
    """The slope from the means alone (no outcomes): no interval."""
    c = stats.slope_weights(xs)
    return Trend(Estimate(float(np.asarray(means, float) @ c)), list(map(float, xs)),
                 list(map(float, means)))  # fmt: skip
