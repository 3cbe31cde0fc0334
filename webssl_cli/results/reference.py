"""External results: import a CSV of published numbers as a reference study.

A reference CSV has one row per model/run: axis columns, then per-benchmark scores, and
optionally the paper's own category and average columns::

    model,samples_seen,data_filter,MME,MMBench,SEED,GQA,SQA,...,CV-Bench 3D,General,...,Average
    7B,2B,full,1661.3,72.1,...

Axis columns: ``model`` (registry key or paper alias such as ``7B``; required), ``params``
(optional; taken from the registry when absent; ``1.1B``/``300M`` suffixes allowed),
``samples_seen`` (``2B``, ``2000000000``), ``data_filter`` (default ``full``) and an optional
``label``. Benchmark columns are matched to the paper's 16 VQA benchmarks by name (aliases
accepted); other numeric columns are kept as uncategorised scores. Categories and the average
are recomputed with the paper's aggregation (MME perception ÷ 20; a category is the mean of its
benchmarks; the average is the mean of the four categories) and compared with the CSV's own.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webssl_cli.errors import UserError
from webssl_cli.specs.categories import BENCHMARK_CATEGORY, CATEGORIES
from webssl_cli.specs.categories import category_scores as paper_category_scores
from webssl_cli.specs.units import parse_count

_ALIASES = {
    "mmb": "MMBench", "mmbench-en": "MMBench", "seed-img": "SEED", "seed-image": "SEED",
    "seedbench": "SEED", "sqa": "ScienceQA", "sqa-i": "ScienceQA", "sqa-img": "ScienceQA", "scienceqa-img": "ScienceQA",
    "scienceqa": "ScienceQA", "mathvista": "MathVista", "mathv": "MathVista",
    "ocrbench": "OCRBench", "ocrb": "OCRBench", "rwqa": "RealWorldQA", "realworld-qa": "RealWorldQA",
    "cv-bench-2d": "CV-Bench-2D", "cvbench2d": "CV-Bench-2D", "cv2d": "CV-Bench-2D",
    "cv-bench-3d": "CV-Bench-3D", "cvbench3d": "CV-Bench-3D", "cv3d": "CV-Bench-3D",
}  # fmt: skip
_AXIS_COLUMNS = ("label", "model", "params", "samples_seen", "data_filter")


def _norm(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().lower())


def canonical_benchmark(name: str) -> str | None:
    """The paper's benchmark name for a column header, or None if it is not one of the 16."""
    n = _norm(name)
    for b in BENCHMARK_CATEGORY:
        if _norm(b) == n:
            return b
    return _ALIASES.get(n) or _ALIASES.get(n.replace("-", ""))


def category_scores(scores: dict[str, float]) -> dict[str, float]:
    """The paper's aggregation: MME (perception score) ÷ 20, a category is the mean of the
    benchmarks it has, the average is the mean of the categories present (all four in the paper).
    Names are matched to the paper's benchmarks (aliases accepted); others are ignored.

    Aggregation is ``webssl_cli.eval.metrics.category_scores``: imported references and our
    own evaluations aggregate in one place.
    """
    canon: dict[str, float] = {}
    for name, value in scores.items():
        b = canonical_benchmark(name)
        if b is not None and value is not None and not math.isnan(value):
            canon[b] = value
    return dict(paper_category_scores(canon))


def parse_quantity(text: str, what: str, where: str) -> float:
    """``2B`` -> 2e9, ``300M`` -> 3e8, ``1.5e9`` -> 1.5e9."""
    try:
        return float(parse_count(text.strip().replace(",", "")))
    except ValueError:
        raise UserError(
            f"{where}: {what}: {text!r} is not a number (e.g. 2000000000 or 2B)"
        ) from None


@dataclass
class ReferenceImport:
    name: str
    rows: int
    benchmarks: list[str]
    other_scores: list[str]
    # column -> max |recomputed - the CSV's own| over rows (only columns the CSV gives)
    check: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [
            f"imported reference {self.name!r}: {self.rows} rows, {len(self.benchmarks)} benchmarks"
        ]
        if self.other_scores:
            parts.append(f"{len(self.other_scores)} other scores")
        if self.check:
            worst = max(self.check.values())
            parts.append(
                "recomputed categories vs the CSV's own: max |diff| "
                + ", ".join(f"{k} {v:.3g}" for k, v in self.check.items())
                + (" (reproduced)" if worst <= 0.051 else " (MISMATCH: check the CSV)")
            )
        return "; ".join(parts)


