"""Concurrent runs, reused pids, damaged status files: no stage runs twice, no history is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from webssl_cli.launch import state as S
from webssl_cli.launch.cancel import cancel_study
from webssl_cli.launch.lock import StudyLock, live_pid, process_start, write_pid_file
from webssl_cli.launch.progress import collect
from webssl_cli.launch.runner import RunOptions, run_study
from webssl_cli.rundir import CellDir, atomic_write_text

ROOT = Path(__file__).resolve().parents[2]


def _study(write_study) -> Path:
    return write_study(
        None,
        **{
            "samples_seen: [1K, 2K]": "samples_seen: [1K, 2K, 3K, 4K]",
            "  - {task: knn}": "  - {task: knn}\n  - {task: linear}",
        },
    )


def test_five_drivers_at_once_run_every_stage_exactly_once(
    fake_stages, write_study, tmp_path, monkeypatch
):
    study = _study(write_study)
    runs = tmp_path / "runs.log"
    monkeypatch.setenv("FAKE_RUN_LOG", str(runs))
    monkeypatch.setenv("FAKE_STEP_S", "0.05")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    cmd = [sys.executable, "-m", "webssl_cli.cli", "study", "run", str(study), "--wait"]
    cmd += ["--executor", "local", "-j", "4"]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(5)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum("in progress" in o for o in outs) == 4, outs  # four attached to the one driver
    lines = runs.read_text().split()
    stages = [ln for ln in lines[::2]]
    out = tmp_path / "out"
    cells = sorted(p.name for p in (out / "cells").iterdir())
    expected = {f"{c}:{s}" for c in cells for s in ("train", "eval/knn", "eval/linear")}
    assert len(cells) == 4
    for c in cells:
        st = json.loads((out / "cells" / c / "status.json").read_text())["stages"]
        for name, e in st.items():
            assert e["state"] == "done" and e["attempts"] == 1 and len(e["job_ids"]) == 1, (
                c,
                name,
                e,
                outs,
            )
        assert len((out / "cells" / c / "train" / "metrics.jsonl").read_text().splitlines()) == 3
    assert sorted(stages) == sorted(expected), stages  # each stage ran exactly once
    con = duckdb.connect(str(out / "results.duckdb"), read_only=True)
    try:
        dup = con.execute(
            "SELECT count(*) FROM (SELECT uid, step, name, count(*) n FROM train_metrics "
            "GROUP BY ALL HAVING n > 1)"
        ).fetchone()
        total = con.execute("SELECT count(*) FROM train_metrics WHERE name = 'loss'").fetchone()
        evals = con.execute("SELECT count(*) FROM eval_results").fetchone()
    finally:
        con.close()
    assert dup == (0,) and total == (4 * 3,) and evals == (4 * 2,)


def test_the_study_lock_excludes_a_second_run(fake_stages, write_study, capsys):
    study = write_study()
    out = study.parent / "out"
    lock = StudyLock.acquire(out)
    assert lock is not None and StudyLock.acquire(out) is None and StudyLock.busy(out)
    r = run_study(study, RunOptions(executor="local", poll_s=0.05, progress=False))
    assert r.submitted == [] and "in progress" in capsys.readouterr().out
    assert not (out / "cells").exists()  # nothing written while another run holds the study
    lock.release()
    assert not StudyLock.busy(out)
    r = run_study(study, RunOptions(executor="local", wait=True, poll_s=0.05, progress=False))
    assert len(r.submitted) == 4


def test_claims_are_compare_and_set(tmp_path):
    cd = CellDir(tmp_path / "cells" / "c1")
    first = cd.update_stage("train", state="failed", attempts=1, job_ids=["11"])
    rev = first["rev"]
    assert cd.claim_stage("train", rev, state="queued", attempts=2) is not None
    assert cd.claim_stage("train", rev, state="queued", attempts=2) is None  # lost the race
    cd.record_job("train", "12")
    cd.record_job("train", "12")
    assert cd.stage_status("train")["job_ids"] == ["11", "12"]
    assert cd.claim_stage("eval/knn", None, state="queued") is not None
    assert cd.claim_stage("eval/knn", None, state="queued") is None


def test_a_reused_pid_is_never_trusted_nor_signalled(tmp_path):
    out = tmp_path / "study"
    (out / ".launch").mkdir(parents=True)
    other = subprocess.Popen(["sleep", "60"])
    try:
        pid_file = out / ".launch" / "driver.pid"
        # The old format names a pid only: an unrelated program with that pid is not a driver.
        atomic_write_text(pid_file, f"{other.pid} webssl\n")
        assert S.driver_pid(out) is None
        # The new format with another start time: a pid reused since.
        start = process_start(other.pid)
        assert start is not None
        pid_file.write_text(json.dumps({"pid": other.pid, "start": start - 1, "cmd": "x"}))
        assert live_pid(pid_file) is None
        cancel_study(out)
        time.sleep(0.2)
        assert other.poll() is None  # still alive: cancel did not signal it
        write_pid_file(pid_file, other.pid)
        assert live_pid(pid_file) == other.pid
    finally:
        other.kill()
        other.wait()


def test_a_truncated_status_file_keeps_its_history(fake_stages, write_study):
    study = write_study()
    r = run_study(study, RunOptions(executor="local", wait=True, poll_s=0.05, progress=False))
    out = r.study_dir
    cell = sorted((out / "cells").iterdir())[0]
    status = cell / "status.json"
    good = json.loads(status.read_text())
    status.write_bytes(status.read_bytes()[:40])  # truncated
    assert CellDir(cell).read_status() == good  # read from status.json.bak
    r2 = run_study(study, RunOptions(executor="local", wait=True, poll_s=0.05, progress=False))
    assert r2.submitted == []  # nothing reset, nothing run again
    assert CellDir(cell).read_status() == good


def test_a_damaged_status_file_blocks_only_its_cell(fake_stages, write_study, capsys):
    study = write_study()
    out = study.parent / "out"
    run_study(study, RunOptions(executor="local", wait=True, poll_s=0.05, progress=False))
    cells = sorted((out / "cells").iterdir())
    bad, good = cells
    for name in ("status.json", "status.json.bak"):
        (bad / name).write_bytes(b"\xff\xfe{not json")
    # The good cell's results are deleted: it must run again, the bad one must be reported.
    CellDir(good).eval_json("knn").unlink()
    r = run_study(study, RunOptions(executor="local", wait=True, poll_s=0.05, progress=False))
    assert r.submitted == [f"{good.name}:eval/knn"]
    assert {k.split(":")[0] for k in r.failed} == {bad.name}
    rows = collect(out)
    assert {r.state for r in rows if r.cell == bad.name} == {"corrupt"}
    assert all("status.json" in (r.error or "") for r in rows if r.cell == bad.name)
    assert cancel_study(out) == 0  # the damaged cell is skipped, no traceback
    assert (bad / "status.json").read_bytes() == b"\xff\xfe{not json"  # never reset


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o600


def test_dry_run_prints_the_dag_and_sbatch_and_writes_nothing(fake_stages, write_study, capsys):
    study = write_study()
    out = study.parent / "out"
    r = run_study(study, RunOptions(executor="slurm", profile="local", dry_run=True))
    text = capsys.readouterr().out
    assert r.submitted == [] and not out.exists()
    assert "#SBATCH" in text and "would submit" in text and "after:" in text
    assert "dry run: 4 stage(s) would be submitted" in text  # 2 x (train, knn)


@pytest.mark.parametrize("executor", ["local"])
def test_dry_run_cli(fake_stages, write_study, executor):
    from typer.testing import CliRunner

    from webssl_cli.cli import app

    study = write_study()
    res = CliRunner().invoke(app, ["study", "run", str(study), "--dry-run", "-e", executor])
    assert res.exit_code == 0, res.output
    assert "nothing is submitted" in res.output and not (study.parent / "out").exists()
