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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from webssl_cli.errors import UserError
from webssl_cli.launch import state as S
from webssl_cli.launch.cancel import cancel_study
from webssl_cli.launch.dag import Node, array_chunks, build_dag, shard_groups
from webssl_cli.launch.driver import spawn_driver
from webssl_cli.launch.executors import (
    check_local_resources,
    make_executor,
    slurm_parameters,
    submission_env,
)
from webssl_cli.launch.lock import PID_NAME, StudyLock, process_start, write_pid_file
from webssl_cli.launch.profiles import Profile, load_profile
from webssl_cli.launch.selection import select_nodes
from webssl_cli.launch.snapshot import record_run, snapshot_code
from webssl_cli.rundir import CellDir, now_iso

Echo = Callable[[str], None]


@dataclass
class RunOptions:
    executor: str | None = None
    profile: str | None = None
    wait: bool = False
    force: bool = False
    only: list[str] = field(default_factory=list)
    max_parallel: int | None = None
    retries: int = 1
    overrides: list[str] = field(default_factory=list)
    poll_s: float = 2.0
    progress: bool = True
    post_hooks: bool = True
    dry_run: bool = False


@dataclass
class RunReport:
    executor: str = "local"
    study_dir: Path = Path()
    submitted: list[str] = field(default_factory=list)  # node keys, every submission
    left_running: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # failed, retry limit reached
    blocked: list[str] = field(default_factory=list)  # an input failed for good
    driver_pid: int | None = None
    followed: int = 0  # stages found in flight and followed to the end (--wait)

    @property
    def nothing_to_do(self) -> bool:
        return not self.submitted and not self.left_running and self.driver_pid is None


@dataclass
class Decision:
    action: str  # done | inflight | submit | wait | dead | blocked | skip
    entry: dict[str, Any]
    reason: str = ""


# ---- the run --------------------------------------------------------------------------------


