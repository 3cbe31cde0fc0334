"""The results database schema (DuckDB). Pure SQL text; creating it is idempotent.

One database per study directory (``<study-dir>/results.duckdb``), written only by
``webssl results ingest`` (and ``import-reference``, ``report`` for fits). Tables map to the files
of the run-directory contract, so that a changed file replaces exactly the rows it produced:

========================  =====================================  ========================
table                     source file                            replaced by key
========================  =====================================  ========================
``cell_specs``            ``cells/<uid>/cell.json``              ``uid``
``jobs``                  ``cells/<uid>/status.json``            ``uid``
``train_metrics``         ``cells/<uid>/train/metrics.jsonl``    ``uid``
``eval_results``          ``cells/<uid>/eval/<name>.json``       ``(uid, eval_name)``
``eval_categories``       ``cells/<uid>/eval/<name>.json``       ``(uid, eval_name)``
``filter_stats``          ``filters/<key>/stats.json``           ``filter_key``
``files``                 every file above (path, size, mtime)   ``path``
========================  =====================================  ========================

``cells`` is a view: the spec joined with a state derived from the stages in ``jobs``.
"""

from __future__ import annotations

SCHEMA_VERSION = 2

# Columns added after version 1, as (table, column, type): a database of an older version gains
# them on the next ingest, and every run-directory file is read again to fill them (the
# database is derived data; imported references are kept).
ADDED_COLUMNS: list[tuple[str, str, str]] = [
    ("cell_specs", "method", "VARCHAR"),
    ("cell_specs", "filter_kind", "VARCHAR"),
    ("cell_specs", "filter_key", "VARCHAR"),
    ("cell_specs", "iterations", "BIGINT"),
]

TABLES_SQL = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);

