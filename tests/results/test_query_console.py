"""`results query` can neither write nor reach outside the study's database, whatever the SQL."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from webssl_cli.cli import app
from webssl_cli.results import queries
from webssl_cli.results.ingest import DB_NAME, ingest

runner = CliRunner()


@pytest.fixture
def ingested(study_dir: Path) -> Path:
    ingest(study_dir)
    return study_dir


def _write_paths(study: Path, outside: Path) -> list[tuple[str, Path | None]]:
    """(SQL, the file it would create or overwrite if it got through)."""
    db = study / DB_NAME
    return [
        (f"SET log_query_path = '{db}'", db),
        (f"SET log_query_path = '{outside / 'log.txt'}'", outside / "log.txt"),
        ("PRAGMA enable_profiling = 'json'", None),
        (f"SET profiling_output = '{outside / 'prof.json'}'", outside / "prof.json"),
        (f"PRAGMA profiling_output = '{outside / 'prof2.json'}'", outside / "prof2.json"),
        ("SELECT * FROM read_text('/etc/hostname')", None),
        ("SELECT * FROM read_blob('/etc/hostname')", None),
        ("SELECT * FROM glob('/etc/*')", None),
        ("SELECT * FROM read_csv('/etc/passwd')", None),
        (f"SELECT * FROM read_parquet('{outside}/*.parquet')", None),
        ("SET autoinstall_known_extensions = true", None),
        ("SET autoload_known_extensions = true", None),
        ("SET enable_external_access = true", None),
        ("SET lock_configuration = false", None),
        (f"SET temp_directory = '{outside / 'tmp'}'", outside / "tmp"),
        (f"COPY (SELECT 1) TO '{outside / 'copy.csv'}'", outside / "copy.csv"),
        (f"ATTACH '{outside / 'other.duckdb'}' AS o", outside / "other.duckdb"),
        (f"EXPORT DATABASE '{outside / 'export'}'", outside / "export"),
        ("INSTALL httpfs", None),
        ("LOAD httpfs", None),
        ("PRAGMA threads = 1", None),
        ("CALL enable_logging()", None),
        ("SELECT 1; SELECT 2", None),
    ]


def test_every_write_path_is_refused(ingested: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    db = ingested / DB_NAME
    before = db.read_bytes()
    cases = _write_paths(ingested, outside)
    for sql, target in cases:
        r = runner.invoke(app, ["results", "query", str(ingested), sql])
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert r.exit_code == 2, (sql, r.output)
        assert len(lines) == 1 and "Traceback" not in r.output, (sql, r.output)
        if target is not None and target != db:
            assert not target.exists(), sql
    assert db.read_bytes() == before
    assert sorted(os.listdir(outside)) == []
    # Reads still work after all of that.
    r = runner.invoke(app, ["results", "query", str(ingested), "SELECT count(*) AS n FROM cells"])
    assert r.exit_code == 0 and "12" in r.output


def test_console_settings_are_locked(ingested: Path) -> None:
    with queries.connect(ingested) as con:
        got = dict(
            con.execute(
                "SELECT name, value FROM duckdb_settings() WHERE name IN "
                "('enable_external_access', 'lock_configuration', 'autoinstall_known_extensions')"
            ).fetchall()
        )
    assert got == {
        "enable_external_access": "false",
        "lock_configuration": "true",
        "autoinstall_known_extensions": "false",
    }


def test_out_to_a_directory_is_one_line(ingested: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["results", "query", str(ingested), "SELECT 1", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "is a directory" in r.output and "Traceback" not in r.output
    r = runner.invoke(
        app, ["results", "query", str(ingested), "SELECT 1", "--out", str(tmp_path / "no" / "x")]
    )
    assert r.exit_code == 2 and "does not exist" in r.output