def read_reference(path: Path, name: str) -> tuple[list[dict[str, Any]], ReferenceImport]:
    """Parse the CSV into cell rows with per-benchmark and recomputed category scores."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            raw = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: cannot read CSV ({exc})") from None
    if "model" not in header:
        raise UserError(
            f"{path}:1: no 'model' column; the header needs model[,params,samples_seen,data_filter] and benchmark columns"
        )
    cat_cols = {c: c for c in header if c in (*CATEGORIES, "Average")}
    bench = {
        c: canonical_benchmark(c) for c in header if c not in _AXIS_COLUMNS and c not in cat_cols
    }
    known = [c for c, b in bench.items() if b]
    other = [c for c, b in bench.items() if not b]
    out: list[dict[str, Any]] = []
    check: dict[str, float] = {}
    for i, r in enumerate(raw, start=2):
        where = f"{path}:{i}"
        scores: dict[str, float] = {}
        for c in known + other:
            v = (r.get(c) or "").strip()
            if v in ("", "-", "nan", "NaN"):
                continue
            try:
                scores[c] = float(v)
            except ValueError:
                raise UserError(f"{where}: {c}: {v!r} is not a number") from None
        recomputed = category_scores({bench[c] or c: v for c, v in scores.items() if bench[c]})
        for c in cat_cols:
            v = (r.get(c) or "").strip()
            if v and c in recomputed:
                check[c] = max(check.get(c, 0.0), abs(recomputed[c] - float(v)))
        params = None
        if (r.get("params") or "").strip():
            params = int(parse_quantity(r["params"], "params", where))
        samples = None
        if (r.get("samples_seen") or "").strip():
            samples = int(parse_quantity(r["samples_seen"], "samples_seen", where))
        out.append(
            {
                "row": i,
                "label": (r.get("label") or "").strip() or None,
                "model": r["model"].strip(),
                "params": params,
                "samples_seen": samples,
                "data_filter": (r.get("data_filter") or "").strip() or "full",
                "scores": {c: (bench[c], v) for c, v in scores.items()},
                "categories": recomputed,
            }
        )
    if not out:
        raise UserError(f"{path}: no data rows")
    return out, ReferenceImport(name, len(out), [bench[c] or c for c in known], other, check)


def backbone_params(model: str | None) -> int | None:
    """The registry's parameter count of ``model``; None for a name the registry lacks."""
    if not model:
        return None
    from webssl_cli.specs.registry import get_model

    try:
        return int(get_model(model).backbone_params())
    except UserError:
        return None


def import_reference(
    csv_path: str | os.PathLike[str], name: str, study_dir: str | os.PathLike[str]
) -> ReferenceImport:
    """Replace reference study ``name`` in ``<study_dir>/results.duckdb`` with the CSV's rows."""
    import duckdb
    import pyarrow as pa

    from webssl_cli.results.ingest import DB_NAME, insert_rows
    from webssl_cli.results.schema import create_schema

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise UserError(
            f"--name: {name!r} must be letters, digits, '_', '.', '-' (e.g. webssl-paper)"
        )
    path = Path(csv_path).resolve()
    rows, info = read_reference(path, name)
    cells, results, cats = [], [], []
    for r in rows:
        uid = f"ref:{name}:{r['row'] - 1}"
        params = r["params"] if r["params"] is not None else backbone_params(r["model"])
        axes = {
            "model": r["model"],
            "samples_seen": r["samples_seen"],
            "data_filter": r["data_filter"],
        }
        cells.append({
            "uid": uid, "study": name, "model": r["model"], "samples_seen": r["samples_seen"],
            "data_filter": r["data_filter"], "classifier": None, "params": params,
            "flops_per_sample": None, "flops": None, "seed": None,
            "axes": json.dumps(axes, sort_keys=True),
            "spec": json.dumps({"reference": name, "csv": str(path), "row": r["row"], "label": r["label"]}),
            "method": None, "filter_kind": None, "filter_key": None, "iterations": None,
        })  # fmt: skip
        for col, (bench, v) in r["scores"].items():
            results.append({
                "uid": uid, "eval_name": "reference", "task": "reference", "benchmark": bench or col,
                "category": BENCHMARK_CATEGORY.get(bench) if bench else None,
                "metric": "MME/20" if bench == "MME" else "score", "value": v / 20.0 if bench == "MME" else v,
            })  # fmt: skip
        for c, v in r["categories"].items():
            cats.append({"uid": uid, "eval_name": "reference", "category": c, "value": v})
    data = path.read_bytes()
    st = path.stat()
    con = duckdb.connect(str(Path(study_dir) / DB_NAME))
    try:
        create_schema(con)
        con.execute("BEGIN TRANSACTION")
        try:
            like = f"ref:{name}:%"
            for table in ("cell_specs", "jobs", "train_metrics", "eval_results", "eval_categories"):
                con.execute(f"DELETE FROM {table} WHERE uid LIKE ?", [like])
            con.execute("DELETE FROM studies WHERE study = ?", [name])
            con.execute("DELETE FROM files WHERE kind = 'reference' AND uid = ?", [name])
            con.execute("INSERT INTO studies VALUES (?, 'reference', ?)", [name, str(path)])
            insert_rows(con, "cell_specs", cells)
            insert_rows(con, "eval_results", results)
            insert_rows(con, "eval_categories", cats)
            con.register("_f", pa.table({"path": [str(path)], "kind": ["reference"], "uid": [name],
                                          "name": [None], "size": [st.st_size], "mtime_ns": [st.st_mtime_ns],
                                          "sha256": [hashlib.sha256(data).hexdigest()]}))  # fmt: skip
            con.execute("INSERT INTO files SELECT * FROM _f")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    except duckdb.Error as exc:
        raise UserError(
            f"{study_dir}: cannot write the results database ({' '.join(str(exc).split())})"
        ) from None
    finally:
        con.close()
    return info
