"""Named queries over ``results.duckdb`` returning Polars frames, and the read-only SQL runner.

from webssl_cli.results import queries
with queries.connect("runs/smoke") as con:
    queries.cells(con)            # one row per cell: axes, params, FLOPs, state
    queries.final_metrics(con)    # last logged value of every train metric per cell
    queries.curves(con, "loss")   # one training curve per cell
    queries.scores(con)           # every eval score, long, with the cell's axes
    queries.category_table(con)   # one row per cell, a column per category (+ Average)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from webssl_cli.errors import UserError
from webssl_cli.results.ingest import DB_NAME

# Statement types a read-only query may run; everything else is refused before execution.
# The connection itself is the real guard (read-only, no file system, configuration locked):
# a SET or PRAGMA that would write a file or fetch an extension fails there.
_READ_TYPES = ("SELECT", "EXPLAIN", "PRAGMA", "SET", "RELATION", "CALL")
# No file, extension or setting beyond the database itself: `log_query_path`, profiling
# output, read_text/glob/read_csv, COPY, ATTACH, EXPORT, INSTALL/LOAD all fail on this config.
_LOCKED_DOWN = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "lock_configuration": True,
}
_CATEGORY_ORDER = ("General", "Knowledge", "OCR & Chart", "Vision-Centric", "Average")


def resolve_study_dir(arg: str | os.PathLike[str]) -> Path:
    """A study output directory, or a study YAML file (its output directory)."""
    path = Path(arg)
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        from webssl_cli.study.loader import load_study

        return Path(load_study(path).output_dir)
    if not path.is_dir():
        raise UserError(
            f"{path}: not a study directory or study file; pass the directory that holds cells/"
        )
    return path


def db_path(study_dir: str | os.PathLike[str]) -> Path:
    return Path(study_dir) / DB_NAME


@contextmanager
def connect(study_dir: str | os.PathLike[str], read_only: bool = True) -> Iterator[Any]:
    """A DuckDB connection to the study's database (read-only by default).

    A read-only connection reaches nothing beyond the database file and cannot change its own
    settings (``_LOCKED_DOWN``), so that SQL from the command line cannot write or read files.
    """
    import duckdb

    db = db_path(study_dir)
    if read_only and not db.exists():
        raise UserError(f"{db}: no results database; run `webssl results ingest {study_dir}` first")
    try:
        if read_only:
            con = duckdb.connect(str(db), read_only=True, config=dict(_LOCKED_DOWN))
        else:
            con = duckdb.connect(str(db), read_only=False)
    except duckdb.Error as exc:
        raise UserError(f"{db}: cannot open ({' '.join(str(exc).split())})") from None
    try:
        yield con
    finally:
        con.close()


def check_read_only(con: Any, sql: str) -> None:
    """Refuse anything but reads, with a one-line error naming the statement type."""
    import duckdb

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise UserError(f"query: {' '.join(str(exc).split())}") from None
    if not statements:
        raise UserError("query: empty SQL; give a SELECT statement")
    if len(statements) > 1:
        raise UserError(
            f"query: {len(statements)} statements given; more than one is refused, run one at a time"
        )
    for st in statements:
        kind = str(st.type).rsplit(".", 1)[-1]
        if kind not in _READ_TYPES:
            raise UserError(
                f"query: {kind} statements are refused (the results database is read-only here; "
                "only SELECT/EXPLAIN/PRAGMA are allowed; `webssl results ingest` is the one writer)"
            )


def run_query(con: Any, sql: str) -> Any:
    """Run read-only ``sql``; returns a pyarrow Table of the last statement."""
    import duckdb

    check_read_only(con, sql)
    try:
        rel = con.sql(sql)
        if rel is None:  # SET and friends return no relation
            import pyarrow as pa

            return pa.table({})
        return rel.to_arrow_table()
    except duckdb.Error as exc:
        raise UserError(f"query: {' '.join(str(exc).split())}") from None


def _pl(con: Any, sql: str, params: list[Any] | None = None) -> Any:
    import polars as pl

    return pl.from_arrow(con.sql(sql, params=params or None).to_arrow_table())


def cells(con: Any, study: str | None = None) -> Any:
    """One row per cell: uid, study, model, params, samples_seen, data_filter, FLOPs, state."""
    where = "WHERE study = ?" if study else ""
    return _pl(
        con,
        "SELECT uid, study, model, params, samples_seen, data_filter, classifier, flops_per_sample,"
        f" flops, seed, state FROM cells {where} ORDER BY study, params NULLS LAST, samples_seen,"
        " data_filter, uid",
        [study] if study else None,
    )


def cell_methods(con: Any) -> dict[str, str]:
    """uid -> the cell's training method (cell.json's ``method``; webdino when not recorded)."""
    rows = con.execute("SELECT uid, method FROM cell_specs").fetchall()
    return {str(u): str(m or "webdino") for u, m in rows}


def final_metrics(con: Any) -> Any:
    """The last logged value (highest step) of every train metric, per cell."""
    return _pl(
        con,
        "SELECT uid, name, max(step) AS step, arg_max(samples_seen, step) AS samples_seen,"
        " arg_max(value, step) AS value FROM train_metrics GROUP BY uid, name ORDER BY uid, name",
    )


def curves(con: Any, name: str = "loss", every: int = 1) -> Any:
    """Training curves of metric ``name`` joined with the cell axes (every ``every``-th point)."""
    return _pl(
        con,
        "WITH m AS (SELECT uid, step, samples_seen, value, row_number() OVER (PARTITION BY uid"
        " ORDER BY step) AS i FROM train_metrics WHERE name = ?)"
        " SELECT c.study, c.model, c.params, c.samples_seen AS budget, c.data_filter, m.uid,"
        " m.step, m.samples_seen, m.value FROM m JOIN cells c USING (uid)"
        " WHERE (m.i - 1) % ? = 0 ORDER BY c.params, c.samples_seen, c.data_filter, m.uid, m.step",
        [name, max(1, int(every))],
    )


def scores(con: Any, variant: str | None = "encoder") -> Any:
    """Every evaluation score, long: the cell's axes, ``kind`` (category | benchmark | probe),
    ``label`` (e.g. 'Average', 'OCR & Chart', 'synth-color', 'knn top1'), ``benchmark`` (the
    benchmark a benchmark or probe score is the mean over; NULL for categories), ``variant``
    and ``value``. ``variant``: the encoder's scores by default; None: every variant."""
    where = "" if variant is None else "WHERE s.variant = ?"
    return _pl(
        con,
        f"""
        WITH s AS (
            SELECT uid, eval_name, 'category' AS kind, category AS label, NULL AS category,
                   NULL AS benchmark, variant, value
            FROM eval_categories
            UNION ALL
            SELECT uid, eval_name, 'benchmark', benchmark, category, benchmark, variant, value
            FROM eval_results WHERE category IS NOT NULL
            UNION ALL
            SELECT uid, eval_name, 'probe', task || ' ' || coalesce(metric, 'score')
                || CASE WHEN count(*) OVER (PARTITION BY uid, eval_name, variant) > 1
                        THEN ' (' || benchmark || ')' ELSE '' END, NULL, benchmark, variant, value
            FROM eval_results WHERE category IS NULL
        )
        SELECT c.study, c.uid, c.model, c.params, c.samples_seen, c.data_filter, c.flops,
               c.seed, c.state, s.eval_name, s.kind, s.label, s.category, s.benchmark,
               s.variant, s.value
        FROM s JOIN cells c USING (uid) {where}
        ORDER BY c.study, c.params NULLS LAST, c.samples_seen, c.data_filter, s.kind, s.label
        """,
        None if variant is None else [variant],
    )


