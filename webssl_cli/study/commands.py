"""`webssl study validate` and `webssl study plan` (no torch anywhere on this path)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

StudyFile = Annotated[Path, typer.Argument(help="The study YAML file.", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override a setting: train.<field>=V, eval.<name>.<field>=V or seed=N (repeatable).",
    ),
]


class PlanFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


def register(app: typer.Typer) -> None:
    @app.command()
    def validate(study: StudyFile, set_: SetOpt = None) -> None:
        """Check a study file: schema, axes, zip/include/exclude, uids. Writes nothing."""
        from webssl_cli.study.loader import load_study

        loaded = load_study(study, set_ or [])
        typer.echo(
            f"{study}: ok — {len(loaded.cells)} cells, {len(loaded.filters)} filter stages, {len(loaded.evals)} evaluations"
        )

    @app.command()
    def plan(
        study: StudyFile,
        format: Annotated[
            PlanFormat, typer.Option("--format", "-f", help="Output format.")
        ] = PlanFormat.table,
        profile: Annotated[
            str | None,
            typer.Option(
                "--profile",
                "-p",
                help="Cluster profile for GPU-hours and memory (default: the study's).",
            ),
        ] = None,
        set_: SetOpt = None,
    ) -> None:
        """One row a cell: uid, model, params, samples seen, filter, iterations, FLOPs, GPU-hours, stages."""
        from webssl_cli.study import plan as P
        from webssl_cli.study.loader import load_study

        loaded = load_study(study, set_ or [])
        rows = P.plan_rows(loaded, profile=profile)
        text = {"table": P.to_table, "json": P.to_json, "csv": P.to_csv}[format.value](rows)
        typer.echo(text.rstrip("\n"))
