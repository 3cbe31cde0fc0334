"""Ingest a 1,000-cell study with 1,000,000 train-metric rows; print the time and its ratio to a
bare DuckDB bulk load of the same files.

    .venv/bin/python benchmarks/ingest.py [--cells 1000] [--steps 100] [--rounds 8]

Each cell: cell.json, status.json, train/metrics.jsonl (``steps`` lines × 10 metrics, so
1000 × 100 × 10 = 1,000,000 long-format rows), eval/vqa.json (8 benchmarks) and eval/knn.json.

A (ours): ``webssl_cli.results.ingest.ingest`` into a fresh database: scan, parse, validate,
melt metrics into long format, one transaction.
B (baseline): the least any loader must do, in the same run: ``CREATE TABLE AS SELECT * FROM
read_json(<files>)`` of the same metrics files (wide, not melted) and of the same cell, status
and eval files, into a fresh database.
Rounds interleaved ABBA, DuckDB on 1 thread, median of ``rounds`` per side (CPU and wall time).
Then: a second ingest with nothing new, and aggregate queries on a read-only connection.
Targets (issue 8): ratio <= 2x, re-ingest < 1 s, aggregate query < 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

from webssl_cli.results.ingest import ingest


def make_study(root: Path, cells: int, steps: int) -> None:
    """Write files directly (no fsync per file as the atomic writer does: setup, not measured)."""
    from webssl_cli.results import synthetic

    rng = random.Random(0)
    models = ["vit-test", "vit-pico", "vit-nano", "vit-micro", "vit-small"]
    params = {
        "vit-test": 3e4,
        "vit-pico": 1.7e5,
        "vit-nano": 4.7e5,
        "vit-micro": 1.2e6,
        "vit-small": 2.2e7,
    }
    filters = ["none", "light", "heavy", "full"]
    orig = synthetic.atomic_write_json

    def fast_write(path: str | os.PathLike[str], obj: object) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(obj))

    synthetic.atomic_write_json = fast_write  # type: ignore[assignment]
    try:
        for i in range(cells):
            m = models[i % len(models)]
            synthetic.write_cell(
                root, m, 1000 * (1 + i // (len(models) * len(filters))), filters[(i // len(models)) % len(filters)],
                params=params[m], steps=steps, rng=rng,
            )  # fmt: skip
    finally:
        synthetic.atomic_write_json = orig  # type: ignore[assignment]


def baseline(root: Path, db: Path, metrics_only: bool = False) -> None:
    con = duckdb.connect(str(db), config={"threads": 1})
    cells = sorted(str(p) for p in (root / "cells").iterdir())
    con.execute(
        "CREATE TABLE m AS SELECT * FROM read_json(?, format='newline_delimited', union_by_name=true, filename=true)",
        [[f"{c}/train/metrics.jsonl" for c in cells]],
    )
    if metrics_only:
        con.close()
        return
    for name, files in (
        ("c", [f"{c}/cell.json" for c in cells]),
        ("s", [f"{c}/status.json" for c in cells]),
        ("e", [f"{c}/eval/{n}.json" for c in cells for n in ("vqa", "knn")]),
    ):
        con.execute(
            f"CREATE TABLE {name} AS SELECT * FROM read_json(?, union_by_name=true, filename=true)",
            [files],
        )
    con.close()


def timed(fn: object, *args: object) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "study"
        t0 = time.perf_counter()
        make_study(root, args.cells, args.steps)
        print(f"generated {args.cells} cells in {time.perf_counter() - t0:.1f} s")
        a_wall, a_cpu, b_wall, b_cpu, m_wall, m_cpu = [], [], [], [], [], []
        rows = 0

        def run_a(k: int) -> None:
            nonlocal rows
            db = Path(tmp) / f"a{k}.duckdb"
            t0, c0 = time.perf_counter(), time.process_time()
            rep = ingest(root, db_path=db, threads=1)
            w, c = time.perf_counter() - t0, time.process_time() - c0
            assert not rep.skipped, rep.skipped[:3]
            rows = rep.metric_rows
            a_wall.append(w)
            a_cpu.append(c)
            db.unlink()

        def run_b(k: int) -> None:
            db = Path(tmp) / f"b{k}.duckdb"
            w, c = timed(baseline, root, db)
            b_wall.append(w)
            b_cpu.append(c)
            db.unlink()
            w, c = timed(baseline, root, db, True)
            m_wall.append(w)
            m_cpu.append(c)
            db.unlink()

        for r in range(args.rounds):  # ABBA
            if r % 2 == 0:
                run_a(r), run_b(r)
            else:
                run_b(r), run_a(r)
        med = statistics.median
        print(f"metric rows ingested: {rows:,}")
        print(
            f"ingest (ours):      wall {med(a_wall):.2f} s   cpu {med(a_cpu):.2f} s   (median of {args.rounds})"
        )
        print(f"bare read_json load: wall {med(b_wall):.2f} s   cpu {med(b_cpu):.2f} s")
        print(
            f"ratio ours/bare:    wall {med(a_wall) / med(b_wall):.2f}x   cpu {med(a_cpu) / med(b_cpu):.2f}x   (target <= 2x)"
        )
        print(
            f"bare load of the metrics files only: wall {med(m_wall):.2f} s   cpu {med(m_cpu):.2f} s"
        )
        print(
            f"ratio ours/metrics-only: wall {med(a_wall) / med(m_wall):.2f}x   cpu {med(a_cpu) / med(m_cpu):.2f}x   (stricter)"
        )
        print(
            "per-round ratios (wall):",
            " ".join(f"{a / b:.2f}" for a, b in zip(a_wall, b_wall, strict=True)),
        )

        db = root / "results.duckdb"
        first = ingest(root, threads=1)
        again = []
        for _ in range(5):
            t0 = time.perf_counter()
            rep = ingest(root, threads=1)
            again.append(time.perf_counter() - t0)
            assert rep.files_read == 0
        print(f"first ingest into the study's own database: {first.seconds:.2f} s")
        print(
            f"second ingest, nothing new: median {med(again) * 1000:.0f} ms, max {max(again) * 1000:.0f} ms (target < 1 s)"
        )
        # one changed file: only it is read
        cell = next((root / "cells").iterdir())
        with open(cell / "train" / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": 10**6, "samples_seen": 1, "time": 0.0, "loss": 1.0}) + "\n")
        t0 = time.perf_counter()
        rep = ingest(root, threads=1)
        print(
            f"one changed metrics file: {rep.files_read} file read in {(time.perf_counter() - t0) * 1000:.0f} ms"
        )

        con = duckdb.connect(str(db), read_only=True)
        queries = {
            "final loss per cell (GROUP BY over 1M metric rows)": "SELECT uid, arg_max(value, step) AS final, min(value) FROM train_metrics WHERE name = 'loss' GROUP BY uid",
            "all metrics, min/max/last per cell x metric": "SELECT uid, name, min(value), max(value), arg_max(value, step) FROM train_metrics GROUP BY uid, name",
            "average score per model x budget x filter": "SELECT c.model, c.samples_seen, c.data_filter, avg(e.value) FROM eval_categories e JOIN cells c USING (uid) WHERE e.category = 'Average' GROUP BY ALL ORDER BY ALL",
        }  # fmt: skip
        for (name, sql), threads in [(q, t) for t in (1, 2) for q in queries.items()]:
            con.execute(f"SET threads = {threads}")
            ts = []
            for _ in range(10):
                t0 = time.perf_counter()
                con.execute(sql).fetchall()
                ts.append(time.perf_counter() - t0)
            print(
                f"query, {name}: median {med(ts) * 1000:.1f} ms ({threads} thread(s); target < 100 ms)"
            )
        con.close()
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