CREATE TABLE IF NOT EXISTS studies (
    study VARCHAR PRIMARY KEY,       -- study name (cell.json "study"; a reference's --name)
    kind VARCHAR NOT NULL,           -- 'run' (ingested run directories) | 'reference' (imported CSV)
    source VARCHAR                   -- study directory or CSV path
);

CREATE TABLE IF NOT EXISTS cell_specs (
    uid VARCHAR PRIMARY KEY,
    study VARCHAR NOT NULL,
    model VARCHAR,                   -- registry key (canonical)
    samples_seen BIGINT,             -- the samples-seen axis (training budget)
    data_filter VARCHAR,             -- the study's filter name (the data_filter axis value)
    classifier VARCHAR,              -- the filter's classifier (ocr, vlm, label), NULL unfiltered
    params BIGINT,                   -- backbone parameters (registry, analytic)
    flops_per_sample DOUBLE,         -- training FLOPs per image (study.compute), NULL if unknown
    flops DOUBLE,                    -- flops_per_sample * samples_seen
    seed BIGINT,
    axes JSON,                       -- every axis value of the cell, as in cell.json
    spec JSON,                       -- the whole resolved cell.json
    method VARCHAR,                  -- training objective (webdino)
    filter_kind VARCHAR,             -- 'none' | 'light' | 'heavy' (cell.json data.filter)
    filter_key VARCHAR,              -- the filter output's key under filters/, NULL unfiltered
    iterations BIGINT                -- optimiser steps (cell.json facts.iterations)
);

CREATE TABLE IF NOT EXISTS jobs (
    uid VARCHAR NOT NULL,
    stage VARCHAR NOT NULL,          -- 'train', 'eval/<name>', ...
    state VARCHAR,                   -- pending | queued | running | done | failed | diverged | cancelled
    attempts INTEGER,
    job_ids VARCHAR[],
    last_job_id VARCHAR,
    host VARCHAR,
    started VARCHAR,
    ended VARCHAR,
    error VARCHAR,
    samples_seen BIGINT,
    step BIGINT,
    images_per_s DOUBLE,
    PRIMARY KEY (uid, stage)
);

CREATE TABLE IF NOT EXISTS train_metrics (
    uid VARCHAR NOT NULL,
    step BIGINT,
    samples_seen BIGINT,
    time DOUBLE,
    name VARCHAR NOT NULL,           -- loss, dino_loss, ibot_loss, lr, ...
    value DOUBLE
);

CREATE TABLE IF NOT EXISTS eval_results (
    uid VARCHAR NOT NULL,
    eval_name VARCHAR NOT NULL,      -- the stage / file name (eval/<name>.json)
    task VARCHAR,                    -- knn | linear | vqa | reference
    benchmark VARCHAR NOT NULL,
    category VARCHAR,                -- NULL for kNN/linear
    metric VARCHAR,                  -- top1, accuracy, anls, ...
    value DOUBLE
);

CREATE TABLE IF NOT EXISTS eval_categories (
    uid VARCHAR NOT NULL,
    eval_name VARCHAR NOT NULL,
    category VARCHAR NOT NULL,       -- General, Knowledge, OCR & Chart, Vision-Centric, Average
    value DOUBLE
);

CREATE TABLE IF NOT EXISTS filter_stats (
    filter_key VARCHAR PRIMARY KEY,  -- <source>-<filter>-<classifier>-v<version>
    kept BIGINT,
    total BIGINT,
    fraction DOUBLE,
    skipped JSON
);

CREATE TABLE IF NOT EXISTS fits (
    study VARCHAR NOT NULL,
    target VARCHAR NOT NULL,         -- the fitted score, e.g. 'vqa:Average'
    form VARCHAR NOT NULL,           -- 'params' | 'samples_seen' | 'joint'
    slice VARCHAR,                   -- the cells used, e.g. 'samples_seen=20000, data_filter=none'
    param VARCHAR NOT NULL,          -- c, a, alpha, E, A, B, beta, ...; 'holdout_error'
    estimate DOUBLE,
    lo DOUBLE,                       -- 95% bootstrap interval
    hi DOUBLE,
    n_points INTEGER,
    note VARCHAR
);

CREATE TABLE IF NOT EXISTS files (
    path VARCHAR PRIMARY KEY,        -- relative to the study directory, or absolute for references
    kind VARCHAR NOT NULL,           -- cell | status | metrics | eval | filter | reference
    uid VARCHAR,                     -- the cell; the filter key for kind='filter'
    name VARCHAR,                    -- eval name for kind='eval'
    size BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    sha256 VARCHAR                   -- of the bytes read (small files; NULL for bulk-loaded ones)
);

CREATE OR REPLACE VIEW cells AS
WITH st AS (
    SELECT uid,
        CASE
            WHEN bool_or(state = 'failed') THEN 'failed'
            WHEN bool_or(state = 'diverged') THEN 'diverged'
            WHEN bool_or(state = 'cancelled') THEN 'cancelled'
            WHEN bool_or(state = 'running') THEN 'running'
            WHEN bool_or(state = 'queued') THEN 'queued'
            WHEN bool_and(state = 'done') THEN 'done'
            ELSE 'pending'
        END AS state
    FROM jobs GROUP BY uid
)
SELECT s.*, coalesce(st.state, CASE WHEN s.uid LIKE 'ref:%' THEN 'reference' ELSE 'pending' END) AS state
FROM cell_specs s LEFT JOIN st USING (uid);
"""

TABLE_NAMES = (
    "studies",
    "cell_specs",
    "jobs",
    "train_metrics",
    "eval_results",
    "eval_categories",
    "filter_stats",
    "fits",
    "files",
)


def create_schema(con: object) -> None:
    """Create every table and view if absent and record the schema version.

    A database already at this version is left untouched (no write on a no-op ingest)."""
    have = con.execute(  # type: ignore[attr-defined]
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'meta' AND schema_name = 'main'"
    ).fetchall()
    if have[0][0]:
        version = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()  # type: ignore[attr-defined]
        if version and version[0][0] == str(SCHEMA_VERSION):
            return
        con.execute(TABLES_SQL)  # type: ignore[attr-defined]
        for table, column, kind in ADDED_COLUMNS:
            con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")  # type: ignore[attr-defined]
        con.execute(TABLES_SQL)  # type: ignore[attr-defined]
        con.execute("DELETE FROM files")  # type: ignore[attr-defined]
    else:
        con.execute(TABLES_SQL)  # type: ignore[attr-defined]
    con.execute(  # type: ignore[attr-defined]
        "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)]
    )
