"""Synthetic run directories following the contract (docs/architecture.md), for tests,
benchmarks and demos of ingest and report without a trainer.

Scores follow a known law so that plots and fits have something true to find:
``score = 0.85 - 0.30·(N/1e5)^-0.35 - 0.15·(D/1e4)^-0.5`` (N params, D samples seen), shifted
per category and filter (the heavy text filter helps OCR & Chart and costs General), plus noise.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path
from typing import Any

from webssl_cli.rundir import CellDir, atomic_write_json
from webssl_cli.specs.categories import CATEGORIES
from webssl_cli.specs.cell import CellData, CellSpec
from webssl_cli.specs.train import TrainConfig

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


def cell_uid(model: str, samples: int, data_filter: str) -> str:
    return hashlib.sha1(f"{model}|{samples}|{data_filter}".encode()).hexdigest()[:12]


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
) -> Path:
    """Write one cell: cell.json, status.json, train/metrics.jsonl, eval/vqa.json, eval/knn.json."""
    rng = rng or random.Random(0)
    uid = cell_uid(model, samples, data_filter)
    root = study_dir / "cells" / uid
    kind = data_filter if data_filter in ("light", "heavy") else "none"
    spec = CellSpec.build(
        uid=uid, study=study, model=model, samples_seen=samples, data_filter=data_filter,
        axes={"model": model, "samples_seen": samples, "data_filter": data_filter},
        data=CellData(source="synth", shards=str(study_dir / "data" / "{000000..000003}.tar"),
                      filter=kind, classifier=None if kind == "none" else "ocr",
                      filter_key=None if kind == "none" else f"synth-{kind}"),
        train=TrainConfig(), evals=[{"task": "vqa"}, {"task": "knn"}], seed=0,
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
    lines = []
    floor = 2.0 + 3.0 * (params / 1e5) ** -0.3
    for s in range(1, steps + 1):
        seen = samples * s // steps
        row: dict[str, Any] = {"step": s, "samples_seen": seen, "time": 1.7e9 + s}
        for i, m in enumerate(metrics):
            if m == "loss":
                row[m] = floor + 6.0 * math.exp(-seen / (samples / 4)) + rng.gauss(0, 0.05)
            else:
                row[m] = (i + 1) * 0.1 + rng.random() * 0.01
        lines.append(json.dumps(row))
    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "train" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    results: list[dict[str, Any]] = []
    for cat, benches in CATEGORIES.items():
        for b in benches[:benchmarks_per_category]:
            v = true_score(params, samples, cat, data_filter) + rng.gauss(0, noise)
            results.append({"benchmark": f"synth-{b.lower().replace(' ', '-')}", "category": cat,
                            "metric": "accuracy", "value": round(v, 6)})  # fmt: skip
    cats = {
        c: sum(r["value"] for r in results if r["category"] == c) / benchmarks_per_category
        for c in CATEGORIES
    }
    cats["Average"] = sum(cats.values()) / len(CATEGORIES)
    atomic_write_json(root / "eval" / "vqa.json", {"task": "vqa", "name": "vqa", "cell": uid, "settings": {},
                                                   "results": results, "categories": cats})  # fmt: skip
    knn = true_score(params, samples, "Vision-Centric", data_filter) + 0.1 + rng.gauss(0, noise)
    atomic_write_json(root / "eval" / "knn.json", {"task": "knn", "name": "knn", "cell": uid,
                      "results": [{"benchmark": "synth-labelled", "category": None, "metric": "top1",
                                   "value": round(knn, 6)}], "categories": {}})  # fmt: skip
    return root


def write_study(
    study_dir: Path,
    models: tuple[str, ...] = ("vit-pico", "vit-nano", "vit-micro"),
    budgets: tuple[int, ...] = (10_000, 40_000),
    filters: tuple[str, ...] = ("none", "heavy"),
    seed: int = 0,
    **kw: Any,
) -> list[Path]:
    """A full grid (models × budgets × filters) of synthetic cells; params from the registry."""
    from webssl_cli.specs.registry import get_model

    rng = random.Random(seed)
    study_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for m in models:
        p = get_model(m).backbone_params()
        for b in budgets:
            for f in filters:
                out.append(write_cell(study_dir, m, b, f, params=p, rng=rng, **kw))
    for f in filters:
        if f != "none":
            atomic_write_json(study_dir / "filters" / f"synth-{f}-ocr-v1" / "stats.json",
                              {"kept": 13 if f == "heavy" else 503, "total": 1000,
                               "fraction": 0.013 if f == "heavy" else 0.503, "skipped": {}})  # fmt: skip
    return out
