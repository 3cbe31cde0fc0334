import json
import os
import signal
import subprocess
import sys
import time
import types

import pytest
import torch
from conftest import make_cell

from webssl_cli.rundir import CellDir
from webssl_cli.train import loop
from webssl_cli.train.cell import load_cell
from webssl_cli.train.loop import train_cell
from webssl_cli.train.objectives import dinov2


def _teacher(cell):
    return torch.load(CellDir(cell).backbone_export, weights_only=False)


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_train_cell_writes_the_run_directory_contract(tmp_path, shards):
    cell = make_cell(tmp_path / "c", shards, samples=40)
    assert train_cell(cell) == "done"
    run = CellDir(cell)
    status = run.stage_status("train")
    assert status["state"] == "done" and status["samples_seen"] == 40 and status["iterations"] == 5
    assert status["samples_target"] == 40 and status["step"] == 5 and status["images_per_s"] > 0
    lines = [json.loads(x) for x in run.metrics_jsonl.read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3, 4, 5]
    for key in ("loss", "dino_loss", "ibot_loss", "koleo_loss", "lr", "wd", "momentum", "teacher_temp",
                "grad_norm", "dino_head_grad_norm", "ibot_head_grad_norm", "teacher_entropy",
                "teacher_marginal_entropy", "masked_tokens", "student_temp", "world_size", "images_per_s", "samples_seen", "skipped_samples", "time", "data_epochs"):  # fmt: skip
        assert key in lines[-1], key
    export = _teacher(cell)
    assert export["model"] == "vit-test" and export["spec"]["width"] == 32
    assert "blocks.0.attn.qkv.weight" in export["state_dict"]
    assert len(list(run.checkpoints_dir.glob("dcp-*"))) == 2  # keep_checkpoints


# CLIP trains on captioned shards: its SIGKILL resume test is in test_clip.py.
@pytest.mark.parametrize("method", ["webdino", "mae"])
def test_sigkill_midway_then_resume_gives_identical_teacher(tmp_path, shards, method):
    n = 8 * 60  # 60 iterations
    straight = make_cell(
        tmp_path / "straight", shards, samples=n, method=method, checkpoint_every=5,
        keep_checkpoints=2,
    )  # fmt: skip
    assert train_cell(straight) == "done"

    killed = make_cell(
        tmp_path / "killed", shards, samples=n, method=method, checkpoint_every=5,
        keep_checkpoints=2,
    )  # fmt: skip
    code = "import sys; from pathlib import Path; from webssl_cli.train.loop import train_cell; train_cell(Path(sys.argv[1]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(killed)], env={**os.environ, "WEBSSL_DEVICE": "cpu"}
    )
    ckdir = CellDir(killed).checkpoints_dir
    deadline = time.time() + 120
    while not (ckdir / "dcp-00000015" / "meta.json").exists():
        assert proc.poll() is None, "the training process ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not CellDir(killed).backbone_export.exists()
    assert CellDir(killed).stage_status("train")["state"] == "running"

    assert train_cell(killed) == "done"
    assert CellDir(killed).stage_status("train")["resumed_from"].endswith("dcp-00000015")
    assert _max_diff(_teacher(straight)["state_dict"], _teacher(killed)["state_dict"]) == 0.0
    steps = [json.loads(x)["step"] for x in CellDir(killed).metrics_jsonl.read_text().splitlines()]
    assert steps == list(range(1, 61))  # lines after the checkpoint were dropped and redone


def test_truncated_newest_checkpoint_falls_back(tmp_path, shards):
    kw = {"checkpoint_every": 2, "keep_checkpoints": 3}
    straight = make_cell(tmp_path / "straight", shards, samples=64, **kw)
    assert train_cell(straight) == "done"

    cell = make_cell(tmp_path / "trunc", shards, samples=64, **kw)
    run = CellDir(cell)
    assert loop.train(run, *load_cell(run), stop_after=6) == "running"
    newest = run.checkpoints_dir / "dcp-00000006"
    for shard in newest.glob("*.distcp"):  # cut every shard file as a kill mid-write would
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    assert train_cell(cell) == "done"
    assert run.stage_status("train")["resumed_from"].endswith("dcp-00000004")
    assert _max_diff(_teacher(straight)["state_dict"], _teacher(cell)["state_dict"]) == 0.0


def test_nan_loss_stops_as_diverged_keeping_last_good_checkpoint(tmp_path, shards, monkeypatch):
    real = dinov2.DINOv2.loss

    def poisoned(self, inputs, it):
        loss, metrics = real(self, inputs, it)
        return (loss * float("nan") if it == 3 else loss), metrics

    monkeypatch.setattr(dinov2.DINOv2, "loss", poisoned)
    cell = make_cell(tmp_path / "nan", shards, samples=80, checkpoint_every=2)
    assert train_cell(cell) == "diverged"
    run = CellDir(cell)
    status = run.stage_status("train")
    assert (
        status["state"] == "diverged" and status["diverged_at"] == 3 and "step 3" in status["error"]
    )
    assert [p.name for p in sorted(run.checkpoints_dir.iterdir())] == ["dcp-00000002"]
    assert not run.backbone_export.exists()


def test_failure_is_recorded_with_the_error(tmp_path, shards):
    cell = make_cell(tmp_path / "bad", str(tmp_path / "missing-{0..3}.tar"), samples=16)
    with pytest.raises(Exception, match="no sample"):
        train_cell(cell)
    status = CellDir(cell).stage_status("train")
    assert status["state"] == "failed" and "no sample" in status["error"]


def test_filtered_cell_reads_filtered_sources_and_repeats(tmp_path, shards, monkeypatch):
    from shapes import write_shards

    small = write_shards(tmp_path / "small", n_shards=1, per_shard=8, size=40)
    fake = types.ModuleType("webssl_cli.data.filtering")
    fake.filtered_sources = lambda d: [small]
    monkeypatch.setitem(sys.modules, "webssl_cli.data.filtering", fake)
    cell = make_cell(tmp_path / "f", shards, samples=48)
    spec = json.loads((cell / "cell.json").read_text())
    spec["data"]["filter_dir"] = str(tmp_path / "filters" / "x")
    (cell / "cell.json").write_text(json.dumps(spec))
    assert train_cell(cell) == "done"
    last = json.loads(CellDir(cell).metrics_jsonl.read_text().splitlines()[-1])
    assert last["data_epochs"] >= 6  # 48 samples from an 8-sample subset: it repeats


def test_resume_drops_a_metrics_line_cut_by_a_kill(tmp_path, shards):
    cell = make_cell(tmp_path / "cut", shards, samples=48, checkpoint_every=2)
    run = CellDir(cell)
    assert loop.train(run, *load_cell(run), stop_after=3) == "running"
    with open(run.metrics_jsonl, "a") as f:
        f.write('{"step": 4, "loss": 1.')  # killed mid-write
    assert train_cell(cell) == "done"
    steps = [json.loads(x)["step"] for x in run.metrics_jsonl.read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
