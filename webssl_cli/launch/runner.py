"""`study run`: submit what a study still needs, idempotently.

Every run looks at each stage's real state (status file checked against the scheduler,
``state.py``) and decides: finished stages are skipped (unless ``--force``), queued and
running ones are left alone, failed ones are resubmitted until ``--retries`` is used up, and
stages that are new (a new cell, deleted results, an edited study: new uids) are submitted.
Running it again when everything is done submits nothing and says so.

Executors: ``slurm`` submits every stage at once, edges as ``afterok`` dependencies, and
returns; ``local`` runs a driver that submits a stage when its inputs are done, at most
``max_parallel`` at a time (in the foreground with ``--wait``, else detached); ``debug`` runs
stages in this process, in order. ``--wait`` follows until nothing is left to do, retrying
failures, then ingests the results and writes the report.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from webssl_cli.errors import UserError
from webssl_cli.launch import state as S
from webssl_cli.launch.dag import build_dag
from webssl_cli.launch.driver import spawn_driver
from webssl_cli.launch.executors import check_local_resources, slurm_parameters
from webssl_cli.launch.lock import PID_NAME, StudyLock, write_pid_file
from webssl_cli.launch.options import Echo, RunOptions, RunReport, opts_json
from webssl_cli.launch.postrun import post_run, say_result
from webssl_cli.launch.prepare import prepare_sources
from webssl_cli.launch.profiles import Profile, load_profile
from webssl_cli.launch.rounds import Run
from webssl_cli.launch.selection import select_nodes
from webssl_cli.launch.snapshot import record_run, snapshot_code

__all__ = ["RunOptions", "RunReport", "check_writable", "resolve", "run_study"]


def resolve(study_path: str | Path, opts: RunOptions) -> tuple[Any, Profile, str]:
    """Load and check everything a run needs; UserError (nothing submitted) on bad input."""
    from webssl_cli.study.loader import load_study

    loaded = load_study(study_path, opts.overrides)
    study = loaded.study
    executor = opts.executor or study.executor or ("local" if study.cluster == "local" else "slurm")
    if executor not in ("local", "slurm", "debug"):
        raise UserError(f"--executor: unknown executor {executor!r}; valid: local, slurm, debug")
    profile = load_profile(opts.profile or study.cluster, near=loaded.path.parent)
    if opts.retries < 0:
        raise UserError(f"--retries: {opts.retries} must be 0 or more")
    if opts.max_parallel is not None and opts.max_parallel < 1:
        raise UserError(f"--max-parallel: {opts.max_parallel} must be at least 1")
    models = sorted({c.model for c in loaded.cells})
    if executor == "local":
        check_local_resources(profile, models)
    if executor == "slurm":
        for kind, model in [("filter", None), ("eval", None)] + [("train", m) for m in models]:
            try:
                slurm_parameters(profile, kind, model)
            except ValueError as exc:
                raise UserError(f"profile {profile.name!r}: {exc}") from None
    select_nodes(loaded, build_dag(loaded), opts.only)  # a bad --only fails before any write
    check_writable(loaded.output_dir, loaded.path)
    return loaded, profile, executor


def check_writable(output_dir: Path, study_file: Path) -> None:
    probe = output_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(
            f"{study_file}: output_dir {output_dir} is not writable ({probe} is not a writable directory); choose another output_dir"
        )


def run_study(
    study_path: str | Path, opts: RunOptions | None = None, echo: Echo = print
) -> RunReport:
    """Submit what the study still needs (see the module docstring); returns what happened."""
    opts = opts or RunOptions()
    loaded, profile, executor = resolve(study_path, opts)
    study_dir: Path = loaded.output_dir
    if opts.dry_run:
        from webssl_cli.launch.dryrun import dry_run

        dry_run(loaded, profile, executor, opts, echo)
        return RunReport(executor=executor, study_dir=study_dir)
    # The study's lock comes before any other write and is held to the end of the run (by the
    # detached driver when there is one): two runs never decide on the same stages at once.
    lock = StudyLock.acquire(study_dir)
    if lock is None:
        return _attach(study_dir, executor, opts, echo)
    try:
        return _run_locked(study_path, loaded, profile, executor, opts, echo, lock)
    finally:
        lock.release()


def _attach(study_dir: Path, executor: str, opts: RunOptions, echo: Echo) -> RunReport:
    """Another run holds the study: say so, and with --wait follow it until it is done."""
    live = S.driver_pid(study_dir)
    report = RunReport(executor=executor, study_dir=study_dir, driver_pid=live)
    who = f"driver pid {live}" if live is not None else "another `webssl study run`"
    echo(
        f"a run of this study is in progress ({who}); `webssl study status {study_dir}` follows it"
    )
    if opts.wait:
        from webssl_cli.launch.progress import collect, totals

        last = ""
        while StudyLock.busy(study_dir):
            t = totals(collect(study_dir))
            line = f"cells {t['done']}/{t['cells']} done, {t['running']} running, {t['queued']} queued, {t['failed']} failed"
            if line != last and opts.progress:
                echo(line)
            last = line
            time.sleep(opts.poll_s)
        report.driver_pid = None
    return report


def _run_locked(
    study_path: str | Path,
    loaded: Any,
    profile: Profile,
    executor: str,
    opts: RunOptions,
    echo: Echo,
    lock: StudyLock,
) -> RunReport:
    study_dir: Path = loaded.output_dir
    pid_file = study_dir / ".launch" / PID_NAME
    own_pid_file = executor == "local"
    if own_pid_file:
        write_pid_file(pid_file)
    try:
        return _run_body(study_path, loaded, profile, executor, opts, echo, lock)
    finally:
        if own_pid_file and S.driver_pid(study_dir) in (os.getpid(), None):
            pid_file.unlink(missing_ok=True)


def _run_body(
    study_path: str | Path,
    loaded: Any,
    profile: Profile,
    executor: str,
    opts: RunOptions,
    echo: Echo,
    lock: StudyLock,
) -> RunReport:
    from webssl_cli.study.materialize import write_cells
    from webssl_cli.study.plan import resolve_operational

    study_dir: Path = loaded.output_dir
    resolve_operational(loaded, profile)  # 'auto' micro-batch / checkpointing, as planned
    write_cells(loaded)
    prepare_sources(loaded, echo)
    run = Run(loaded, profile, executor, opts, echo)
    if opts.force:
        run.apply_force()
    if executor == "local" and not opts.wait:
        decisions = run.decide(run.entries(), {})
        todo = [k for k, d in decisions.items() if d.action in ("submit", "wait")]
        run.summarise(decisions)
        if not todo:
            say_result(run, echo)
            return run.report
        run.report.driver_pid = spawn_driver(run, study_path, opts, lock.fd)
        run.report.submitted = todo
        echo(
            f"submitted {len(todo)} stage(s) to a local driver (pid {run.report.driver_pid}, up to "
            f"{run.max_parallel} at once); follow with `webssl study status {study_dir} --watch`"
        )
        return run.report
    run.code_dir = snapshot_code(study_dir)
    record_run(
        study_dir,
        loaded.path,
        profile.model_dump(mode="json"),
        {"study": str(Path(study_path).absolute()), **opts_json(opts), "executor": executor},
    )
    if opts.wait or executor == "debug":
        run.follow() if opts.wait else run.submit_once()
    else:
        run.submit_once()
    say_result(run, echo)
    if (
        opts.wait
        and opts.post_hooks
        and (run.report.submitted or not (study_dir / "results.duckdb").exists())
    ):
        post_run(study_dir, echo)
    return run.report
