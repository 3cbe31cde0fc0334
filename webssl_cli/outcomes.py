"""Per-example outcomes of an evaluation (run-directory contract): what intervals resample.

An evaluation ``eval/<name>.json`` reports one score per benchmark; beside it
``eval/<name>.examples.jsonl`` keeps what each score is the mean of, one line per
(variant, benchmark, example)::

    {"variant": "encoder", "benchmark": "synth-labelled", "example": "val/000123", "value": 1.0}

- ``variant``: ``encoder`` (the cell's encoder), or a baseline evaluated side by side on the
  same examples: ``random-init`` (the same architecture, untrained) for the probes, ``blind``
  (the same VQA training and questions without the image tokens) for VQA.
- ``example``: a stable id of the resampling unit, equal across cells that share the data (a
  test image's key; a question's id; for scores over groups — circular multiple choice, MME's
  image pairs — the group's id).
- ``value``: the example's score on the benchmark's own scale, so that the mean over the
  examples of one (variant, benchmark) equals the reported score.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webssl_cli.rundir import atomic_write_text

VARIANTS = ("encoder", "random-init", "blind")


@dataclass(frozen=True)
class Outcome:
    variant: str
    benchmark: str
    example: str
    value: float


def examples_path(eval_json: Path) -> Path:
    """``eval/<name>.json`` -> ``eval/<name>.examples.jsonl``."""
    return eval_json.with_name(eval_json.stem + ".examples.jsonl")


def write_outcomes(path: Path, outcomes: Iterable[Outcome]) -> int:
    """Write the outcomes atomically (JSON lines, sorted); returns how many were written."""
    rows = sorted(outcomes, key=lambda o: (o.variant, o.benchmark, o.example))
    lines = []
    for o in rows:
        if o.variant not in VARIANTS:
            raise ValueError(f"unknown variant {o.variant!r}; valid: {', '.join(VARIANTS)}")
        if not math.isfinite(o.value):
            raise ValueError(f"{o.benchmark}/{o.example}: non-finite value {o.value}")
        lines.append(json.dumps(o.__dict__, sort_keys=True))
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def read_outcomes(path: Path) -> Iterator[Outcome]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                yield Outcome(str(d["variant"]), str(d["benchmark"]), str(d["example"]),
                              float(d["value"]))  # fmt: skip


# ---- ratio scores (mIoU): per-example counts beside the outcomes ----------------------------------
# A dataset-level ratio such as mIoU (intersection / union summed over images, per class) is not a
# mean over images. Its outcomes above are each image's share of the score (their mean is the
# score); ``eval/<name>.counts.jsonl`` keeps the per-class counts themselves, one line per
# (variant, benchmark, example): {"variant", "benchmark", "example", "inter": [...], "union": [...]},
# so that a bootstrap over examples can recompute the ratio.


def counts_path(eval_json: Path) -> Path:
    """``eval/<name>.json`` -> ``eval/<name>.counts.jsonl``."""
    return eval_json.with_name(eval_json.stem + ".counts.jsonl")


def write_counts(path: Path, rows: Iterable[tuple[str, str, str, list[int], list[int]]]) -> int:
    """(variant, benchmark, example, intersection per class, union per class) rows, atomically."""
    lines = [json.dumps({"variant": v, "benchmark": b, "example": e, "inter": list(map(int, i)),
                         "union": list(map(int, u))}, sort_keys=True)
             for v, b, e, i, u in sorted(rows, key=lambda r: r[:3])]  # fmt: skip
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def read_counts(path: Path) -> Iterator[tuple[str, str, str, list[int], list[int]]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                yield (str(d["variant"]), str(d["benchmark"]), str(d["example"]),
                       [int(x) for x in d["inter"]], [int(x) for x in d["union"]])  # fmt: skip


def ratio_miou(inter: Any, union: Any) -> float:
    """Mean over classes of summed intersection / summed union, over the classes whose union
    is not empty: ``inter``, ``union`` are (classes,) or (examples, classes) and summed."""
    import numpy as np

    i, u = np.asarray(inter, np.float64), np.asarray(union, np.float64)
    if i.ndim == 2:
        i, u = i.sum(0), u.sum(0)
    present = u > 0
    return float((i[present] / u[present]).mean()) if present.any() else float("nan")
