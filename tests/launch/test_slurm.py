"""The orchestration scenarios against a real SLURM cluster, with the real trainer and kNN eval.

Start the one-node cluster first: `slurm/start-cluster.sh` (.ci/run does it). Skipped when
`scontrol ping` does not answer UP. About 4-6 minutes on 2 cores.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from webssl_cli.launch import progress as P
from webssl_cli.launch.executors import slurm_available
from webssl_cli.launch.runner import RunOptions, run_study
from webssl_cli.rundir import CellDir

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not slurm_available(), reason="no SLURM cluster (slurm/start-cluster.sh)"),
]

STUDY = """\
name: {name}
output_dir: {out}
preset: test
data:
  sources:
    synth-labelled: {{synthesize: {{n: 64, shard_size: 32, image_size: 48}}}}
    missing: {{shards: "/nonexistent/webssl/shard-{{000000..000001}}.tar"}}
  filters:
    full: {{source: synth-labelled}}
    broken: {{source: missing}}
grid:
  model: [vit-test]
  samples_seen: {samples}
  data_filter: {filters}
evals:
  - {{task: knn, max_images: 40, batch_size: 16}}
"""


def write(
    tmp_path: Path,
    name: str,
    samples: str = "[64, 128]",
    filters: str = "[full]",
    out: Path | None = None,
) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        STUDY.format(name=name, out=out or tmp_path / name, samples=samples, filters=filters)
    )
    return path


def opts(**kw: object) -> RunOptions:
    base: dict[str, object] = {
        "executor": "slurm",
        "profile": "local",
        "wait": True,
        "poll_s": 2.0,
        "progress": False,
        "post_hooks": False,
    }
    base.update(kw)
    return RunOptions(**base)  # type: ignore[arg-type]


def all_stages(study_dir: Path) -> dict[tuple[str, str], dict]:
    return {
        (c.name, s): e
        for c in sorted((study_dir / "cells").iterdir())
        for s, e in CellDir(c).read_status()["stages"].items()
    }


def wait_for(pred, timeout: float = 120.0, step: float = 1.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("timed out")


def test_tiny_study_on_slurm_afterok_rerun_and_delete(tmp_path: Path) -> None:
    study = write(tmp_path, "tiny")
    t0 = time.time()
    r = run_study(study, opts())
    elapsed = time.time() - t0
    assert not r.failed and len(r.submitted) == 4, r
    st = all_stages(r.study_dir)
    assert {e["state"] for e in st.values()} == {"done"}
    assert all(e["executor"] == "slurm" for e in st.values())
    for cell in (r.study_dir / "cells").iterdir():
        assert CellDir(cell).backbone_export.exists()
        res = json.loads((cell / "eval" / "knn.json").read_text())
        assert res["results"] and res["cell"] == cell.name
        # The eval job waited on its training job through afterok.
        train_job = CellDir(cell).stage_status("train")["job"]
        eval_job = CellDir(cell).stage_status("eval/knn")["job"]
        sbatch = next(
            Path(CellDir(cell).stage_status("eval/knn")["log"]).parent.glob(
                f"{eval_job}_submission.sh"
            ),
            None,
        )
        text = (
            sbatch.read_text()
            if sbatch
            else subprocess.run(
                ["scontrol", "show", "job", eval_job], capture_output=True, text=True
            ).stdout
        )
        assert f"afterok:{train_job}" in text
    print(f"tiny study on SLURM: {elapsed:.0f}s")

    # Second run: nothing to submit.
    r2 = run_study(study, opts())
    assert r2.submitted == [] and r2.nothing_to_do

    # Delete one cell's results: only that cell runs again.
    cells = sorted(p.name for p in (r.study_dir / "cells").iterdir())
    (r.study_dir / "cells" / cells[0] / "eval" / "knn.json").unlink()
    r3 = run_study(study, opts())
    assert r3.submitted == [f"{cells[0]}:eval/knn"]
    assert (r.study_dir / "cells" / cells[0] / "eval" / "knn.json").exists()


def test_failing_cell_is_retried_then_left_failed(tmp_path: Path) -> None:
    study = write(tmp_path, "failing", samples="[64]", filters="[broken]")
    r = run_study(study, opts(retries=1))
    assert len(r.failed) == 1 and len(r.blocked) == 1
    train = next(e for (c, s), e in all_stages(r.study_dir).items() if s == "train")
    assert train["state"] == "failed" and train["attempts"] == 2
    assert train["error"].startswith("UserError: data.shards:") and "\n" not in train["error"]
    rows = P.collect(r.study_dir)
    assert any(
        row.stage == "train" and row.state == "failed" and "data.shards" in (row.error or "")
        for row in rows
    )
    r2 = run_study(study, opts(retries=1, wait=False))
    assert r2.submitted == []


def _load_teacher(path: Path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def _max_diff(a, b) -> float:
    import torch

    if isinstance(a, torch.Tensor):
        return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        return max((_max_diff(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, (list, tuple)):
        return max((_max_diff(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    assert a == b
    return 0.0


def test_usr2_checkpoints_requeues_and_matches_uninterrupted(tmp_path: Path) -> None:
    samples = "[480]"  # 60 iterations of batch 8
    study = write(tmp_path, "preempt", samples=samples)
    r = run_study(study, opts(wait=False))
    assert len(r.submitted) == 2
    cd = CellDir(next((r.study_dir / "cells").iterdir()))
    entry = wait_for(
        lambda: (
            (e := cd.stage_status("train")).get("state") == "running"
            and (e.get("step") or 0) >= 6
            and e
        ),
        timeout=240,
        step=0.5,
    )
    job = entry["job"]
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=10)
    # Requeued under the same id, resumed, finished; the eval (afterok) ran after it.
    run_study(study, opts())  # follows to the end; resubmits nothing that is in flight
    train = cd.stage_status("train")
    assert train["state"] == "done" and train.get("requeues", 0) >= 1, train
    assert train["job"] == job and train["attempts"] == 1
    assert cd.stage_status("eval/knn")["state"] == "done"
    # The same cell without interruption (another study directory: same uid, same data).
    ref = write(tmp_path, "preempt", samples=samples, out=tmp_path / "reference")
    ref_study = ref.rename(tmp_path / "reference.yaml")
    rr = run_study(ref_study, opts(only=[cd.uid]))
    ref_cd = CellDir.of(rr.study_dir, cd.uid)
    assert (
        _max_diff(_load_teacher(cd.backbone_export), _load_teacher(ref_cd.backbone_export)) == 0.0
    )


def test_cancelled_job_shows_cancelled_within_30s(tmp_path: Path) -> None:
    study = write(tmp_path, "cancel", samples="[4000]")
    r = run_study(study, opts(wait=False))
    cd = CellDir(next((r.study_dir / "cells").iterdir()))
    entry = wait_for(
        lambda: (e := cd.stage_status("train")).get("state") == "running" and e, timeout=120
    )
    t0 = time.time()
    subprocess.run(["scancel", entry["job"]], check=True, timeout=10)
    wait_for(
        lambda: (
            (rows := P.collect(r.study_dir))
            and any(x.stage == "train" and x.state == "cancelled" for x in rows)
            and rows
        ),
        timeout=30,
    )
    took = time.time() - t0
    assert took < 30
    # Its eval (afterok) is cancelled by SLURM too; status never hangs.
    wait_for(
        lambda: any(
            x.stage == "eval/knn" and x.state == "cancelled" for x in P.collect(r.study_dir)
        ),
        timeout=30,
    )
    print(f"cancelled shown after {took:.1f}s")


def test_filter_arrays_throttled_and_split_at_max_array_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fake stages (jobs inherit the environment): 10 shards, 4 per task -> 3 array tasks,
    # MaxArraySize 2 -> two arrays, then the merge job; training waits on the merge (afterok).
    monkeypatch.setenv("WEBSSL_STAGE_IMPL", str(Path(__file__).parent / "fake_stages.py"))
    monkeypatch.setenv("FAKE_SHARDS", "10")
    profile = tmp_path / "array-profile.yaml"
    base = (Path(__file__).resolve().parents[2] / "slurm" / "local.yaml").read_text().splitlines()
    keep = [
        ln
        for ln in base
        if not ln.startswith(("filter_shards_per_task:", "max_array_size:", "array_throttle:"))
    ]
    profile.write_text(
        "\n".join(keep) + "\nfilter_shards_per_task: 4\nmax_array_size: 2\narray_throttle: 1\n"
    )
    study = write(tmp_path, "arrays", samples="[64]", filters="[light]")
    study.write_text(
        study.read_text().replace(
            "    broken: {source: missing}",
            "    broken: {source: missing}\n    light: {source: synth-labelled, filter: light, classifier: label}",
        )
    )
    r = run_study(study, opts(profile=str(profile)))
    assert not r.failed, r
    fdir = next((r.study_dir / "filters").iterdir())
    fst = CellDir(fdir).stage_status("filter")
    assert fst["state"] == "done" and len(fst["array_jobs"]) == 2 and fst["shard_groups"] == 3
    assert sorted(p.name for p in fdir.glob("shard-*.done")) == sorted(
        f"shard-{i}.done" for i in range(10)
    )
    sub = Path(fst["log"]).parent
    first = (sub / f"{fst['array_jobs'][0]}_submission.sh").read_text()
    assert "#SBATCH --array=0-1%1" in first
    merge = (sub / f"{fst['job']}_submission.sh").read_text()
    assert f"afterok:{fst['array_jobs'][0]}:{fst['array_jobs'][1]}" in merge
    assert all(e["state"] == "done" for e in all_stages(r.study_dir).values())


@pytest.mark.slow
def test_two_tasks_usr2_save_on_every_rank_requeue_resume_match_one_process(two_ranks) -> None:
    """2 SLURM tasks (gloo ranks from SLURM's environment), USR2 mid-run: both ranks save a
    distributed checkpoint at the next step boundary, the job requeues once under the same id,
    resumes from that checkpoint and ends with the losses of one uninterrupted process."""
    t0 = time.time()
    r = run_study(two_ranks.study, opts(profile=str(two_ranks.profile), wait=False))
    assert len(r.submitted) == 1, r
    cell = next((r.study_dir / "cells").iterdir())
    job = wait_for(lambda: CellDir(cell).stage_status("train").get("job"), timeout=60)
    log_dir = Path(CellDir(cell).stage_status("train")["log"]).parent
    assert "#SBATCH --ntasks-per-node=2" in (log_dir / f"{job}_submission.sh").read_text()
    wait_for(lambda: two_ranks.steps_done(cell) >= 4, timeout=240, step=0.2)  # in the loop
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=10)
    signalled_at = two_ranks.steps_done(cell)
    run_study(two_ranks.study, opts(profile=str(two_ranks.profile)))  # follows it to the end
    elapsed = time.time() - t0
    train = CellDir(cell).stage_status("train")
    assert train["job"] == job  # requeued under the same id
    saved_at, rel = two_ranks.check(cell, signalled_at)
    print(
        f"2 SLURM tasks, USR2 after step {signalled_at}, saved at {saved_at}, requeued, resumed, "
        f"done in {elapsed:.0f}s; max relative loss difference to 1 process over "
        f"{two_ranks.iterations} steps: {rel:.2e}"
    )


def test_adaptation_job_waits_on_its_base_training_job(tmp_path: Path) -> None:
    """resolution: [32, 48]: the 48 px cell's training job is submitted with afterok on the
    32 px cell's training job, starts from its final checkpoint and is evaluated at 48 px."""
    text = write(tmp_path, "hires", samples="[64]").read_text()
    text = text.replace(
        "  data_filter: [full]\n", "  data_filter: [full]\n  resolution: [32, 48]\n"
    )
    study = tmp_path / "hires.yaml"
    study.write_text(text + "adapt: {iterations: 3}\n")
    r = run_study(study, opts())
    assert not r.failed and len(r.submitted) == 4, r
    cells = [CellDir(c) for c in sorted((r.study_dir / "cells").iterdir())]
    hi = next(c for c in cells if c.read_cell().init_from is not None)
    base = next(c for c in cells if c is not hi)
    base_job = base.stage_status("train")["job"]
    hi_job = hi.stage_status("train")["job"]
    sbatch = next(
        Path(hi.stage_status("train")["log"]).parent.glob(f"{hi_job}_submission.sh"), None
    )
    text = (
        sbatch.read_text()
        if sbatch
        else subprocess.run(
            ["scontrol", "show", "job", hi_job], capture_output=True, text=True
        ).stdout
    )
    assert f"afterok:{base_job}" in text
    assert hi.stage_status("train")["initialised_from"].startswith(str(base.checkpoints_dir))
    assert json.loads(hi.eval_json("knn").read_text())["settings"]["image_size"] == 48
    assert json.loads(base.eval_json("knn").read_text())["settings"]["image_size"] == 32
