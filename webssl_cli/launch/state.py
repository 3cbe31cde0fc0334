"""What state is a stage really in? Its status file, checked against the scheduler.

A job writes its own status (running, done, failed). A job that is killed, cancelled or lost
cannot: so while the file says ``queued``/``running``, the job behind it is looked up —
``squeue`` then ``sacct`` for SLURM jobs, the process table for local jobs — every call with
a timeout, so that a scheduler that does not answer makes the state ``unknown``, never a hang
(submitit's ``job.result()`` can block forever on a job SLURM no longer reports).
``reconcile`` writes what it finds back (a cancelled job becomes ``cancelled``).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webssl_cli.rundir import CORRUPT, TERMINAL_STATES, CellDir, now_iso

SCHED_TIMEOUT_S = 10.0
LOST_AFTER_S = 120.0  # a submitted job SLURM has never reported for this long is lost


def _age_s(iso: str | None) -> float:
    import datetime as _dt

    if not iso:
        return float("inf")
    try:
        t = _dt.datetime.fromisoformat(iso)
    except ValueError:
        return float("inf")
    return (_dt.datetime.now(_dt.timezone.utc) - t).total_seconds()


# SLURM job states -> our states.
_SLURM_QUEUED = {
    "PENDING",
    "CONFIGURING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SUSPENDED",
    "PREEMPTED",
    "STOPPED",
    "SIGNALING",
}
_SLURM_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT"}
_SLURM_FAILED = {
    "FAILED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "SPECIAL_EXIT",
    "REVOKED",
}


@dataclass
class Observed:
    state: str  # pending | queued | running | done | failed | diverged | cancelled | lost | unknown
    error: str | None = None
    source: str = "file"  # file | slurm | local | driver


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=SCHED_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


class SlurmStates:
    """States of a set of SLURM job ids: one squeue and at most one sacct call, with timeouts."""

    def __init__(self, job_ids: Iterable[str]) -> None:
        self.ids = sorted({j for j in job_ids if j})
        self.states: dict[str, str] = {}
        self.answered = True
        self.squeue_ok = True
        if self.ids:
            self._query()

    def _query(self) -> None:
        out = _run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(self.ids)])
        if out is None:
            # squeue refuses the whole list when one id is no longer known: list ours instead.
            out = _run(["squeue", "-h", "-r", "-o", "%i|%T", "--me"])
        self.squeue_ok = out is not None
        for line in (out or "").splitlines():
            jid, _, state = line.strip().partition("|")
            if jid:
                self.states[jid] = state.strip()
        rest = [j for j in self.ids if j not in self.states]
        if rest:
            acct = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(rest)])
            if acct is None:
                self.answered = False
                return
            for line in acct.splitlines():
                jid, _, state = line.strip().partition("|")
                if jid and state:
                    # "CANCELLED by 0" -> CANCELLED; the last line of a requeued job wins.
                    self.states[jid] = state.split()[0]

    def get(self, job_id: str) -> str | None:
        return self.states.get(job_id)


def pid_alive(pid: int, expect: str | None = None) -> bool:
    """Process ``pid`` exists, is not a zombie and (optionally) runs ``expect`` in its command line."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            stat = f.read()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
        if expect is not None:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if expect.encode() not in f.read():
                    return False
    except (OSError, IndexError):
        return False
    return True


def local_job_alive(pid: int) -> bool:
    """A local submitit job (its controller process) is alive. Right after the fork, before the
    exec, its command line is still ours: a child of this process counts as alive too."""
    if pid_alive(pid, "submitit"):
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0] not in ("Z", "X") and int(fields[1]) == os.getpid()
    except (OSError, IndexError, ValueError):
        return False


def driver_pid(study_dir: Path) -> int | None:
    """The pid of the live local driver of this study, or None. The pid file records the
    process's start time: a pid the system has since given to another process is not it."""
    from webssl_cli.launch.lock import PID_NAME, live_pid

    return live_pid(study_dir / ".launch" / PID_NAME)


def _driver_alive(entry: dict[str, Any]) -> bool:
    from webssl_cli.launch.lock import process_start

    drv = int(entry["driver"])
    if drv == os.getpid():
        return True
    start = entry.get("driver_start")
    if start is not None:
        return process_start(drv) == int(start)
    return pid_alive(drv, "webssl")


