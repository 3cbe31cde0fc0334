"""USR2 in a training job: the trainer saves on every rank first, then the job requeues once.

In-process checks of what ``launch.jobs.TrainJob`` does around the trainer's checkpoint hook
(``train.loop``: USR2 or ``request_checkpoint`` -> save at the next step boundary -> hand the
signal to submitit's handler -> "preempted"); the real 2-task runs are in test_slurm.py and
test_local.py (slow).
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from webssl_cli.launch import jobs
from webssl_cli.rundir import CellDir, read_json

# A trainer that stopped on a checkpoint request. HANDS_OVER: like the real loop, it then hands
# SIGUSR2 to the handler installed before it (submitit's); False: a trainer that could not
# install its own handler (not the main thread) and leaves the requeue to the job wrapper.
STAGE = """\
import signal
from pathlib import Path

def train_cell(cell_dir):
    (Path(cell_dir) / "saved").write_text("yes")  # the checkpoint of every rank
    if {hands_over}:
        signal.getsignal(signal.SIGUSR2)(signal.SIGUSR2, None)
    return "preempted"
"""


@pytest.fixture
def train_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """(job, requeues) with a submitit-like USR2 handler installed: on rank 0 it calls
    checkpoint(), records the requeue and exits; on other ranks it returns."""
    cell = tmp_path / "cell"
    cell.mkdir()
    job = jobs.TrainJob(str(cell))
    requeues: list[int] = []
    rank = {"rank": 0}
    monkeypatch.setattr(jobs, "_job_context", lambda: {"job_id": "7", **rank})

    def submitit_like(signum: int, frame: Any) -> None:
        if rank["rank"] != 0:
            return
        job.checkpoint()
        requeues.append(signum)
        raise SystemExit(-1)

    before = signal.signal(signal.SIGUSR2, submitit_like)
    yield job, requeues, rank
    signal.signal(signal.SIGUSR2, before)


def _use_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    stage = tmp_path / f"stage{abs(hash(text))}.py"
    stage.write_text(text)
    monkeypatch.setenv(jobs.STAGE_IMPL_ENV, str(stage))


@pytest.mark.parametrize("hands_over", [True, False])
def test_rank_0_requeues_once_after_the_collective_save(
    train_job, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hands_over: bool
) -> None:
    job, requeues, _ = train_job
    _use_stage(tmp_path, monkeypatch, STAGE.format(hands_over=hands_over))
    with pytest.raises(SystemExit):
        job()
    cell = Path(job.cell_dir)
    assert (cell / "saved").exists()
    # Once, whether the trainer handed the signal over or the job wrapper requeued.
    assert requeues == [signal.SIGUSR2]
    entry = CellDir(cell).stage_status("train")
    assert entry["state"] == "queued" and "USR2" in entry["note"]
    assert read_json(cell / "logs" / "train.requeued.json")["requeues"] == 1
    # The next attempt counts the requeue and finishes.
    _use_stage(tmp_path, monkeypatch, "def train_cell(cell_dir):\n    return 'done'\n")
    assert job() == "done"
    entry = CellDir(cell).stage_status("train")
    assert entry["state"] == "done" and entry["requeues"] == 1


def test_other_ranks_leave_without_requeueing_or_writing_status(
    train_job, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, requeues, rank = train_job
    rank["rank"] = 1
    _use_stage(tmp_path, monkeypatch, STAGE.format(hands_over=True))
    with pytest.raises(SystemExit) as e:
        job()
    assert e.value.code == 0 and requeues == []
    assert "train" not in (CellDir(job.cell_dir).read_status().get("stages") or {})


def test_without_submitit_a_preempted_stage_fails_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cell = tmp_path / "cell"
    cell.mkdir()
    monkeypatch.setattr(jobs, "_job_context", lambda: {"job_id": None, "rank": 0})
    _use_stage(tmp_path, monkeypatch, STAGE.format(hands_over=False))
    before = signal.signal(signal.SIGUSR2, signal.SIG_DFL)
    try:
        with pytest.raises(RuntimeError, match="nothing requeues it"):
            jobs.TrainJob(str(cell))()
    finally:
        signal.signal(signal.SIGUSR2, before)
    entry = CellDir(cell).stage_status("train")
    assert entry["state"] == "failed" and "run the stage again" in entry["error"]