class Run:
    def __init__(
        self, loaded: Any, profile: Profile, executor: str, opts: RunOptions, echo: Echo
    ) -> None:
        self.loaded = loaded
        self.profile = profile
        self.executor = executor
        self.opts = opts
        self.echo = echo
        self.study_dir: Path = loaded.output_dir
        self.nodes = build_dag(loaded)
        self.by_key = {n.key: n for n in self.nodes}
        self.selected = select_nodes(loaded, self.nodes, opts.only)
        self.max_parallel = opts.max_parallel or profile.max_parallel
        self.report = RunReport(executor=executor, study_dir=self.study_dir)
        self.code_dir: Path | None = None
        self.folder = (
            self.study_dir
            / ".launch"
            / "submitit"
            / time.strftime("%Y%m%d-%H%M%S")
            / str(os.getpid())
        )

    # -- state -------------------------------------------------------------------------
    def entries(self) -> dict[str, dict[str, Any]]:
        """Every node's status entry, reconciled with the scheduler (one squeue/sacct call)."""
        raw = {n.key: CellDir(n.status_dir).stage_status_or_corrupt(n.stage) for n in self.nodes}
        slurm = (
            S.SlurmStates(S.slurm_ids(raw.values()))
            if any(e.get("executor") == "slurm" for e in raw.values())
            else None
        )
        out: dict[str, dict[str, Any]] = {}
        for node in self.nodes:
            entry = raw[node.key]
            obs = S.observe(entry, slurm, self.study_dir)
            entry = S.reconcile(node.status_dir, node.stage, entry, obs)
            entry = dict(entry)
            entry["observed"] = (
                obs.state if obs.state not in ("lost",) else entry.get("state", "failed")
            )
            out[node.key] = entry
        return out

    def decide(
        self, entries: dict[str, dict[str, Any]], submitted_now: dict[str, str]
    ) -> dict[str, Decision]:
        decisions: dict[str, Decision] = {}
        for node in self.nodes:
            entry = entries[node.key]
            st = entry.get("observed", entry.get("state", "pending"))
            if node.key in submitted_now:
                decisions[node.key] = Decision("inflight", entry)
                continue
            if st == "corrupt":  # reported, never resubmitted: its history would be lost
                decisions[node.key] = Decision("dead", entry, entry.get("error") or "corrupt")
                continue
            if node.key not in self.selected:
                decisions[node.key] = Decision(
                    "done" if st in ("done", "diverged") else "skip", entry
                )
                continue
            if st in ("done", "diverged"):
                if node.outputs_present():
                    decisions[node.key] = Decision("done", entry)
                    continue
                st, entry = "pending", {**entry, "attempts": 0}  # results deleted: run again
            if st == "queued" and not entry.get("job") and entry.get("driver") == os.getpid():
                st = "pending"  # waiting in this driver: decide again
            if st in ("queued", "running", "unknown"):
                decisions[node.key] = Decision("inflight", entry)
                continue
            if st == "failed" and entry.get("spec_hash") not in (None, node.spec_hash()):
                entry = {**entry, "attempts": 0}  # the study was edited since it failed
            if st == "failed" and int(entry.get("attempts") or 0) > self.opts.retries:
                decisions[node.key] = Decision("dead", entry, entry.get("error") or "failed")
                continue
            dep_actions = [decisions[d].action for d in node.deps if d in decisions]
            if any(a in ("dead", "blocked", "skip") for a in dep_actions):
                decisions[node.key] = Decision("blocked", entry, "an input stage failed")
            elif all(a == "done" for a in dep_actions):
                decisions[node.key] = Decision("submit", entry)
            elif self.executor == "slurm":
                decisions[node.key] = Decision("submit", entry)  # afterok on the in-flight inputs
            else:
                decisions[node.key] = Decision("wait", entry)
        return decisions

    # -- submission --------------------------------------------------------------------
    def dependency(
        self, node: Node, entries: dict[str, dict[str, Any]], submitted_now: dict[str, str]
    ) -> str | None:
        ids = []
        for d in node.deps:
            job = submitted_now.get(d) or (
                entries[d].get("job")
                if entries[d].get("observed") in ("queued", "running", "unknown")
                else None
            )
            if job:
                ids.append(str(job))
        return "afterok:" + ":".join(ids) if ids else None

    def submit(self, node: Node, entry: dict[str, Any], dependency: str | None) -> str | None:
        """Claim the stage and submit it; None (nothing submitted) when the stage changed since
        ``entry`` was read: another submitter, a job or a manual re-run got there first."""
        cd = CellDir(node.status_dir)
        attempts = int(entry.get("attempts") or 0) + 1
        # Written before submitting: a local job starts at once and writes `running` itself;
        # the fields below (job id, log) must not overwrite what it wrote. The claim is a
        # compare-and-set on the stage's version under the cell's lock.
        claimed = cd.claim_stage(
            node.stage,
            entry.get("rev"),
            state="queued",
            attempts=attempts,
            executor=self.executor,
            job=None,
            driver=None,
            error=None,
            submitted=now_iso(),
            ended=None,
            spec_hash=node.spec_hash(),
        )
        if claimed is None:
            self.echo(f"{node.key}: changed by another run meanwhile; not submitted again")
            return None
        if node.kind == "filter" and self.executor == "slurm":
            job_id, log = self._submit_filter_arrays(node, dependency)
        else:
            ex = make_executor(
                self.executor,
                self.folder,
                self.profile,
                node.kind,
                node.model,
                node.job_name,
                dependency,
            )
            with submission_env(self.code_dir):
                job = ex.submit(node.callable())
            job_id, log = str(job.job_id), str(job.paths.stdout)
            if self.executor == "debug":
                self._run_debug(job)
        cd.record_job(node.stage, job_id, log=log)
        self.report.submitted.append(node.key)
        return job_id

    def _submit_filter_arrays(self, node: Node, dependency: str | None) -> tuple[str, str]:
        from webssl_cli.launch.jobs import stage_impl

        n_shards = len(stage_impl("list_shards")(node.filter_args["source_pattern"]))
        groups = shard_groups(n_shards, self.profile.filter_shards_per_task)
        masters: list[str] = []
        if len(groups) > 1:
            for chunk in array_chunks(len(groups), self.profile.max_array_size):
                ex = make_executor(
                    "slurm", self.folder, self.profile, "filter", None, node.job_name, dependency
                )
                with submission_env(self.code_dir), ex.batch():
                    jobs = [ex.submit(node.callable(groups[i])) for i in chunk]
                masters.append(str(jobs[0].job_id).split("_")[0])
            dependency = "afterok:" + ":".join(masters)
        ex = make_executor(
            "slurm", self.folder, self.profile, "filter", None, node.job_name, dependency
        )
        with submission_env(self.code_dir):
            job = ex.submit(node.callable(None))
        if masters:
            CellDir(node.status_dir).update_stage(
                node.stage, array_jobs=masters, shard_groups=len(groups)
            )
        return str(job.job_id), str(job.paths.stdout)

    def _run_debug(self, job: Any) -> None:
        try:
            job.result()
        except Exception as exc:  # recorded as failed by the job wrapper
            self.echo(
                f"debug: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            )

    def mark_waiting(self, node: Node, entry: dict[str, Any]) -> None:
        if entry.get("state") == "queued" and entry.get("driver") == os.getpid():
            return
        CellDir(node.status_dir).update_stage(
            node.stage,
            state="queued",
            executor=self.executor,
            job=None,
            driver=os.getpid(),
            driver_start=process_start(os.getpid()),
            error=None,
        )

    def round(self, submitted_now: dict[str, str]) -> tuple[dict[str, Decision], int]:
        """One pass: observe everything, submit what may go now. Returns decisions and count."""
        entries = self.entries()
        decisions = self.decide(entries, submitted_now)
        inflight_local = sum(
            1
            for k, d in decisions.items()
            if d.action == "inflight"
            and entries[k].get("executor") == "local"
            and entries[k].get("job")
        )
        count = 0
        for node in self.nodes:
            d = decisions[node.key]
            if d.action == "wait" and self.executor == "local":
                self.mark_waiting(node, d.entry)
            if d.action != "submit":
                continue
            if self.executor == "local" and inflight_local >= self.max_parallel:
                self.mark_waiting(node, d.entry)
                continue
            job_id = self.submit(
                node,
                d.entry,
                self.dependency(node, entries, submitted_now) if self.executor == "slurm" else None,
            )
            if job_id is None:
                decisions[node.key] = Decision("inflight", d.entry)
                continue
            count += 1
            if self.executor == "local":
                inflight_local += 1
            if self.executor == "slurm":
                submitted_now[node.key] = job_id
                decisions[node.key] = Decision("inflight", d.entry)
            if self.executor == "debug":
                # Ran to completion in this process: later nodes see its real state next round.
                return decisions, count
        return decisions, count

    def summarise(self, decisions: dict[str, Decision]) -> None:
        r = self.report
        r.done = [k for k, d in decisions.items() if d.action == "done" and k in self.selected]
        r.failed = [k for k, d in decisions.items() if d.action == "dead"]
        r.blocked = [k for k, d in decisions.items() if d.action == "blocked"]
        r.left_running = [
            k
            for k, d in decisions.items()
            if d.action in ("inflight", "wait") and k not in r.submitted
        ]

    # -- loops ---------------------------------------------------------------------------
    def apply_force(self) -> None:
        entries = self.entries()
        for node in self.nodes:
            if node.key not in self.selected or (node.kind == "filter" and self.opts.only):
                continue
            st = entries[node.key].get("observed")
            if st in ("queued", "running"):
                self.echo(f"--force: {node.key} is {st}; left alone (cancel it first)")
                continue
            node.clear_outputs()
            CellDir(node.status_dir).update_stage(
                node.stage, state="pending", attempts=0, error=None, job=None
            )

    def submit_once(self) -> dict[str, Decision]:
        decisions, _ = self.round({})
        while self.executor == "debug" and any(d.action == "submit" for d in decisions.values()):
            decisions, n = self.round({})
            if n == 0:
                break
        self.summarise(decisions)
        return decisions

    def follow(self) -> dict[str, Decision]:
        """Submit, poll and resubmit until nothing is queued, running or submittable."""
        from webssl_cli.launch.progress import Progress

        progress = Progress(self, enabled=self.opts.progress, echo=self.echo)
        submitted_now: dict[str, str] = {}
        try:
            while True:
                decisions, _ = self.round(submitted_now)
                # A job id submitted in an earlier round shows in squeue by now.
                submitted_now.clear()
                progress.update(decisions)
                self.report.followed = max(
                    self.report.followed, sum(d.action == "inflight" for d in decisions.values())
                )
                active = [
                    d for d in decisions.values() if d.action in ("inflight", "submit", "wait")
                ]
                if not active:
                    break
                time.sleep(self.opts.poll_s)
        except KeyboardInterrupt:
            progress.close()
            if self.executor == "local":
                n = cancel_study(self.study_dir)
                self.echo(
                    f"interrupted: cancelled {n} local job(s); `webssl study run` again resumes"
                )
            else:
                self.echo(
                    "interrupted: SLURM jobs keep running; `webssl study status` follows them"
                )
            raise
        progress.close()
        self.summarise(decisions)
        return decisions


# ---- entry points -----------------------------------------------------------------------------


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


def prepare_sources(loaded: Any, echo: Echo) -> None:
    """Generate a synthetic source whose shards are missing (the smoke study's first run)."""
    for name, src in loaded.sources.items():
        spec = src.get("synthesize")
        if not spec:
            continue
        from webssl_cli.data.shards import expand_braces

        if all(Path(p).exists() for p in expand_braces(src["shards"])):
            continue
        from webssl_cli.data.synth import synthesize

        out_dir = Path(expand_braces(src["shards"])[0]).parent
        echo(f"data: generating synthetic source {name!r} ({spec['n']} images) in {out_dir}")
        synthesize(
            out_dir,
            n=spec["n"],
            seed=spec["seed"],
            shard_size=spec["shard_size"],
            image_size=spec["image_size"],
            mix=spec.get("mix"),
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

    study_dir: Path = loaded.output_dir
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
            _say_result(run, echo)
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
    _say_result(run, echo)
    if (
        opts.wait
        and opts.post_hooks
        and (run.report.submitted or not (study_dir / "results.duckdb").exists())
    ):
        post_run(study_dir, echo)
    return run.report


def opts_json(opts: RunOptions) -> dict[str, Any]:
    d = asdict(opts)
    return {k: v for k, v in d.items() if k not in ("progress", "dry_run")}


def _say_result(run: Run, echo: Echo) -> None:
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
