"""The state machine of one `study run`: observe every stage (status file checked against the
scheduler), decide what each needs (done, in flight, submit, wait, dead, blocked), submit, and
with ``--wait`` repeat until nothing is left. ``runner.run_study`` drives it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webssl_cli.launch import state as S
from webssl_cli.launch.cancel import cancel_study
from webssl_cli.launch.dag import Node, array_chunks, build_dag, shard_groups
from webssl_cli.launch.executors import make_executor, submission_env
from webssl_cli.launch.lock import process_start
from webssl_cli.launch.options import Echo, RunOptions, RunReport
from webssl_cli.launch.profiles import Profile
from webssl_cli.launch.selection import select_nodes
from webssl_cli.rundir import CellDir, now_iso


@dataclass
class Decision:
    action: str  # done | inflight | submit | wait | dead | blocked | skip
    entry: dict[str, Any]
    reason: str = ""


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
        with profile_env(self.profile, study_env(self.loaded)):
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
                    node.placement,
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


def study_env(loaded: Any) -> dict[str, str]:
    """What a study tells its jobs through the environment: whether ``pipe:`` shard URLs may
    run (``data.allow_pipe``; the data stream refuses them otherwise)."""
    from webssl_cli.data.stream import ALLOW_PIPE_ENV

    data = getattr(getattr(loaded, "study", None), "data", None)
    return {ALLOW_PIPE_ENV: "1" if getattr(data, "allow_pipe", False) else "0"}


@contextlib.contextmanager
def profile_env(profile: Profile, extra: dict[str, str] | None = None) -> Iterator[None]:
    """The profile's job environment (device, dtype), and ``extra``, set while jobs are
    submitted: local and SLURM jobs inherit the submitting process's environment, debug jobs
    run inside it."""
    env = {**profile.job_env(), **(extra or {})}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
