"""The report's segmentation and depth section: values, intervals (mIoU recomputed from the
resampled images' counts) and gains over the random-init twin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from webssl_cli.outcomes import (
    Outcome,
    counts_path,
    examples_path,
    ratio_miou,
    write_counts,
    write_outcomes,
)
from webssl_cli.rundir import atomic_write_json


def _dense_evals(cell: Path, rng: np.random.Generator, good: float) -> dict[str, float]:
    """Segmentation and depth evals of a cell; the encoder ``good`` and the twin worse."""
    keys = [f"d0_{i:08d}" for i in range(30)]
    seg_rows, counts, outs, truth = [], [], [], {}
    for variant, q in (("encoder", good), ("random-init", 0.3)):
        union = rng.integers(50, 100, size=(30, 4))
        union[:, 3] = 0  # a class never present
        inter = (union * q * rng.uniform(0.8, 1.0, size=union.shape)).astype(np.int64)
        m = ratio_miou(inter, union)
        total = union.sum(0)
        present = total > 0
        shares = 30 / present.sum() * (inter[:, present] / total[present]).sum(1)
        outs += [
            Outcome(variant, "synth-dense", k, float(v)) for k, v in zip(keys, shares, strict=True)
        ]
        counts += [
            (variant, "synth-dense", k, i.tolist(), u.tolist())
            for k, i, u in zip(keys, inter, union, strict=True)
        ]
        row = {"benchmark": "synth-dense", "category": None, "metric": "miou", "value": m}
        seg_rows.append(row if variant == "encoder" else {**row, "variant": variant})
        truth[variant] = m
    ev = cell / "eval" / "segmentation.json"
    write_counts(counts_path(ev), counts)
    write_outcomes(examples_path(ev), outs)
    atomic_write_json(ev, {"task": "segmentation", "name": "segmentation", "cell": cell.name,
                           "results": seg_rows, "categories": {}, "details": {}})  # fmt: skip
    d_rows, d_outs = [], []
    for variant, level in (("encoder", 0.9 * good), ("random-init", 0.4)):
        for metric, vals in (("delta1", rng.uniform(level - 0.1, level + 0.1, 30)),
                             ("rmse", rng.uniform(0.5, 1.0, 30) / level),
                             ("absrel", rng.uniform(0.1, 0.2, 30) / level)):  # fmt: skip
            bench = f"synth-dense/{metric}"
            d_outs += [
                Outcome(variant, bench, k, float(v)) for k, v in zip(keys, vals, strict=True)
            ]
            row = {
                "benchmark": bench,
                "category": None,
                "metric": metric,
                "value": float(np.mean(vals)),
            }
            d_rows.append(row if variant == "encoder" else {**row, "variant": variant})
    ev = cell / "eval" / "depth.json"
    write_outcomes(examples_path(ev), d_outs)
    atomic_write_json(ev, {"task": "depth", "name": "depth", "cell": cell.name,
                           "results": d_rows, "categories": {}, "details": {}})  # fmt: skip
    return truth


def test_dense_section_in_report(tmp_path: Path) -> None:
    from webssl_cli.report.build import build_report
    from webssl_cli.results.ingest import ingest
    from webssl_cli.results.synthetic import write_study

    root = tmp_path / "study"
    cells = write_study(root, models=("vit-pico",), budgets=(10_000, 40_000), filters=("none",),
                        n_examples=20)  # fmt: skip
    rng = np.random.default_rng(0)
    truths = [_dense_evals(c, rng, good) for c, good in zip(cells, (0.6, 0.8), strict=True)]
    ingest(root)
    build_report(root, tmp_path / "out", n_boot=10, n_boot_stats=300)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Classic vision: segmentation and depth" in md
    section = md[md.index("### Segmentation") : md.index("### Depth")]
    for t in truths:
        assert f"{100 * t['encoder']:.1f} [" in section  # with an interval
        assert f"{100 * t['random-init']:.1f} [" in section
        gain = 100 * (t["encoder"] - t["random-init"])
        lo = float(section.split(f"{gain:+.1f} [")[1].split(",")[0])
        assert lo > 0  # detectable: the paired interval lies above zero
    depth = md[md.index("### Depth") : md.index("dense_probes.png")]
    assert depth.count("vit-pico") == 2 and "δ1 (%)" in depth
    assert (tmp_path / "out" / "dense_probes.png").stat().st_size > 0
    assert "dense_probes.png" in md


def test_miou_interval_recomputes_the_ratio() -> None:
    from webssl_cli.report.dense import miou_estimates

    rng = np.random.default_rng(1)
    union = rng.integers(10, 100, size=(50, 3))
    inter = (union * rng.uniform(0.2, 0.9, size=union.shape)).astype(np.int64)
    e, gain = miou_estimates(([str(i) for i in range(50)], inter, union), None, 400, 0)
    assert e.lo is not None and e.hi is not None
    assert e.value == pytest.approx(ratio_miou(inter, union)) and e.lo < e.value < e.hi
    assert gain is None
    # against itself: the paired gain is exactly zero in every replicate
    same = ([str(i) for i in range(50)], inter, union)
    _, g = miou_estimates(same, same, 200, 0)
    assert g is not None and g.value == 0.0 and g.lo == 0.0 and g.hi == 0.0


def test_depth_errors_are_not_percentages_nor_headline_findings(tmp_path: Path) -> None:
    from webssl_cli.report.build import build_report
    from webssl_cli.results.ingest import ingest
    from webssl_cli.results.synthetic import write_study

    root = tmp_path / "study"
    cells = write_study(
        root, models=("vit-pico",), budgets=(10_000,), filters=("none",), n_examples=10
    )
    _dense_evals(cells[0], np.random.default_rng(2), 1.2)  # encoder RMSE below 1 m
    ingest(root)
    build_report(root, tmp_path / "out", n_boot=10, n_boot_stats=100)
    md = (tmp_path / "out" / "report.md").read_text()
    findings = md[md.index("## Findings") : md.index("## Tables")]
    assert "depth rmse" not in findings and "depth absrel" not in findings
    assert "depth delta1" in findings  # higher is better: a headline like the others
    # RMSE stays in metres in the per-cell table (values below 1 m are not turned into %)
    table = md[md.index("### Scores per cell") :].split("\n\n")[1]
    header, _, row = table.splitlines()[:3]
    col = [h.strip() for h in header.split("|")].index("depth rmse (synth-dense/rmse)")
    shown = float(row.split("|")[col].split("[")[0])
    assert shown < 1.0  # metres, not ×100


def test_dense_section_covers_every_method_with_intervals(tmp_path: Path) -> None:
    import json

    from webssl_cli.report.build import build_report
    from webssl_cli.results.ingest import ingest
    from webssl_cli.results.synthetic import write_study

    root = tmp_path / "study"
    cells = write_study(root, models=("vit-pico",), budgets=(10_000, 40_000), filters=("none",),
                        n_examples=20)  # fmt: skip
    spec = json.loads((cells[1] / "cell.json").read_text())
    (cells[1] / "cell.json").write_text(json.dumps({**spec, "method": "mae"}))
    rng = np.random.default_rng(3)
    truths = [_dense_evals(c, rng, good) for c, good in zip(cells, (0.6, 0.8), strict=True)]
    ingest(root)
    build_report(root, tmp_path / "out", n_boot=10, n_boot_stats=300)
    md = (tmp_path / "out" / "report.md").read_text()
    seg = md[md.index("### Segmentation") : md.index("### Depth")]
    depth = md[md.index("### Depth") : md.index("dense_probes.png")]
    # the MAE cell is measured here although the sections above measure Web-DINO's cells only
    assert (
        "| Web-DINO · vit-pico · 10K · none" in seg and "| Web-MAE · vit-pico · 40K · none" in seg
    )
    mae_row = next(r for r in depth.splitlines() if "Web-MAE" in r)
    cols = [c.strip() for c in mae_row.split("|")[1:-1]]
    assert all("[" in c for c in cols[2:]), cols  # every value, twin and gain with its interval
    assert f"{100 * truths[1]['encoder']:.1f} [" in seg
    # the header counts every cell, per method; the findings name whose cells they measure and
    # give each other method's count against its twins
    assert "2 cells (Web-MAE 1, Web-DINO 1): 2 done." in md
    findings = md[md.index("## Findings") : md.index("## Methods")]
    assert "- Web-DINO: depth delta1" in findings
    assert (
        "- Web-MAE: detectably better than its random-init twin in 5 of 5 (cell, score) pairs"
        in findings
    )
