"""``webssl results ingest | query | import-reference``. Heavy imports live inside the commands."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


class QueryFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


def ingest_cmd(
    study: Annotated[
        str, typer.Argument(help="Study output directory (holds cells/), or the study YAML.")
    ],
) -> None:
    """Read the run directories into <study-dir>/results.duckdb (incremental, idempotent)."""
    from webssl_cli.results.ingest import ingest
    from webssl_cli.results.queries import resolve_study_dir

    rep = ingest(resolve_study_dir(study))
    for line in rep.skipped:
        typer.echo(f"skipped: {line}", err=True)
    typer.echo(rep.summary())


def query_cmd(
    study: Annotated[str, typer.Argument(help="Study output directory, or the study YAML.")],
    sql: Annotated[str, typer.Argument(help="SQL to run on a read-only connection (SELECT ...).")],
    fmt: Annotated[
        QueryFormat, typer.Option("--format", "-f", help="Output format.")
    ] = QueryFormat.table,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Run a read-only SQL query on the results database (writes are refused)."""
    from webssl_cli.results.queries import connect, resolve_study_dir, run_query, write_frame

    with connect(resolve_study_dir(study), read_only=True) as con:
        tbl = run_query(con, sql)
    text = write_frame(tbl, fmt.value, out)
    if text is not None:
        typer.echo(text, nl=False)
    elif out is not None:
        typer.echo(f"wrote {tbl.num_rows} rows to {out}", err=True)


def import_reference_cmd(
    csv_path: Annotated[
        Path,
        typer.Argument(help="CSV: model[,params,samples_seen,data_filter] + benchmark columns."),
    ],
    name: Annotated[
        str, typer.Option("--name", help="Name of the reference study, e.g. webssl-paper.")
    ],
    into: Annotated[
        str, typer.Option("--into", help="Study output directory whose database receives it.")
    ],
) -> None:
    """Import published numbers as a reference study (overlaid on your curves in reports)."""
    from webssl_cli.errors import UserError
    from webssl_cli.results.queries import resolve_study_dir
    from webssl_cli.results.reference import import_reference

    if not csv_path.is_file():
        raise UserError(f"{csv_path}: no such CSV file")
    info = import_reference(csv_path, name, resolve_study_dir(into))
    typer.echo(info.summary())


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest_cmd)
    app.command("query")(query_cmd)
    app.command("import-reference")(import_reference_cmd)