def examples(con: Any, uids: list[str] | None = None) -> Any:
    """Per-example outcomes (uid, eval_name, variant, benchmark, example, value)."""
    if uids is None:
        return _pl(con, "SELECT * FROM eval_examples ORDER BY uid, eval_name, variant, benchmark")
    import pyarrow as pa

    con.register("_uids", pa.table({"uid": uids}))
    try:
        return _pl(con, "SELECT * FROM eval_examples WHERE uid IN (SELECT uid FROM _uids)")
    finally:
        con.unregister("_uids")


def diagnostics(con: Any) -> Any:
    """Feature diagnostics of each eval (effective rank, per-dimension std), long."""
    return _pl(con, "SELECT * FROM eval_diagnostics ORDER BY uid, eval_name, variant, name")


def category_table(con: Any) -> Any:
    """One row per cell with its axes and a column per category (General ... Average)."""
    import polars as pl

    s = scores(con).filter(pl.col("kind") == "category")
    if s.is_empty():
        return s
    wide = s.pivot(
        on="label",
        index=["study", "uid", "model", "params", "samples_seen", "data_filter"],
        values="value",
        aggregate_function="first",
    )
    cats = [c for c in _CATEGORY_ORDER if c in wide.columns]
    rest = [c for c in wide.columns if c not in cats and c not in s.columns]
    return wide.select(
        ["study", "uid", "model", "params", "samples_seen", "data_filter", *cats, *rest]
    )


def write_frame(tbl: Any, fmt: str, out: Path | None) -> str | None:
    """Render a pyarrow table as table/csv/json (returned) or write Parquet to ``out``."""
    import polars as pl

    df = pl.from_arrow(tbl)
    assert isinstance(df, pl.DataFrame)
    if out is not None and (out.is_dir() or not out.parent.is_dir()):
        what = "is a directory" if out.is_dir() else f"its directory {out.parent} does not exist"
        raise UserError(f"--out {out}: {what}; give a file path")
    if fmt == "parquet":
        if out is None:
            raise UserError("query: --format parquet needs --out FILE")
        try:
            df.write_parquet(out)
        except OSError as exc:
            raise UserError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
        return None
    if fmt == "csv":
        text = df.write_csv()
    elif fmt == "json":
        text = df.write_json()
    else:
        from tabulate import tabulate

        text = tabulate(df.rows(), headers=df.columns, tablefmt="github", floatfmt=".4g") + "\n"
    if out is not None:
        from webssl_cli.rundir import atomic_write_text

        try:
            atomic_write_text(out, text)
        except OSError as exc:
            raise UserError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
        return None
    return text
