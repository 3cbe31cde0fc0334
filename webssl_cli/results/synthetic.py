"""Synthetic run directories following the contract (docs/architecture.md), for tests,
benchmarks and demos of ingest and report without a trainer.

Scores follow a known law so that plots and fits have something true to find:
``score = 0.85 - 0.30·(N/1e5)^-0.35 - 0.15·(D/1e4)^-0.5`` (N params, D samples seen), shifted
per category and filter (the heavy text filter helps OCR & Chart and costs General), plus noise.

With ``n_examples`` > 0 every score is the mean of per-example outcomes (0/1) written to
``eval/<name>.examples.jsonl``: example ``e`` of a benchmark is answered right with probability
``score + 0.2·(1 − 2·u_e)``, ``u_e`` a difficulty shared by every cell (so paired comparisons
pay), and the baselines sit at a known level: ``random-init`` kNN at 0.15, ``blind`` VQA at
``BLIND_SCORE``. The encoder's gain over its baseline is therefore known, and so is the trend
along each axis (the law above).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path
from typing import Any

from webssl_cli.outcomes import Outcome, examples_path, write_outcomes
from webssl_cli.rundir import CellDir, atomic_write_json
from webssl_cli.specs.categories import CATEGORIES
from webssl_cli.specs.cell import CellData, CellSpec
from webssl_cli.specs.train import HeadConfig, TrainConfig

RANDOM_INIT_KNN = 0.15
BLIND_SCORE = 0.25
N_PROTOTYPES = 1024

_FILTER_SHIFT = {
    "none": {},
    "full": {},
    "light": {"OCR & Chart": 0.03, "General": -0.005},
    "heavy": {"OCR & Chart": 0.06, "General": -0.03, "Vision-Centric": -0.01},
}
_CAT_SHIFT = {"General": 0.05, "Knowledge": -0.08, "OCR & Chart": -0.12, "Vision-Centric": 0.0}


def true_score(
    params: float, samples: float, category: str = "Average", data_filter: str = "none"
) -> float:
    base = 0.85 - 0.30 * (params / 1e5) ** -0.35 - 0.15 * (samples / 1e4) ** -0.5
    if category == "Average":
        return sum(true_score(params, samples, c, data_filter) for c in CATEGORIES) / len(
            CATEGORIES
        )
    return (
        base + _CAT_SHIFT.get(category, 0.0) + _FILTER_SHIFT.get(data_filter, {}).get(category, 0.0)
    )


def cell_uid(model: str, samples: int, data_filter: str, seed: int = 0) -> str:
    key = f"{model}|{samples}|{data_filter}" + (f"|{seed}" if seed else "")
    return hashlib.sha1(key.encode()).hexdigest()[:12]


def _difficulty(benchmark: str, n: int) -> list[float]:
    """Fixed per-example difficulties of a benchmark (the same in every cell)."""
    r = random.Random(int(hashlib.sha1(benchmark.encode()).hexdigest()[:8], 16))
    return [r.random() for _ in range(n)]


def _outcomes(variant: str, benchmark: str, score: float, n: int, rng: random.Random
              ) -> list[Outcome]:  # fmt: skip
    out = []
    for i, u in enumerate(_difficulty(benchmark, n)):
        p = min(1.0, max(0.0, score + 0.2 * (1 - 2 * u)))
        out.append(Outcome(variant, benchmark, f"{benchmark}/{i:04d}", float(rng.random() < p)))
    return out


def _mean(outs: list[Outcome], variant: str, benchmark: str) -> float:
    vals = [o.value for o in outs if o.variant == variant and o.benchmark == benchmark]
    return sum(vals) / len(vals)


def write_cell(
    study_dir: Path,
    model: str,
    samples: int,
    data_filter: str,
    *,
    params: float,
    study: str = "synthetic",
    steps: int = 20,
    metrics: tuple[str, ...] = (
        "loss",
        "dino_loss",
        "ibot_loss",
        "koleo_loss",
        "lr",
        "wd",
        "momentum",
        "teacher_temp",
        "grad_norm",
        "images_per_s",
    ),
    benchmarks_per_category: int = 2,
    noise: float = 0.005,
    rng: random.Random | None = None,
    state: str = "done",
    n_examples: int = 0,
    seed: int = 0,
    uniform: bool = False,
    collapsed: bool = False,
) -> Path:
    """Write one cell: cell.json, status.json, train/metrics.jsonl, eval/vqa.json, eval/knn.json
    (+ their ``.examples.jsonl`` and baseline variants when ``n_examples`` > 0, per VQA benchmark;
    kNN gets 4× as many examples).
    ``uniform``: the teacher never leaves the uniform assignment (entropy stays at log K);
    ``collapsed``: the features collapse (effective rank 1, zero spread)."""
    rng = rng or random.Random(0)
    uid = cell_uid(model, samples, data_filter, seed)
    root = study_dir / "cells" / uid
    axes: dict[str, Any] = {"model": model, "samples_seen": samples, "data_filter": data_filter}
    if seed:
        axes["seed"] = seed
    kind = data_filter if data_filter in ("light", "heavy") else "none"
    spec = CellSpec.build(
        uid=uid, study=study, model=model, samples_seen=samples, data_filter=data_filter, axes=axes,
        data=CellData(source="synth", shards=str(study_dir / "data" / "{000000..000003}.tar"),
                      filter=kind, classifier=None if kind == "none" else "ocr",
                      filter_key=None if kind == "none" else f"synth-{kind}"),
        train=TrainConfig(dino_head=HeadConfig(n_prototypes=N_PROTOTYPES)),
        evals=[{"task": "vqa"}, {"task": "knn"}], seed=seed,
    )  # fmt: skip
    CellDir(root).write_cell(spec)
    atomic_write_json(
        root / "status.json",
        {"cell": uid, "stages": {
            "train": {"state": state, "attempts": 1, "job_ids": [f"{rng.randrange(10**6)}"], "host": "node1",
                      "started": "2026-01-01T00:00:00+00:00", "ended": "2026-01-01T01:00:00+00:00",
                      "samples_seen": samples, "step": steps},
            "eval/vqa": {"state": state, "attempts": 1, "job_ids": ["2"]},
            "eval/knn": {"state": state, "attempts": 1, "job_ids": ["3"]},
        }},
    )  # fmt: skip
    # Loss curve: decays with samples seen, lower floor for bigger models.
    if n_examples or uniform:  # a full cell carries the teacher's entropy for the diagnostics
        metrics = (*metrics, "teacher_entropy")
    lines = []
    floor = 2.0 + 3.0 * (params / 1e5) ** -0.3
    for s in range(1, steps + 1):
        seen = samples * s // steps
        row: dict[str, Any] = {"step": s, "samples_seen": seen, "time": 1.7e9 + s}
        for i, m in enumerate(metrics):
            if m == "loss":
                row[m] = floor + 6.0 * math.exp(-seen / (samples / 4)) + rng.gauss(0, 0.05)
            elif m == "teacher_entropy":
                log_k = math.log(N_PROTOTYPES)
                row[m] = log_k * (1.0 if uniform else 0.6 + 0.4 * math.exp(-seen / (samples / 4)))
            else:
                row[m] = (i + 1) * 0.1 + rng.random() * 0.01
        lines.append(json.dumps(row))
    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "train" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    results: list[dict[str, Any]] = []
    outs: list[Outcome] = []
    by_variant: dict[str, dict[str, float]] = {}
    variants = ("encoder", "blind") if n_examples else ("encoder",)
    for variant in variants:
        rows = []
        for cat, benches in CATEGORIES.items():
            for b in benches[:benchmarks_per_category]:
                bench = f"synth-{b.lower().replace(' ', '-')}"
                v = true_score(params, samples, cat, data_filter) + rng.gauss(0, noise)
                if variant == "blind":
                    v = BLIND_SCORE
                if n_examples:
                    outs += _outcomes(variant, bench, v, n_examples, rng)
                    v = _mean(outs, variant, bench)
                row = {"benchmark": bench, "category": cat, "metric": "accuracy", "value": v}
                rows.append(row | ({"variant": variant} if variant != "encoder" else {}))
        results += rows
        cats = {
            c: sum(r["value"] for r in rows if r["category"] == c) / benchmarks_per_category
            for c in CATEGORIES
        }
        cats["Average"] = sum(cats.values()) / len(CATEGORIES)
        by_variant[variant] = cats
    vqa: dict[str, Any] = {"task": "vqa", "name": "vqa", "cell": uid, "settings": {},
                           "results": results, "categories": by_variant.pop("encoder")}  # fmt: skip
    if by_variant:
        vqa["categories_by_variant"] = by_variant
    atomic_write_json(root / "eval" / "vqa.json", vqa)
    if n_examples:
        write_outcomes(examples_path(root / "eval" / "vqa.json"), outs)
    knn = true_score(params, samples, "Vision-Centric", data_filter) + 0.1 + rng.gauss(0, noise)
    knn_rows = [{"benchmark": "synth-labelled", "category": None, "metric": "top1", "value": knn}]
    feats = {"effective_rank": 1.0 if collapsed else 20.0 + 10 * rng.random(), "dim": 64,
             "dim_std_mean": 0.0 if collapsed else 0.05, "dim_std_min": 0.0 if collapsed else 0.01,
             "feature_rms": 1.0}  # fmt: skip
    if n_examples:
        kouts = _outcomes("encoder", "synth-labelled", knn, 4 * n_examples, rng)
        kouts += _outcomes("random-init", "synth-labelled", RANDOM_INIT_KNN, 4 * n_examples, rng)
        knn_rows = [
            {"benchmark": "synth-labelled", "category": None, "metric": "top1",
             "value": _mean(kouts, v, "synth-labelled")} | ({"variant": v} if v != "encoder" else {})
            for v in ("encoder", "random-init")
        ]  # fmt: skip
        write_outcomes(examples_path(root / "eval" / "knn.json"), kouts)
    atomic_write_json(root / "eval" / "knn.json", {"task": "knn", "name": "knn", "cell": uid,
                      "results": knn_rows, "categories": {}, "details": {"features": feats}})  # fmt: skip
    return root


def write_study(
    study_dir: Path,
    models: tuple[str, ...] = ("vit-pico", "vit-nano", "vit-micro"),
    budgets: tuple[int, ...] = (10_000, 40_000),
    filters: tuple[str, ...] = ("none", "heavy"),
    seed: int = 0,
    seeds: tuple[int, ...] = (0,),
    n_examples: int = 60,
    **kw: Any,
) -> list[Path]:
    """A full grid (models × budgets × filters × seeds) of synthetic cells; params from the
    registry."""
    from webssl_cli.specs.registry import get_model

    rng = random.Random(seed)
    study_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for m in models:
        p = get_model(m).backbone_params()
        for b in budgets:
            for f in filters:
                for s in seeds:
                    out.append(write_cell(study_dir, m, b, f, params=p, rng=rng, seed=s,
                                          n_examples=n_examples, **kw))  # fmt: skip
    for f in filters:
        if f != "none":
            atomic_write_json(study_dir / "filters" / f"synth-{f}-ocr-v1" / "stats.json",
                              {"kept": 13 if f == "heavy" else 503, "total": 1000,
                               "fraction": 0.013 if f == "heavy" else 0.503, "skipped": {}})  # fmt: skip
    return out
