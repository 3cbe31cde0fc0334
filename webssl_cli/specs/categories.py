"""The paper's benchmark categories and its aggregation (pure Python).

Four categories of four benchmarks each (Cambrian's grouping, as the Web-SSL paper reports
them); a category is the mean of its benchmarks present, the average the mean of the
categories present; MME's perception score (max 2000) enters divided by 20.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

CATEGORIES: dict[str, tuple[str, ...]] = {
    "General": ("MME", "MMBench", "SEED", "GQA"),
    "Knowledge": ("ScienceQA", "MMMU", "MathVista", "AI2D"),
    "OCR & Chart": ("ChartQA", "OCRBench", "TextVQA", "DocVQA"),
    "Vision-Centric": ("MMVP", "RealWorldQA", "CV-Bench-2D", "CV-Bench-3D"),
}
BENCHMARK_CATEGORY = {b: c for c, bs in CATEGORIES.items() for b in bs}
NATIVE_SCALE: dict[str, float] = {"MME": 2000.0, "OCRBench": 1000.0}
"""Benchmarks whose authors report a total instead of a percentage, and its maximum: MME's
perception score (out of 2000; the paper's categories take it / 20) and OCRBench's count of
right answers on its 1000 questions (/ 10). Evaluations store these two on that scale
(metrics ``perception_score`` and ``ocrbench_score``), every other benchmark as a fraction."""


def as_fraction(benchmark: str, value: float) -> float:
    """A stored benchmark score as a fraction of its maximum (``NATIVE_SCALE``)."""
    return value / NATIVE_SCALE.get(benchmark, 1.0)


def category_scores(scores: dict[str, float]) -> dict[str, float]:
    """The paper's aggregation. ``scores`` are percentages keyed by benchmark name, MME as its
    raw perception score (divided by 20 here). A category is the mean of its benchmarks
    present; the average is the mean of the categories present. Unknown names raise."""
    unknown = sorted(set(scores) - set(BENCHMARK_CATEGORY))
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; valid: {', '.join(BENCHMARK_CATEGORY)}")
    out: dict[str, float] = {}
    for cat, names in CATEGORIES.items():
        vals = [scores[b] / 20.0 if b == "MME" else scores[b] for b in names if b in scores]
        if vals:
            out[cat] = sum(vals) / len(vals)
    if out:
        out["Average"] = sum(out.values()) / len(out)
    return out


def mean_by_category(results: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Category means for (category, value) pairs of benchmarks already on one scale (e.g. the
    synthetic suite), plus the Average over categories, as ``category_scores`` does."""
    groups: dict[str, list[float]] = defaultdict(list)
    for cat, value in results:
        groups[cat].append(value)
    out = {c: sum(v) / len(v) for c, v in groups.items() if v}
    if out:
        out["Average"] = sum(out.values()) / len(out)
    return out
