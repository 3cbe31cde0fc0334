"""Per-image class counts of the segmentation evaluations (``eval/<name>.counts.jsonl``, see
``webssl_cli.outcomes``), read from the run directories: what a bootstrap of mIoU resamples."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from webssl_cli.outcomes import read_counts


def load_counts(
    study_dir: Path, uid: str, eval_name: str
) -> dict[str, tuple[list[str], np.ndarray, np.ndarray]]:
    """variant -> (example ids, intersections, unions) of one cell's segmentation eval, rows in
    example order; {} when the eval left no counts."""
    path = study_dir / "cells" / uid / "eval" / f"{eval_name}.counts.jsonl"
    if not path.is_file():
        return {}
    rows: dict[str, list[tuple[str, list[int], list[int]]]] = {}
    for variant, _bench, example, inter, union in read_counts(path):
        rows.setdefault(variant, []).append((example, inter, union))
    out = {}
    for variant, rs in rows.items():
        rs.sort(key=lambda r: r[0])
        out[variant] = ([r[0] for r in rs], np.array([r[1] for r in rs], np.int64),
                        np.array([r[2] for r in rs], np.int64))  # fmt: skip
    return out
