"""After a run: the one-line summary of what happened, and with ``--wait`` the results ingest
and the report (the layers above the launcher, imported only when they run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from webssl_cli.launch.options import Echo


def say_result(run: Any, echo: Echo) -> None:
    r = run.report
    cells = {run.by_key[k].cell for k in run.selected if run.by_key[k].cell}
    done_cells = {
        c for c in cells if all(run.by_key[k].cell != c or k in r.done for k in run.selected)
    }
    if not r.submitted and not r.left_running and r.followed:
        echo(
            f"followed {r.followed} stage(s) already in flight to the end: {len(done_cells)}/{len(cells)} cells done"
        )
        return
    if not r.submitted and not r.left_running:
        tail = ""
        if r.failed or r.blocked:
            tail = f"; {len(r.failed)} stage(s) failed after {run.opts.retries + 1} attempt(s), {len(r.blocked)} blocked by them (see `webssl study status`; --retries or --force)"
        echo(f"nothing to do: {len(done_cells)}/{len(cells)} cells done{tail}")
        return
    parts = [f"{len(r.submitted)} submission(s)"] if r.submitted else []
    if r.left_running:
        parts.append(f"{len(r.left_running)} stage(s) already queued or running, left alone")
    if r.done:
        parts.append(f"{len(r.done)} stage(s) done")
    if r.failed:
        parts.append(f"{len(r.failed)} failed for good")
    echo(f"{run.executor}: " + ", ".join(parts) + f" — `webssl study status {run.study_dir}`")


def post_run(study_dir: Path, echo: Echo) -> None:
    """Ingest the results and write the report. A step that fails is reported on one line:
    the run itself has succeeded, and `webssl results ingest` / `webssl report` can redo it."""
    from webssl_cli.report.build import build_report
    from webssl_cli.results.ingest import ingest

    try:
        echo(f"results: {ingest(study_dir).db_path}")
    except Exception as exc:
        echo(f"results: ingest failed: {type(exc).__name__}: {exc}")
        return
    try:
        echo(f"report: {build_report(study_dir, study_dir / 'report').out_dir}")
    except Exception as exc:
        echo(f"report: failed: {type(exc).__name__}: {exc}")
