"""The orchestration scenarios on the local executor (fake stages, a few seconds each)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from webssl_cli.launch import progress as P
from webssl_cli.launch.cancel import cancel_study
from webssl_cli.launch.runner import RunOptions, run_study
from webssl_cli.rundir import CellDir
from webssl_cli.specs.cell import CellData, CellSpec
from webssl_cli.specs.train import TrainConfig

pytestmark = pytest.mark.timeout(120)


def opts(**kw: object) -> RunOptions:
    base: dict[str, object] = {"wait": True, "poll_s": 0.2, "progress": False, "post_hooks": False}
    base.update(kw)
    return RunOptions(**base)  # type: ignore[arg-type]


def stages(study_dir: Path) -> dict[tuple[str, str], dict]:
    out = {}
    for cell in sorted((study_dir / "cells").iterdir()):
        for stage, entry in CellDir(cell).read_status()["stages"].items():
            out[(cell.name, stage)] = entry
    return out


def wait_for(pred, timeout: float = 30.0, step: float = 0.2):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("timed out")


def test_tiny_study_runs_and_second_run_submits_nothing(fake_stages, write_study, capsys):
    study = write_study()
    t0 = time.time()
    r = run_study(study, opts(), echo=print)
    assert len(r.submitted) == 4 and not r.failed  # 2 cells x (train, eval/knn)
    out = r.study_dir
    st = stages(out)
    assert len(st) == 4 and all(e["state"] == "done" for e in st.values())
    assert all(e["attempts"] == 1 and e["job_ids"] for e in st.values())
    for cell in (out / "cells").iterdir():
        assert json.loads((cell / "eval" / "knn.json").read_text())["results"]
    # Jobs ran from the code snapshot, not the working tree.
    assert list((out / ".launch" / "code").iterdir())
    first = time.time() - t0

    capsys.readouterr()
    r2 = run_study(study, opts(), echo=print)
    assert r2.submitted == [] and r2.nothing_to_do
    assert "nothing to do: 2/2 cells done" in capsys.readouterr().out
    print(f"first run {first:.1f}s")


def test_deleting_one_cells_results_resubmits_only_that_cell(fake_stages, write_study):
    study = write_study()
    r = run_study(study, opts())
    cells = sorted(p.name for p in (r.study_dir / "cells").iterdir())
    # Evaluation results only: only that evaluation runs again.
    (r.study_dir / "cells" / cells[0] / "eval" / "knn.json").unlink()
    r2 = run_study(study, opts())
    assert r2.submitted == [f"{cells[0]}:eval/knn"]
    # The whole cell directory: its training and evaluation, nothing else.
    shutil.rmtree(r.study_dir / "cells" / cells[1])
    r3 = run_study(study, opts())
    assert sorted(r3.submitted) == [f"{cells[1]}:eval/knn", f"{cells[1]}:train"]
    assert all(e["state"] == "done" for e in stages(r.study_dir).values())


def test_editing_the_study_runs_only_new_cells(fake_stages, write_study):
    study = write_study()
    run_study(study, opts())
    study2 = write_study(**{"samples_seen: [1K, 2K]": "samples_seen: [1K, 2K, 3K]"})
    r = run_study(study2, opts())
    assert len(r.submitted) == 2 and all(k.split(":")[0] not in ("",) for k in r.submitted)
    assert len({k.split(":")[0] for k in r.submitted}) == 1


def test_failing_cell_is_retried_then_left_failed(fake_stages, write_study, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_FAIL_MODEL", "vit-pico")
    study = write_study(
        **{
            "model: [vit-test]": "model: [vit-test, vit-pico]",
            "samples_seen: [1K, 2K]": "samples_seen: [1K]",
        }
    )
    r = run_study(study, opts(retries=1))
    assert len(r.failed) == 1 and len(r.blocked) == 1  # pico's train; its eval never ran
    st = stages(r.study_dir)
    bad = next(e for (c, s), e in st.items() if s == "train" and e["state"] == "failed")
    assert bad["attempts"] == 2  # 1 try + 1 retry
    assert bad["error"].startswith("ValueError: train.micro_batch: cannot split the batch")
    assert "\n" not in bad["error"]
    good = [e for (c, s), e in st.items() if e["state"] == "done"]
    assert len(good) == 2
    # The status table shows it, with its error line.
    rows = P.collect(r.study_dir)
    assert any(
        row.state == "failed" and "cannot split the batch" in (row.error or "") for row in rows
    )
    # Run again: the retry limit is reached, nothing is submitted.
    capsys.readouterr()
    r2 = run_study(study, opts(retries=1), echo=print)
    assert r2.submitted == []
    assert "1 stage(s) failed after 2 attempt(s)" in capsys.readouterr().out
    # A higher limit retries it once more (it fails again).
    r3 = run_study(study, opts(retries=2))
    assert (
        r3.submitted == [k for k in r3.submitted if k.endswith(":train")] and len(r3.submitted) == 1
    )
    assert max(e.get("attempts", 0) for e in stages(r.study_dir).values()) == 3


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def test_preempted_training_requeues_and_ends_with_the_same_weights(
    fake_stages, write_study, tmp_path, monkeypatch
):
    # Reference: an uninterrupted run.
    ref = write_study(
        name="ref.yaml",
        **{"samples_seen: [1K, 2K]": "samples_seen: [1K]", "{out}": str(tmp_path / "ref")},
    )
    rr = run_study(ref, opts())
    ref_cell = next((rr.study_dir / "cells").iterdir())
    ref_weights = CellDir(ref_cell).backbone_export.read_text()

    monkeypatch.setenv("FAKE_STEPS", "8")
    monkeypatch.setenv("FAKE_STEP_S", "0.25")
    monkeypatch.setenv("FAKE_STEPS_REF", "3")
    study = write_study(**{"samples_seen: [1K, 2K]": "samples_seen: [1K]"})
    r = run_study(study, opts(wait=False))  # detached local driver
    assert r.driver_pid
    cd = CellDir(next((r.study_dir / "cells").iterdir()))
    entry = wait_for(
        lambda: (
            (e := cd.stage_status("train")).get("state") == "running"
            and e.get("step", 0) >= 2
            and e
        )
    )
    controller = int(entry["job"])
    task = wait_for(lambda: _children(controller))[0]
    os.kill(task, signal.SIGUSR2)  # what SLURM sends before the time limit / on preemption
    final = wait_for(
        lambda: (e := cd.stage_status("eval/knn")).get("state") in ("done", "failed") and e,
        timeout=60,
    )
    assert final["state"] == "done"
    train = cd.stage_status("train")
    assert train["state"] == "done" and train.get("requeues") == 1
    assert train["attempts"] == 1  # a requeue is not a new attempt
    # Same 8-step run as an uninterrupted one (the reference above ran 3 steps: redo it at 8).
    monkeypatch.setenv("FAKE_STEP_S", "0")
    ref8 = write_study(
        name="ref8.yaml",
        **{"samples_seen: [1K, 2K]": "samples_seen: [1K]", "{out}": str(tmp_path / "ref8")},
    )
    r8 = run_study(ref8, opts())
    assert (
        CellDir(next((r8.study_dir / "cells").iterdir())).backbone_export.read_text()
        == cd.backbone_export.read_text()
    )
    assert ref_weights != cd.backbone_export.read_text()
    wait_for(
        lambda: (
            not os.path.exists(f"/proc/{r.driver_pid}")
            or Path(f"/proc/{r.driver_pid}/stat").read_text().split(") ")[1][0] == "Z"
        )
    )


def test_cancel_shows_cancelled_quickly_and_nothing_hangs(fake_stages, write_study, monkeypatch):
    monkeypatch.setenv("FAKE_STEPS", "100")
    monkeypatch.setenv("FAKE_STEP_S", "0.5")
    study = write_study()
    r = run_study(study, opts(wait=False))
    cells = [CellDir(p) for p in (r.study_dir / "cells").iterdir()]
    wait_for(lambda: any(c.stage_status("train").get("state") == "running" for c in cells))
    # A second `run` while the driver works submits nothing.
    r2 = run_study(study, opts(wait=False))
    assert r2.submitted == [] and r2.driver_pid == r.driver_pid
    t0 = time.time()
    n = cancel_study(r.study_dir)
    assert n == 4
    rows = P.collect(r.study_dir)
    assert {row.state for row in rows} == {"cancelled"}
    assert time.time() - t0 < 30
    # The job processes are gone (no hang, nothing left running).
    jobs = [
        int(c.stage_status("train")["job"]) for c in cells if c.stage_status("train").get("job")
    ]
    wait_for(
        lambda: (
            not any(
                Path(f"/proc/{j}").exists()
                and "Z" not in Path(f"/proc/{j}/stat").read_text().split(") ")[1][:1]
                for j in jobs
            )
        ),
        timeout=30,
    )
    # Running again resubmits the cancelled stages.
    monkeypatch.setenv("FAKE_STEPS", "2")
    monkeypatch.setenv("FAKE_STEP_S", "0")
    r3 = run_study(study, opts())
    assert len(r3.submitted) == 4 and all(
        e["state"] == "done" for e in stages(r.study_dir).values()
    )


def test_filter_stage_runs_once_before_training(fake_stages, write_study):
    study = write_study(**{"data_filter: [full]": "data_filter: [light]"})
    r = run_study(study, opts())
    assert sum(k.startswith("filter:") for k in r.submitted) == 1
    fdir = next((r.study_dir / "filters").iterdir())
    assert CellDir(fdir).stage_status("filter")["state"] == "done"
    assert (fdir / "stats.json").exists()
    # Training started after the filter finished.
    f_end = CellDir(fdir).stage_status("filter")["ended"]
    assert all(e["started"] >= f_end for (c, s), e in stages(r.study_dir).items() if s == "train")


def test_only_and_force(fake_stages, write_study):
    study = write_study()
    r = run_study(study, opts())
    cells = sorted(p.name for p in (r.study_dir / "cells").iterdir())
    r2 = run_study(study, opts(force=True, only=[cells[0]]))
    assert sorted(r2.submitted) == [f"{cells[0]}:eval/knn", f"{cells[0]}:train"]
    r3 = run_study(study, opts(force=True, only=["samples_seen=2K"]))
    assert len(r3.submitted) == 2
    assert all(e["state"] == "done" for e in stages(r.study_dir).values())


def test_debug_executor_runs_in_process_without_pdb(fake_stages, write_study, monkeypatch):
    import pdb

    monkeypatch.setattr(pdb, "post_mortem", lambda *a, **k: pytest.fail("pdb.post_mortem called"))
    monkeypatch.setenv("FAKE_FAIL_MODEL", "vit-pico")
    study = write_study(
        **{
            "model: [vit-test]": "model: [vit-test, vit-pico]",
            "samples_seen: [1K, 2K]": "samples_seen: [1K]",
        }
    )
    r = run_study(study, opts(executor="debug", wait=False, retries=0))
    st = stages(r.study_dir)
    assert sorted(e["state"] for e in st.values()) == ["done", "done", "failed"]
    assert len(r.failed) == 1


def test_status_never_hangs_when_slurm_does_not_answer(tmp_path, monkeypatch):
    # squeue/sacct that hang: the state reads "unknown" after the timeout, nothing blocks.
    from webssl_cli.launch import state as S

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("squeue", "sacct"):
        (bin_dir / name).write_text("#!/bin/sh\nsleep 60\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(S, "SCHED_TIMEOUT_S", 1.0)
    cd = CellDir(tmp_path / "study" / "cells" / "abc")
    cd.write_cell(
        CellSpec.build(uid="abc", model="vit-test", samples_seen=100, train=TrainConfig(),
                       data=CellData(source="s", shards="/x.tar"), axes={"model": "vit-test"})
    )  # fmt: skip
    cd.update_stage("train", state="running", executor="slurm", job="123", job_ids=["123"])
    t0 = time.time()
    rows = P.collect(tmp_path / "study")
    assert time.time() - t0 < 5
    assert rows[0].state == "unknown" and "did not answer" in rows[0].error


def test_jobs_run_from_the_code_snapshot_with_a_clean_environment(
    fake_stages, write_study, monkeypatch
):
    # As if `study run` were called from inside a SLURM job: nothing of it reaches the jobs.
    monkeypatch.setenv("SLURM_JOB_ID", "999")
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("FAKE_FAIL_MODEL", "vit-test")
    study = write_study(**{"samples_seen: [1K, 2K]": "samples_seen: [1K]"})
    r = run_study(study, opts(retries=0))
    cell = next((r.study_dir / "cells").iterdir())
    tb = (cell / "logs" / "train.error.log").read_text()
    assert f"{r.study_dir}/.launch/code/" in tb  # the job imported the snapshot
    assert os.environ["SLURM_JOB_ID"] == "999"  # restored in this process


def test_submission_env_cleans_and_restores(tmp_path, monkeypatch):
    from webssl_cli.launch.executors import submission_env

    monkeypatch.setenv("SLURM_JOB_ID", "1")
    monkeypatch.setenv("SBATCH_PARTITION", "x")
    cwd = os.getcwd()
    with submission_env(tmp_path):
        assert "SLURM_JOB_ID" not in os.environ and "SBATCH_PARTITION" not in os.environ
        assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path)
        assert os.getcwd() == str(tmp_path)
    assert os.environ["SLURM_JOB_ID"] == "1" and os.getcwd() == cwd


def test_a_job_slurm_does_not_report_is_lost_only_when_old(tmp_path, monkeypatch):
    from webssl_cli.launch import state as S

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("squeue", "sacct"):  # answer, but know nothing
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    slurm = S.SlurmStates(["7"])
    fresh = {"state": "queued", "executor": "slurm", "job": "7", "submitted": S.now_iso()}
    assert S.observe(fresh, slurm, tmp_path).state == "unknown"
    old = {**fresh, "submitted": "2020-01-01T00:00:00+00:00"}
    assert S.observe(old, slurm, tmp_path).state == "lost"


def _global_rank(pid: int) -> int:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return int(next(v for v in env if v.startswith(b"SUBMITIT_LOCAL_GLOBALID=")).split(b"=")[1])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_local_tasks_usr2_to_rank_1_only_saves_on_both_and_rank_0_requeues(two_ranks) -> None:
    """The local executor runs the profile's 2 tasks. USR2 reaches rank 1 only: both ranks still
    save at the same step, rank 0 (which got no signal) requeues the job once, the controller
    restarts both tasks, they resume and end with the losses of one process."""
    r = run_study(
        two_ranks.study, opts(executor="local", profile=str(two_ranks.profile), wait=False)
    )
    cell = next((r.study_dir / "cells").iterdir())
    wait_for(lambda: two_ranks.steps_done(cell) >= 4, timeout=240)
    controller = int(CellDir(cell).stage_status("train")["job"])
    tasks = {_global_rank(pid): pid for pid in _children(controller)}
    assert sorted(tasks) == [0, 1]
    os.kill(tasks[1], signal.SIGUSR2)
    signalled_at = two_ranks.steps_done(cell)
    run_study(two_ranks.study, opts(executor="local", profile=str(two_ranks.profile)))
    saved_at, rel = two_ranks.check(cell, signalled_at)
    print(f"2 local tasks: USR2 to rank 1 after step {signalled_at}, saved at {saved_at}, "
          f"loss rel {rel:.2e}")  # fmt: skip
