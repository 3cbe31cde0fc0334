"""USR2 in a training job: the loop saves on every rank first, then the job requeues once.

In-process checks of the protocol between ``launch.jobs`` (signal handler, requeue) and
``train.preemption`` (the flag the loop answers); the real 2-task run on SLURM is in
test_slurm.py.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from webssl_cli.launch import jobs
from webssl_cli.rundir import CellDir, read_json
from webssl_cli.train import preemption

LISTENING_STAGE = """\
import os, signal
from pathlib import Path
from webssl_cli.train import preemption

def train_cell(cell_dir):
    preemption.start_listening()
    try:
        for step in range(1, 100):
            if step == 3:
                os.kill(os.getpid(), signal.SIGUSR2)  # arrives mid-step
            if preemption.agreed():  # the step boundary
                (Path(cell_dir) / "saved-at").write_text(str(step))
                return preemption.PREEMPTED
    finally:
        preemption.stop_listening()
    return "done"
"""


@pytest.fixture
def submitit_handler():
    """A stand-in for submitit's USR2 handler; restores whatever was installed."""
    calls: list[str] = []
    before = signal.getsignal(signal.SIGUSR2)

    def install(fn: Any = None) -> list[str]:
        signal.signal(signal.SIGUSR2, fn or (lambda s, f: calls.append("submitit")))
        return calls

    yield install
    signal.signal(signal.SIGUSR2, before)
    preemption.clear()


def test_usr2_goes_to_the_listening_loop_else_to_submitit(submitit_handler) -> None:
    calls = submitit_handler()
    installed = signal.getsignal(signal.SIGUSR2)
    with jobs._usr2_saves_first():
        os.kill(os.getpid(), signal.SIGUSR2)  # no loop listening: submitit requeues at once
        assert calls == ["submitit"] and not preemption.pending()
        preemption.start_listening()
        os.kill(os.getpid(), signal.SIGUSR2)  # the loop will save first
        assert calls == ["submitit"] and preemption.pending()
        assert preemption.agreed()  # no process group: this process decides alone
        assert not preemption.pending() and not preemption.agreed()
        os.kill(os.getpid(), signal.SIGUSR2)
        preemption.stop_listening()  # a request the loop never answered is dropped
        assert not preemption.pending()
    assert signal.getsignal(signal.SIGUSR2) is installed


def test_requeue_once_on_rank_0_only(submitit_handler, monkeypatch) -> None:
    calls = submitit_handler()
    with jobs._usr2_saves_first() as requeue:
        # submitit's handler returned instead of exiting: the job was not requeued
        with pytest.raises(RuntimeError, match="did not requeue"):
            requeue()
        assert calls == ["submitit"]
        monkeypatch.setattr(jobs, "_job_context", lambda: {"job_id": "7", "rank": 1})
        with pytest.raises(SystemExit) as e:
            requeue()  # rank 1 leaves; rank 0's requeue ends the job
        assert e.value.code == 0 and calls == ["submitit"]


def test_train_job_saves_then_requeues_and_records_queued(
    submitit_handler, tmp_path: Path, monkeypatch
) -> None:
    stage = tmp_path / "stage.py"
    stage.write_text(LISTENING_STAGE)
    monkeypatch.setenv(jobs.STAGE_IMPL_ENV, str(stage))
    cell = tmp_path / "cell"
    cell.mkdir()
    job = jobs.TrainJob(str(cell))
    requeued: list[int] = []

    def submitit_like(signum: int, frame: Any) -> None:  # what submitit does on rank 0
        job.checkpoint()
        requeued.append(signum)
        raise SystemExit(-1)

    submitit_handler(submitit_like)
    with pytest.raises(SystemExit):
        job()
    assert (cell / "saved-at").read_text() == "3"  # saved at the step boundary after USR2
    assert requeued == [signal.SIGUSR2]  # then requeued once
    entry = CellDir(cell).stage_status("train")
    assert entry["state"] == "queued" and "USR2" in entry["note"]
    assert read_json(cell / "logs" / "train.requeued.json")["requeues"] == 1
    # The next attempt counts the requeue and finishes.
    monkeypatch.setenv(jobs.STAGE_IMPL_ENV, str(_done_stage(tmp_path)))
    assert job() == "done"
    entry = CellDir(cell).stage_status("train")
    assert entry["state"] == "done" and entry["requeues"] == 1


def _done_stage(tmp_path: Path) -> Path:
    path = tmp_path / "done_stage.py"
    path.write_text("def train_cell(cell_dir):\n    return 'done'\n")
    return path
