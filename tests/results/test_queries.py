from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from webssl_cli.cli import app
from webssl_cli.errors import UserError
from webssl_cli.results import queries
from webssl_cli.results.ingest import ingest

runner = CliRunner()


@pytest.fixture
def ingested(study_dir: Path) -> Path:
    ingest(study_dir)
    return study_dir


def test_named_queries_return_polars(ingested: Path) -> None:
    with queries.connect(ingested) as con:
        cells = queries.cells(con)
        assert isinstance(cells, pl.DataFrame) and cells.height == 12
        assert cells["params"].is_sorted()
        fm = queries.final_metrics(con)
        assert fm.filter(pl.col("name") == "loss").height == 12
        assert set(fm["step"].to_list()) == {20}
        cur = queries.curves(con, "loss")
        assert cur.height == 12 * 20
        s = queries.scores(con)
        assert set(s["kind"].unique().to_list()) == {"category", "benchmark", "probe"}
        assert "knn top1" in s["label"].to_list()
        ct = queries.category_table(con)
        assert ct.columns[-5:] == [
            "General",
            "Knowledge",
            "OCR & Chart",
            "Vision-Centric",
            "Average",
        ]
        assert ct.height == 12


def test_query_cli_formats(ingested: Path, tmp_path: Path) -> None:
    sql = "SELECT model, count(*) AS n FROM cells GROUP BY model ORDER BY model"
    r = runner.invoke(app, ["results", "query", str(ingested), sql])
    assert r.exit_code == 0, r.output
    assert "vit-nano" in r.output and "| model" in r.output
    r = runner.invoke(app, ["results", "query", str(ingested), sql, "--format", "csv"])
    assert r.output.splitlines()[0] == "model,n"
    r = runner.invoke(app, ["results", "query", str(ingested), sql, "--format", "json"])
    assert json.loads(r.output)[0]["n"] == 4
    out = tmp_path / "q.parquet"
    r = runner.invoke(
        app, ["results", "query", str(ingested), sql, "--format", "parquet", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert pl.read_parquet(out).height == 3


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM cell_specs",
        "CREATE TABLE x (a INT)",
        "SELECT 1; DROP TABLE jobs",
        "COPY cell_specs TO '/tmp/x.csv'",
        "ATTACH '/tmp/other.duckdb' AS o",
        "UPDATE jobs SET state = 'done'",
    ],
)
def test_query_refuses_writes(ingested: Path, sql: str) -> None:
    r = runner.invoke(app, ["results", "query", str(ingested), sql])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert any("refused" in ln for ln in lines), r.output
    assert "Traceback" not in r.output
    with queries.connect(ingested) as con:
        assert con.execute("SELECT count(*) FROM cell_specs").fetchone() == (12,)


def test_read_only_connection_refuses_writes_itself(ingested: Path) -> None:
    import duckdb

    with queries.connect(ingested) as con, pytest.raises(duckdb.Error, match="read-only"):
        con.execute("DELETE FROM cell_specs")


def test_query_errors_are_one_line(ingested: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["results", "query", str(ingested), "SELECT nope FROM cells"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    r = runner.invoke(app, ["results", "query", str(tmp_path / "missing"), "SELECT 1"])
    assert r.exit_code == 2 and "not a study directory" in r.output
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="results ingest"), queries.connect(empty):
        pass


def test_ingest_cli(study_dir: Path) -> None:
    r = runner.invoke(app, ["results", "ingest", str(study_dir)])
    assert r.exit_code == 0, r.output
    assert "12 cells updated" in r.output
    r = runner.invoke(app, ["results", "ingest", str(study_dir)])
    assert "0 of" in r.output


def test_study_yaml_resolves_to_its_output_dir() -> None:
    paper = Path(__file__).resolve().parents[2] / "studies" / "webssl-paper.yaml"
    if not paper.exists():
        pytest.skip("no example study file")
    pytest.importorskip("webssl_cli.study.loader")
    assert queries.resolve_study_dir(paper).name == "webssl-paper"
