"""Ingest run directories into ``<study-dir>/results.duckdb``: idempotent, incremental, bulk.

Jobs never open the database (DuckDB allows one writing process per file, and file locks on
shared file systems are unreliable); this module is the one writer. The plan of one ingest:

1. scan: stat every contract file (cell.json, status.json, train/metrics.jsonl, eval/*.json,
   filters/*/stats.json); compare (size, mtime_ns) with the ``files`` table;
2. parse the new or changed small files in Python and validate them; bulk-read every changed
   metrics.jsonl with one DuckDB ``read_json`` call (a failing batch is retried file by file to
   find the culprit);
3. any cell with a corrupt or half-written file is reported and left exactly as it was (none of
   its changed files are applied, none are recorded, so the next ingest retries them);
4. one transaction deletes the rows of every changed or removed file and inserts the new rows
   from Arrow tables. Twice in a row, the second ingest reads nothing and writes nothing.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webssl_cli.results.parse import (
    BadFile,
    load_json,
    parse_cell,
    parse_eval,
    parse_filter_stats,
    parse_status,
)
from webssl_cli.results.schema import create_schema

DB_NAME = "results.duckdb"
_RUN_KINDS = ("cell", "status", "metrics", "eval", "filter")
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
            "UINTEGER", "UBIGINT", "FLOAT", "DOUBLE", "DECIMAL")  # fmt: skip
_METRIC_KEYS = ("step", "samples_seen", "time")
_EMPTY_LONG = ("SELECT NULL::VARCHAR AS uid, NULL::BIGINT AS step, NULL::BIGINT AS samples_seen, "
               "NULL::DOUBLE AS time, NULL::VARCHAR AS name, NULL::DOUBLE AS value WHERE false")  # fmt: skip


@dataclass(frozen=True)
class FileEntry:
    rel: str  # path relative to the study directory (the files table key)
    kind: str  # cell | status | metrics | eval | filter
    uid: str  # cell uid, or filter key
    name: str | None  # eval name
    size: int
    mtime_ns: int


@dataclass
class IngestReport:
    study_dir: Path
    db_path: Path
    files_scanned: int = 0
    files_read: int = 0
    files_removed: int = 0
    cells_updated: int = 0
    metric_rows: int = 0
    skipped: list[str] = field(default_factory=list)  # "<path>: <why>", one per skipped file
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"ingested {self.study_dir}: {self.files_read} of {self.files_scanned} files read "
            f"({self.cells_updated} cells updated, {self.metric_rows} metric rows, "
            f"{self.files_removed} files gone), {len(self.skipped)} skipped, {self.seconds:.2f} s"
        )


# ---- scanning -------------------------------------------------------------------------------
def _stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def scan(study_dir: Path) -> dict[str, FileEntry]:
    """Every contract file under ``study_dir`` keyed by relative path (hidden/temp files skipped)."""
    found: dict[str, FileEntry] = {}
    root = str(study_dir)

    def add(rel: str, kind: str, uid: str, name: str | None = None) -> None:
        st = _stat(os.path.join(root, rel))
        if st is not None:
            found[rel] = FileEntry(rel, kind, uid, name, st[0], st[1])

    cells = os.path.join(root, "cells")
    if os.path.isdir(cells):
        for d in os.scandir(cells):
            if not d.is_dir() or d.name.startswith("."):
                continue
            uid = d.name
            add(f"cells/{uid}/cell.json", "cell", uid)
            add(f"cells/{uid}/status.json", "status", uid)
            add(f"cells/{uid}/train/metrics.jsonl", "metrics", uid)
            eval_dir = os.path.join(d.path, "eval")
            if os.path.isdir(eval_dir):
                for e in os.scandir(eval_dir):
                    if e.name.endswith(".json") and not e.name.startswith(".") and e.is_file():
                        add(f"cells/{uid}/eval/{e.name}", "eval", uid, e.name[: -len(".json")])
    filters = os.path.join(root, "filters")
    if os.path.isdir(filters):
        for d in os.scandir(filters):
            if d.is_dir() and not d.name.startswith("."):
                add(f"filters/{d.name}/stats.json", "filter", d.name)
    return found


# ---- metrics (bulk) --------------------------------------------------------------------------
def _read_metrics(con: Any, paths: list[str], table: str) -> None:
    """``CREATE TEMP TABLE table`` from the newline-delimited JSON files (raises on a bad one)."""
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM read_json(?, "
        "format='newline_delimited', union_by_name=true, filename=true)",
        [paths],
    )


def _load_metrics(con: Any, files: dict[str, str]) -> dict[str, str]:
    """Bulk-read ``{abspath: uid}``; temp view ``_m_long`` melts them. Returns ``{abspath: why}`` of bad files."""
    bad: dict[str, str] = {}
    paths = sorted(files)
    try:
        _read_metrics(con, paths, "_m_raw")
    except Exception:
        # Find the culprits file by file; the good ones are then read again in one batch.
        for p in paths:
            try:
                con.execute(
                    "SELECT count(*) FROM read_json(?, format='newline_delimited', sample_size=-1)",
                    [p],
                ).fetchall()
            except Exception as exc:
                bad[p] = " ".join(str(exc).split())[:200]
        good = [p for p in paths if p not in bad]
        if good:
            _read_metrics(con, good, "_m_raw")
    if len(bad) == len(paths):
        con.execute(f"CREATE OR REPLACE TEMP VIEW _m_long AS {_EMPTY_LONG}")
        return bad
    cols = {r[0]: str(r[1]) for r in con.execute("DESCRIBE _m_raw").fetchall()}
    metric_cols = [
        c
        for c, t in cols.items()
        if c not in _METRIC_KEYS
        and c != "filename"
        and t.split("(")[0] in (*_NUMERIC, "VARCHAR", "JSON")
    ]

    def q(c: str) -> str:
        return '"' + c.replace('"', '""') + '"'

    keys = ", ".join(
        f"TRY_CAST({q(k)} AS {'DOUBLE' if k == 'time' else 'BIGINT'}) AS {k}"
        if k in cols
        else f"NULL::{'DOUBLE' if k == 'time' else 'BIGINT'} AS {k}"
        for k in _METRIC_KEYS
    )
    import pyarrow as pa

    con.register("_m_files_arrow", pa.table({"filename": list(files), "uid": list(files.values())}))
    con.execute("CREATE OR REPLACE TEMP TABLE _m_files AS SELECT * FROM _m_files_arrow")
    con.unregister("_m_files_arrow")
    if metric_cols:
        # Text columns: a metric one file wrote as a string ("NaN") makes the whole batch's
        # column VARCHAR; TRY_CAST keeps its numbers, and true text becomes NULL, which UNPIVOT drops.
        values = ", ".join(
            f"TRY_CAST({q(c)} AS DOUBLE) AS {q(c)}"
            if cols[c] in ("VARCHAR", "JSON")
            else f"{q(c)}::DOUBLE AS {q(c)}"
            for c in metric_cols
        )
        # A view: the melt streams straight into train_metrics inside the transaction
        # (no 1M-row intermediate table).
        con.execute(
            "CREATE OR REPLACE TEMP VIEW _m_long AS "
            "SELECT f.uid, u.step, u.samples_seen, u.time, u.name, u.value FROM ("
            f"UNPIVOT (SELECT filename, {keys}, {values} FROM _m_raw) "
            f"ON {', '.join(q(c) for c in metric_cols)} INTO NAME name VALUE value"
            ") u JOIN _m_files f USING (filename)"
        )
    else:
        con.execute(f"CREATE OR REPLACE TEMP VIEW _m_long AS {_EMPTY_LONG}")
    return bad


# ---- the ingest --------------------------------------------------------------------------------
_COLUMNS = {
    "cell_specs": ["uid", "study", "model", "samples_seen", "data_filter", "classifier", "params",
                   "flops_per_sample", "flops", "seed", "axes", "spec", "method", "filter_kind",
                   "filter_key", "iterations"],
    "jobs": ["uid", "stage", "state", "attempts", "job_ids", "last_job_id", "host", "started",
             "ended", "error", "samples_seen", "step", "images_per_s"],
    "eval_results": ["uid", "eval_name", "task", "benchmark", "category", "metric", "value"],
    "eval_categories": ["uid", "eval_name", "category", "value"],
    "filter_stats": ["filter_key", "kept", "total", "fraction", "skipped"],
    "files": ["path", "kind", "uid", "name", "size", "mtime_ns", "sha256"],
}  # fmt: skip


def insert_rows(con: Any, table: str, rows: list[dict[str, Any]]) -> None:
    """Bulk insert through an Arrow table (never row by row)."""
    if not rows:
        return
    import pyarrow as pa

    cols = _COLUMNS[table]
    tbl = pa.Table.from_pylist(rows).select(cols)
    con.register("_ins", tbl)
    try:
        con.execute(f"INSERT INTO {table} BY NAME SELECT {', '.join(cols)} FROM _ins")
    finally:
        con.unregister("_ins")


def _delete_keys(con: Any, table: str, key_cols: list[str], keys: set[tuple[Any, ...]]) -> None:
    if not keys:
        return
    import pyarrow as pa

    cols = list(zip(*sorted(keys), strict=True))
    con.register("_del", pa.table({k: list(v) for k, v in zip(key_cols, cols, strict=True)}))
    try:
        cond = " AND ".join(f"{table}.{k} = _del.{k}" for k in key_cols)
        con.execute(f"DELETE FROM {table} WHERE EXISTS (SELECT 1 FROM _del WHERE {cond})")
    finally:
        con.unregister("_del")


def ingest(
    study_dir: str | os.PathLike[str],
    db_path: str | os.PathLike[str] | None = None,
    threads: int | None = None,
) -> IngestReport:
    """Bring ``results.duckdb`` up to date with the run directories under ``study_dir``.

    ``threads`` caps DuckDB's threads (benchmarks use 1); default: DuckDB's own choice."""
    import duckdb

    t0 = time.perf_counter()
    study = Path(study_dir).resolve()
    db = Path(db_path) if db_path else study / DB_NAME
    rep = IngestReport(study_dir=study, db_path=db)
    try:
        con = duckdb.connect(str(db), config={"threads": threads} if threads else {})
    except duckdb.Error as exc:
        from webssl_cli.errors import UserError

        raise UserError(
            f"{db}: cannot open for writing ({' '.join(str(exc).split())[:160]}); "
            "is another `webssl results ingest` or `report` running? Retry when it ends"
        ) from None
    try:
        create_schema(con)
        known = {
            r[0]: (r[1], r[2], r[3], r[4], r[5])
            for r in con.execute(
                "SELECT path, size, mtime_ns, kind, uid, name FROM files WHERE kind IN "
                f"({', '.join(repr(k) for k in _RUN_KINDS)})"
            ).fetchall()
        }
        found = scan(study)
        rep.files_scanned = len(found)
        changed = [
            e for e in found.values() if known.get(e.rel, (None, None))[:2] != (e.size, e.mtime_ns)
        ]
        removed = [(p, v[2], v[3], v[4]) for p, v in known.items() if p not in found]
        if not changed and not removed:
            rep.seconds = time.perf_counter() - t0
            return rep

        # -- parse small files, per cell; a bad file condemns its cell's whole update --
        bad_cells: dict[str, list[str]] = defaultdict(list)
        cell_rows, job_rows, eval_rows, cat_rows, filt_rows = [], [], [], [], []
        file_rows: list[dict[str, Any]] = []
        metrics_files: dict[str, str] = {}
        by_rel: dict[str, FileEntry] = {}
        known_cells = {v[3] for v in known.values() if v[2] == "cell"}
        for e in sorted(changed, key=lambda e: e.rel):
            path = study / e.rel
            by_rel[e.rel] = e
            if (
                e.kind in ("cell", "status", "metrics", "eval")
                and e.uid not in known_cells
                and f"cells/{e.uid}/cell.json" not in found
            ):
                bad_cells[e.uid].append(f"{e.rel}: its cell has no cell.json yet")
                continue
            if e.kind == "metrics":
                metrics_files[str(path)] = e.uid
                continue
            try:
                obj, digest = load_json(path)
                if e.kind == "cell":
                    cell_rows.append(parse_cell(obj, e.uid))
                elif e.kind == "status":
                    job_rows.extend(parse_status(obj, e.uid))
                elif e.kind == "eval":
                    r, c = parse_eval(obj, e.uid, e.name or "")
                    eval_rows.extend(r)
                    cat_rows.extend(c)
                else:
                    filt_rows.append(parse_filter_stats(obj, e.uid))
            except (BadFile, OSError) as exc:
                # filter stats belong to no cell: only that file is skipped
                bad_cells["filter:" + e.uid if e.kind == "filter" else e.uid].append(
                    f"{e.rel}: {exc}"
                )
                continue
            file_rows.append({"path": e.rel, "kind": e.kind, "uid": e.uid, "name": e.name,
                              "size": e.size, "mtime_ns": e.mtime_ns, "sha256": digest})  # fmt: skip

        metrics_files = {p: u for p, u in metrics_files.items() if u not in bad_cells}
        if metrics_files:
            for p, why in _load_metrics(con, metrics_files).items():
                bad_cells[metrics_files[p]].append(f"{os.path.relpath(p, study)}: {why}")
        for p, u in metrics_files.items():
            if u not in bad_cells:
                e = by_rel[os.path.relpath(p, study)]
                file_rows.append({"path": e.rel, "kind": e.kind, "uid": e.uid, "name": None,
                                  "size": e.size, "mtime_ns": e.mtime_ns, "sha256": None})  # fmt: skip
        for reasons in bad_cells.values():
            rep.skipped.extend(reasons)

        def ok(rows: list[dict[str, Any]], key: str = "uid") -> list[dict[str, Any]]:
            return [r for r in rows if r[key] not in bad_cells]

        file_rows = [
            r
            for r in file_rows
            if (("filter:" if r["kind"] == "filter" else "") + r["uid"]) not in bad_cells
        ]
        applied = {(r["kind"], r["uid"], r["name"]) for r in file_rows}
        gone = {(k, u, n) for _, k, u, n in removed}

        # -- one transaction: delete what changed or vanished, insert the new rows --
        con.execute("BEGIN TRANSACTION")
        try:
            todo = applied | gone
            _delete_keys(con, "cell_specs", ["uid"], {(u,) for k, u, _ in todo if k == "cell"})
            _delete_keys(con, "jobs", ["uid"], {(u,) for k, u, _ in todo if k == "status"})
            _delete_keys(
                con, "train_metrics", ["uid"], {(u,) for k, u, _ in todo if k == "metrics"}
            )
            evals = {(u, n or "") for k, u, n in todo if k == "eval"}
            _delete_keys(con, "eval_results", ["uid", "eval_name"], evals)
            _delete_keys(con, "eval_categories", ["uid", "eval_name"], evals)
            _delete_keys(
                con, "filter_stats", ["filter_key"], {(u,) for k, u, _ in todo if k == "filter"}
            )
            _delete_keys(
                con,
                "files",
                ["path"],
                {(r["path"],) for r in file_rows} | {(p,) for p, *_ in removed},
            )
            insert_rows(con, "cell_specs", ok(cell_rows))
            insert_rows(con, "jobs", ok(job_rows))
            insert_rows(con, "eval_results", ok(eval_rows))
            insert_rows(con, "eval_categories", ok(cat_rows))
            insert_rows(
                con,
                "filter_stats",
                [r for r in filt_rows if "filter:" + r["filter_key"] not in bad_cells],
            )
            if metrics_files:
                good = [(u,) for u in sorted(set(metrics_files.values())) if u not in bad_cells]
                if good:
                    import pyarrow as pa

                    con.register("_good", pa.table({"uid": [g[0] for g in good]}))
                    inserted = con.execute(
                        "INSERT INTO train_metrics SELECT * FROM _m_long WHERE uid IN (SELECT uid FROM _good)"
                    ).fetchall()
                    rep.metric_rows = int(inserted[0][0]) if inserted else 0
                    con.unregister("_good")
            insert_rows(con, "files", file_rows)
            con.execute("DELETE FROM studies WHERE kind = 'run'")
            con.execute(
                "INSERT INTO studies SELECT DISTINCT study, 'run', ? FROM cell_specs "
                "WHERE uid NOT LIKE 'ref:%' AND study NOT IN (SELECT study FROM studies)",
                [str(study)],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("DROP VIEW IF EXISTS _m_long")
        con.execute("DROP TABLE IF EXISTS _m_raw")
        con.execute("DROP TABLE IF EXISTS _m_files")
        rep.files_read = len(file_rows)
        rep.files_removed = len(removed)
        rep.cells_updated = len(
            {r["uid"] for r in file_rows if r["kind"] != "filter"}
            | {u for _, k, u, _ in removed if k != "filter"}
        )
        rep.seconds = time.perf_counter() - t0
        return rep
    finally:
        con.close()
