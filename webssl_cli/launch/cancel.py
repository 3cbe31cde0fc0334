"""`study cancel`: stop queued and running jobs of a study and mark them cancelled."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from webssl_cli.errors import UserError
from webssl_cli.launch import state as S
from webssl_cli.launch.selection import select_uids
from webssl_cli.rundir import CellDir, now_iso


def cancel_study(study_dir: Path, only: list[str] | None = None) -> int:
    """Cancel the queued/running stages of a study (or of the cells ``only`` selects) and mark
    them cancelled; stops a local driver first so that it cannot submit more. Returns how many."""
    from webssl_cli.launch.progress import stage_targets

    targets = stage_targets(study_dir)
    if only:
        chosen = select_uids(study_dir, sorted({c for c, *_ in targets if c != "filter"}), only)
        targets = [t for t in targets if t[0] in chosen]
    else:
        drv = S.driver_pid(study_dir)
        if drv is not None and drv != os.getpid():
            with contextlib.suppress(OSError):
                os.kill(drv, signal.SIGTERM)
            # Let it die before reading states: it must not submit anything after this.
            deadline = time.time() + 10
            while S.pid_alive(drv) and time.time() < deadline:
                time.sleep(0.1)
    # A damaged status file reads as `corrupt` and is skipped: the other cells are cancelled.
    entries = [CellDir(d).stage_status_or_corrupt(stage) for _, _, d, stage in targets]
    slurm = (
        S.SlurmStates(S.slurm_ids(entries))
        if any(e.get("executor") == "slurm" for e in entries)
        else None
    )
    slurm_jobs: list[str] = []
    n = 0
    for (_, _, d, stage), e in zip(targets, entries, strict=True):
        obs = S.observe(e, slurm, study_dir)
        waiting = (
            obs.source == "driver" and e.get("state") == "queued"
        )  # its driver was just stopped
        if obs.state not in ("queued", "running", "unknown") and not waiting:
            continue
        job = e.get("job")
        if e.get("executor") == "slurm" and job:
            slurm_jobs.append(str(job))
            slurm_jobs += [str(j) for j in e.get("array_jobs") or []]
        elif e.get("executor") == "local" and job:
            kill_local(int(job))
        CellDir(d).update_stage(
            stage, state="cancelled", error="cancelled by `webssl study cancel`", ended=now_iso()
        )
        n += 1
    if slurm_jobs:
        try:
            subprocess.run(
                ["scancel", *slurm_jobs],
                capture_output=True,
                timeout=S.SCHED_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UserError(f"scancel did not answer: {exc}") from None
    return n


def kill_local(pid: int) -> None:
    # The submitit controller kills its tasks on SIGINT (then SIGKILL after a grace period).
    if S.pid_alive(pid, "submitit"):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGINT)
