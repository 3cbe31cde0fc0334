"""Bulk reads of the line-oriented run files into DuckDB temp tables, one ``read_json`` call per
kind (train/metrics.jsonl, eval/*.examples.jsonl); a failing batch is retried file by file to
name the culprits, and the good files are loaded."""

from __future__ import annotations

from typing import Any

_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
            "UINTEGER", "UBIGINT", "FLOAT", "DOUBLE", "DECIMAL")  # fmt: skip
_METRIC_KEYS = ("step", "samples_seen", "time")
_FILE_COL = "__webssl_source_file"
_EMPTY_LONG = ("SELECT NULL::VARCHAR AS uid, NULL::BIGINT AS step, NULL::BIGINT AS samples_seen, "
               "NULL::DOUBLE AS time, NULL::VARCHAR AS name, NULL::DOUBLE AS value WHERE false")  # fmt: skip


# ---- metrics (bulk) --------------------------------------------------------------------------
def _read_metrics(con: Any, paths: list[str], table: str) -> None:
    """``CREATE TEMP TABLE table`` from the newline-delimited JSON files (raises on a bad one)."""
    # records=true: a line that is not an object fails its file. The source file goes in a
    # column of our own name, so that a metric called "filename" cannot collide with it.
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM read_json(?, "
        f"format='newline_delimited', records=true, union_by_name=true, filename='{_FILE_COL}')",
        [paths],
    )
    # A step or sample count beyond BIGINT would become NULL without a word: fail its file.
    cols = {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
    for key in ("step", "samples_seen"):
        if key not in cols:
            continue
        bad = con.execute(
            f'SELECT {_FILE_COL} FROM {table} WHERE "{key}" IS NOT NULL '
            f'AND TRY_CAST("{key}" AS BIGINT) IS NULL LIMIT 1'
        ).fetchall()
        if bad:
            raise ValueError(f"{bad[0][0]}: {key} is not an integer in range")


def load_metrics(con: Any, files: dict[str, str]) -> dict[str, str]:
    """Bulk-read ``{abspath: uid}``; temp view ``_m_long`` melts them. Returns ``{abspath: why}`` of bad files."""
    bad: dict[str, str] = {}
    paths = sorted(files)
    try:
        _read_metrics(con, paths, "_m_raw")
    except Exception:
        # Find the culprits file by file; the good ones are then read again in one batch.
        for p in paths:
            try:
                _read_metrics(con, [p], "_m_one")
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
        and c != _FILE_COL
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

    con.register("_m_files_arrow", pa.table({_FILE_COL: list(files), "uid": list(files.values())}))
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
            f"UNPIVOT (SELECT {_FILE_COL}, {keys}, {values} FROM _m_raw) "
            f"ON {', '.join(q(c) for c in metric_cols)} INTO NAME name VALUE value"
            f") u JOIN _m_files f USING ({_FILE_COL})"
        )
    else:
        con.execute(f"CREATE OR REPLACE TEMP VIEW _m_long AS {_EMPTY_LONG}")
    return bad


# ---- per-example outcomes (bulk) --------------------------------------------------------------
_EXAMPLE_COLUMNS = (
    "{'variant': 'VARCHAR', 'benchmark': 'VARCHAR', 'example': 'VARCHAR', 'value': 'DOUBLE'}"
)


def _read_examples(con: Any, paths: list[str]) -> None:
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _x_raw AS SELECT * FROM read_json(?, "
        f"format='newline_delimited', columns={_EXAMPLE_COLUMNS}, filename=true)",
        [paths],
    )


def load_examples(con: Any, files: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Bulk-read ``{abspath: (uid, eval name)}`` into temp table ``_x_raw`` (+ ``_x_files``).
    Returns ``{abspath: why}`` of bad files; the good ones are loaded."""
    import pyarrow as pa

    bad: dict[str, str] = {}
    paths = sorted(files)
    try:
        _read_examples(con, paths)
    except Exception:
        for p in paths:
            try:
                _read_examples(con, [p])
            except Exception as exc:
                bad[p] = " ".join(str(exc).split())[:200]
        good = [p for p in paths if p not in bad]
        if good:
            _read_examples(con, good)
        else:
            con.execute("CREATE OR REPLACE TEMP TABLE _x_raw AS SELECT NULL::VARCHAR AS variant, "
                        "NULL::VARCHAR AS benchmark, NULL::VARCHAR AS example, NULL::DOUBLE AS value, "
                        "NULL::VARCHAR AS filename WHERE false")  # fmt: skip
    for p, why in _null_fields(con).items():
        bad.setdefault(p, why)
    con.register("_x_files_arrow", pa.table({"filename": paths, "uid": [files[p][0] for p in paths],
                                             "eval_name": [files[p][1] for p in paths]}))  # fmt: skip
    con.execute("CREATE OR REPLACE TEMP TABLE _x_files AS SELECT * FROM _x_files_arrow")
    con.unregister("_x_files_arrow")
    return bad


def _null_fields(con: Any) -> dict[str, str]:
    """Files with a line lacking one of the contract's fields (a half-written line)."""
    rows = con.execute(
        "SELECT filename, count(*) FROM _x_raw WHERE variant IS NULL OR benchmark IS NULL "
        "OR example IS NULL OR value IS NULL GROUP BY filename"
    ).fetchall()
    return {str(f): f"{n} line(s) missing variant/benchmark/example/value" for f, n in rows}