def observe(entry: dict[str, Any], slurm: SlurmStates | None, study_dir: Path) -> Observed:
    """The real state of one stage given its status entry (see module docstring)."""
    state = entry.get("state", "pending")
    if state == CORRUPT:
        return Observed(CORRUPT, entry.get("error"), "file")
    if state == "failed" and entry.get("job"):
        # A job may record `failed` and still go on: submitit requeues it after USR2 (under
        # the same id). While the scheduler still has it, it is in flight.
        alive = _alive_state(entry, slurm)
        if alive is not None:
            return Observed(alive, None, str(entry.get("executor")))
    if state in TERMINAL_STATES or state == "pending":
        return Observed(state, entry.get("error"))
    executor = entry.get("executor")
    job = str(entry["job"]) if entry.get("job") else None
    if job is None:
        # Queued in a local driver (waiting for its inputs or a free slot), or a submission
        # that died between recording `queued` and getting a job id.
        drv = entry.get("driver")
        if executor == "local" and drv and _driver_alive(entry):
            return Observed("queued", None, "driver")
        return Observed("lost", "never submitted (the run that queued it is gone)", "driver")
    if executor == "slurm" and job:
        if slurm is None or not slurm.answered and slurm.get(job) is None:
            return Observed("unknown", "SLURM did not answer (squeue/sacct timed out)", "slurm")
        s = slurm.get(job)
        if s is None:
            # Not in squeue nor (yet) in sacct: accounting records a new job asynchronously,
            # and squeue may have failed under load. Only an old job is really lost.
            if not slurm.squeue_ok or _age_s(entry.get("submitted")) < LOST_AFTER_S:
                return Observed("unknown", f"SLURM does not report job {job} (yet)", "slurm")
            return Observed("lost", f"SLURM does not know job {job}", "slurm")
        if s in _SLURM_QUEUED:
            return Observed("queued", None, "slurm")
        if s in _SLURM_RUNNING:
            return Observed(
                "running" if state == "running" else "queued" if s != "RUNNING" else "running",
                None,
                "slurm",
            )
        if s == "CANCELLED":
            return Observed("cancelled", f"SLURM job {job} was cancelled", "slurm")
        if s in _SLURM_FAILED:
            return Observed("failed", f"SLURM job {job} ended {s}", "slurm")
        if s == "COMPLETED":
            # The job finished without recording a result: it was killed between its last
            # status write and exit, or it never started the stage.
            return Observed(
                "lost", f"SLURM job {job} completed without recording a result", "slurm"
            )
        return Observed("unknown", f"SLURM state {s}", "slurm")
    if executor == "local":
        if local_job_alive(int(job)):
            return Observed(state, None, "local")
        return Observed("lost", f"local job {job} exited without recording a result", "local")
    if executor == "debug":
        return Observed("lost", "a debug run was interrupted", "debug")
    return Observed(state, entry.get("error"))


def _alive_state(entry: dict[str, Any], slurm: SlurmStates | None) -> str | None:
    job = str(entry["job"])
    if entry.get("executor") == "slurm" and slurm is not None:
        s = slurm.get(job)
        if s in _SLURM_QUEUED:
            return "queued"
        if s in _SLURM_RUNNING:  # COMPLETING too: a requeue passes through it
            return "running"
    if entry.get("executor") == "local" and job.isdigit() and local_job_alive(int(job)):
        return "running"
    return None


def slurm_ids(entries: Iterable[dict[str, Any]]) -> list[str]:
    ids = []
    for e in entries:
        if (
            e.get("executor") == "slurm"
            and e.get("state") in ("queued", "running")
            and e.get("job")
        ):
            ids.append(str(e["job"]))
    return ids


def reconcile(status_dir: Path, stage: str, entry: dict[str, Any], obs: Observed) -> dict[str, Any]:
    """Write a state found at the scheduler (cancelled, failed, lost) back to the status file.

    Re-reads the file first: the job may have written its own final state meanwhile.
    """
    if obs.state not in ("cancelled", "failed", "lost") or entry.get("state") in TERMINAL_STATES:
        return entry
    cd = CellDir(status_dir)
    fresh = cd.stage_status(stage)
    if fresh.get("state") in TERMINAL_STATES or fresh.get("job") != entry.get("job"):
        return fresh
    if obs.source == "driver":  # never started: back to pending, no attempt used
        return cd.update_stage(stage, state="pending", error=None)
    new_state = "failed" if obs.state == "lost" else obs.state
    return cd.update_stage(stage, state=new_state, error=obs.error, ended=now_iso())


def my_user() -> str:
    return os.environ.get("USER") or str(os.getuid())
