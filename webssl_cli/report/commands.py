"""``webssl report STUDY [--out DIR]``. Heavy imports (matplotlib, scipy, duckdb) stay inside."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def report_cmd(
    study: Annotated[
        str, typer.Argument(help="Study output directory (holds cells/), or the study YAML.")
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output directory (default: <study-dir>/report)."),
    ] = None,
    bootstrap: Annotated[
        int, typer.Option("--bootstrap", min=0, help="Bootstrap replicates per fit.")
    ] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")] = 0,
    ingest: Annotated[
        bool, typer.Option("--ingest/--no-ingest", help="Ingest new results first (incremental).")
    ] = True,
) -> None:
    """Tables, plots and scaling-law fits of a study: report.md and a self-contained report.html."""
    from webssl_cli.report.build import build_report
    from webssl_cli.results.queries import resolve_study_dir

    study_dir = resolve_study_dir(study)
    if ingest:
        from webssl_cli.results.ingest import ingest as run_ingest

        rep = run_ingest(study_dir)
        for line in rep.skipped:
            typer.echo(f"skipped: {line}", err=True)
        typer.echo(rep.summary(), err=True)
    res = build_report(study_dir, out or study_dir / "report", n_boot=bootstrap, seed=seed)
    for note in res.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(
        f"wrote {res.out_dir / 'report.md'} and {res.out_dir / 'report.html'} ({len(res.files)} files)"
    )


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)
