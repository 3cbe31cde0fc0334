"""`webssl study run | status | cancel | logs` (registered into the `study` group).

Heavy imports stay inside the command bodies; torch is imported only inside jobs.
"""

from __future__ import annotations

import json
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from webssl_cli.errors import UserError


class ExecutorChoice(str, Enum):
    local = "local"
    slurm = "slurm"
    debug = "debug"


StudyArg = Annotated[
    Path,
    typer.Argument(
        help="The study file (or, for status/cancel/logs, its output directory).",
        show_default=False,
    ),
]
OnlyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--only",
        help="Select cells: a uid, a uid prefix or AXIS=VALUE (repeatable; any match selects).",
    ),
]


def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        study: StudyArg,
        executor: Annotated[
            ExecutorChoice | None,
            typer.Option(
                "--executor",
                "-e",
                help="Where jobs run (default: the study's executor, else local).",
            ),
        ] = None,
        profile: Annotated[
            str | None,
            typer.Option(
                "--profile",
                "-p",
                help="Cluster profile: a name in slurm/ or a YAML path (default: the study's cluster).",
            ),
        ] = None,
        wait: Annotated[
            bool,
            typer.Option(
                "--wait",
                "-w",
                help="Follow the run with a live progress view until it is finished.",
            ),
        ] = False,
        force: Annotated[
            bool,
            typer.Option(
                "--force", help="Run the selected cells again from scratch, even if they are done."
            ),
        ] = False,
        only: OnlyOpt = None,
        max_parallel: Annotated[
            int | None,
            typer.Option(
                "--max-parallel",
                "-j",
                help="Local executor: most jobs at once (default: the profile's).",
            ),
        ] = None,
        retries: Annotated[
            int, typer.Option("--retries", help="Resubmit a failed stage up to this many times.")
        ] = 1,
        set_: Annotated[
            list[str] | None, typer.Option("--set", help="Override a setting (as in `study plan`).")
        ] = None,
        dry_run: Annotated[
            bool,
            typer.Option(
                "--dry-run",
                help="Print the stages (DAG) and the sbatch scripts; submit and write nothing.",
            ),
        ] = False,
    ) -> None:
        """Submit what the study still needs: skips finished stages, leaves running ones alone,
        resubmits failed ones up to --retries, submits new ones."""
        from webssl_cli.launch.runner import RunOptions, run_study

        opts = RunOptions(
            executor=executor.value if executor else None,
            profile=profile,
            wait=wait,
            force=force,
            only=list(only or []),
            max_parallel=max_parallel,
            retries=retries,
            overrides=list(set_ or []),
            dry_run=dry_run,
        )
        try:
            report = run_study(study, opts, echo=typer.echo)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        if report.failed or report.blocked:
            raise typer.Exit(1)

    @app.command()
    def status(
        study: StudyArg,
        watch: Annotated[
            bool,
            typer.Option(
                "--watch", help="Refresh every few seconds until nothing is queued or running."
            ),
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
        interval: Annotated[
            float, typer.Option("--interval", help="Seconds between refreshes with --watch.")
        ] = 5.0,
    ) -> None:
        """A row per cell and stage: state, attempts, samples seen/target, images/s, ETA, last error."""
        from webssl_cli.launch.progress import as_json as to_json
        from webssl_cli.launch.progress import collect, render, study_dir_of

        study_dir = study_dir_of(study)
        while True:
            rows = collect(study_dir)
            if as_json:
                typer.echo(json.dumps(to_json(rows), indent=2, default=str))
            else:
                if watch:
                    typer.echo("\033[2J\033[H", nl=False)
                typer.echo(render(rows))
            if not watch or not any(r.state in ("queued", "running", "unknown") for r in rows):
                break
            try:
                time.sleep(max(0.5, interval))
            except KeyboardInterrupt:
                break

    @app.command()
    def cancel(study: StudyArg, only: OnlyOpt = None) -> None:
        """Cancel the queued and running jobs of a study (all, or the cells --only selects)."""
        from webssl_cli.launch.cancel import cancel_study
        from webssl_cli.launch.progress import study_dir_of

        n = cancel_study(study_dir_of(study), list(only or []))
        typer.echo(
            f"cancelled {n} stage(s)" if n else "nothing to cancel: no stage is queued or running"
        )

    @app.command()
    def logs(
        study: StudyArg,
        cell: Annotated[
            str, typer.Argument(help="Cell uid (or a unique prefix), or 'filter:<key>'.")
        ],
        stage: Annotated[
            str,
            typer.Argument(help="train, eval/<name> or filter (default: the last one that ran)."),
        ] = "",
        tail: Annotated[int, typer.Option("--tail", "-n", help="Last N lines (0: all).")] = 200,
    ) -> None:
        """Print the log of a cell's stage (the job's stdout/stderr and any recorded traceback)."""
        from webssl_cli.launch.progress import study_dir_of
        from webssl_cli.rundir import CellDir

        study_dir = study_dir_of(study)
        if cell.startswith("filter:"):
            cd = CellDir(study_dir / "filters" / cell.split(":", 1)[1])
            stage = "filter"
        else:
            uids = sorted(p.name for p in (study_dir / "cells").glob("*") if p.is_dir())
            hits = [u for u in uids if u.startswith(cell)]
            if len(hits) != 1:
                raise UserError(
                    f"cell {cell!r}: {'matches no cell' if not hits else f'matches {len(hits)} cells'}; cells: {', '.join(uids[:20])}"
                )
            cd = CellDir.of(study_dir, hits[0])
        stages = cd.read_status()["stages"]
        if not stage:
            if not stages:
                raise UserError(f"cell {cd.uid}: no stage has run yet")
            # The last stage that actually started; "updated" has one-second resolution and a
            # dependent stage marked queued in the same second must not win the tie.
            stage = max(
                stages,
                key=lambda s: (bool(stages[s].get("started")), str(stages[s].get("updated", ""))),
            )
        if stage not in stages:
            raise UserError(
                f"stage {stage!r} of {cd.uid} has not run; stages: {', '.join(sorted(stages)) or 'none'}"
            )
        entry = stages[stage]
        shown = False
        log = entry.get("log")
        paths = [Path(log)] if log else []
        if paths and paths[0].name.endswith("_log.out"):
            paths.append(paths[0].with_name(paths[0].name[: -len("out")] + "err"))
        paths.append(cd.logs_dir / f"{stage.replace('/', '-')}.error.log")
        for p in paths:
            if p.is_file() and p.stat().st_size:
                lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
                typer.echo(f"==> {p} <==")
                typer.echo("\n".join(lines[-tail:] if tail else lines))
                shown = True
        if not shown:
            typer.echo(
                f"{cd.uid} {stage}: {entry.get('state')}; no log yet"
                + (f" (expected at {log})" if log else "")
            )
