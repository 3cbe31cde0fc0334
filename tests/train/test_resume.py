"""Resuming in the one loop: from a single-file checkpoint of the earlier single-process
trainer, and after a preemption signal (checkpoint at the next step boundary, then stop)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from conftest import make_cell

from webssl_cli.rundir import CellDir
from webssl_cli.train import loop
from webssl_cli.train.cell import load_cell
from webssl_cli.train.checkpoint import Checkpointer
from webssl_cli.train.distributed import DistEnv, init_process_group
from webssl_cli.train.objective import RunContext
from webssl_cli.train.objectives.dinov2 import DINOv2
from webssl_cli.train.optim import build_optimizer


def _losses(cell) -> list[float]:
    return [json.loads(x)["loss"] for x in CellDir(cell).metrics_jsonl.read_text().splitlines()]


def _teacher(cell) -> dict[str, torch.Tensor]:
    return torch.load(CellDir(cell).backbone_export, weights_only=False)["state_dict"]


def write_legacy_checkpoint(cell: Path, iteration: int) -> Path:
    """Rewrite the cell's checkpoint of ``iteration`` as the single-process trainer stored it:
    one torch.save of module and optimizer state dicts, EMA centres, the one stream's position
    and skipped counts, iteration and RNG state. The DCP checkpoints are removed."""
    run = CellDir(cell)
    model, cfg, _, samples, seed, _ = load_cell(run)
    init_process_group(DistEnv(), torch.device("cpu"))
    try:
        ctx = RunContext(
            torch.device("cpu"), None, seed, samples // cfg.batch_size, micro=cfg.batch_size
        )
        objective = DINOv2(model, cfg, ctx)
        optimizer = build_optimizer(objective.param_groups(), torch.device("cpu"))
        resumed = Checkpointer(run.checkpoints_dir, 3).load_latest(objective, optimizer, False)
    finally:
        dist.destroy_process_group()
    assert resumed is not None and resumed.iteration == iteration and resumed.lanes == 1
    for g in optimizer.param_groups:  # the earlier trainer's AdamW: the default kernel choice
        g["foreach"] = None
    pos = resumed.positions[0]
    path = run.checkpoints_dir / f"ckpt-{iteration:08d}.pt"
    torch.save({
        "student": objective.student.state_dict(), "teacher": objective.teacher.state_dict(),
        "optimizer": optimizer.state_dict(), "centers": {"dino": None, "ibot": None},
        "data": {"chunk": pos.chunk, "offset": pos.offset}, "problems": dict(resumed.problems[0]),
        "samples_seen": iteration * cfg.batch_size, "model": model.name, "iteration": iteration,
        "rng": {"torch": torch.get_rng_state()},
    }, path)  # fmt: skip
    for d in run.checkpoints_dir.glob("dcp-*"):
        for f in d.iterdir():
            f.unlink()
        d.rmdir()
    return path


def test_single_process_checkpoint_resumes_in_the_loop(tmp_path, shards):
    """A cell the single-process trainer started (one data stream = one lane, ckpt-*.pt) goes
    on from its checkpoint and matches a run that was never interrupted."""
    kw = {"checkpoint_every": 3, "keep_checkpoints": 1, "layerscale": None}
    ref = make_cell(tmp_path / "ref", shards, samples=48, dist={"data_lanes": 1}, **kw)
    assert loop.train_cell(ref) == "done"

    cell = make_cell(tmp_path / "legacy", shards, samples=48, dist={"data_lanes": 1}, **kw)
    assert loop.train(CellDir(cell), *load_cell(CellDir(cell)), stop_after=3) == "running"
    legacy = write_legacy_checkpoint(cell, 3)
    spec = json.loads((cell / "cell.json").read_text())
    spec["train"]["dist"]["data_lanes"] = None  # as the old cells were: no lanes in the config
    (cell / "cell.json").write_text(json.dumps(spec))

    assert loop.train_cell(cell) == "done"
    run = CellDir(cell)
    assert run.stage_status("train")["resumed_from"] == str(legacy)
    la, lb = _losses(cell), _losses(ref)
    assert len(la) == len(lb) == 6
    assert max(abs(a - b) / abs(b) for a, b in zip(la, lb, strict=True)) <= 1e-6
    ta, tb = _teacher(cell), _teacher(ref)
    assert max(float((ta[k] - tb[k]).abs().max()) for k in tb) <= 1e-6
    # the run went on with DCP checkpoints (one lane, recorded) and pruned the old file
    meta = json.loads((run.checkpoints_dir / "dcp-00000006" / "meta.json").read_text())
    assert meta["lanes"] == 1 and not legacy.exists()


def test_a_damaged_single_file_checkpoint_falls_back_to_the_previous(tmp_path, shards):
    kw = {"checkpoint_every": 2, "keep_checkpoints": 3, "dist": {"data_lanes": 1}}
    cell = make_cell(tmp_path / "c", shards, samples=48, **kw)
    run = CellDir(cell)
    assert loop.train(run, *load_cell(run), stop_after=2) == "running"
    good = write_legacy_checkpoint(cell, 2)
    bad = run.checkpoints_dir / "ckpt-00000004.pt"
    bad.write_bytes(good.read_bytes()[:1000])  # a newer file cut by a kill
    model, cfg, _, samples, seed, _ = load_cell(run)
    init_process_group(DistEnv(), torch.device("cpu"))
    try:  # what the loop does first: the loaded state keeps the fast AdamW kernel
        objective = DINOv2(model, cfg, RunContext(torch.device("cpu"), None, seed, 6, micro=8))
        optimizer = build_optimizer(objective.param_groups(), torch.device("cpu"))
        resumed = Checkpointer(run.checkpoints_dir, 3).load_latest(objective, optimizer, False)
    finally:
        dist.destroy_process_group()
    assert resumed is not None and resumed.path == str(good) and resumed.iteration == 2
    assert all(g["fused"] is True for g in optimizer.param_groups)
    assert loop.train_cell(cell) == "done"
    assert run.stage_status("train")["resumed_from"] == str(good)


def test_usr2_checkpoints_at_the_next_step_and_resumes_exactly(tmp_path, shards):
    kw = {"checkpoint_every": 1000, "keep_checkpoints": 2}
    straight = make_cell(tmp_path / "straight", shards, samples=8 * 30, **kw)
    assert loop.train_cell(straight) == "done"

    cell = make_cell(tmp_path / "pre", shards, samples=8 * 30, **kw)
    marker = tmp_path / "previous-handler"
    code = (  # the handler installed before the run (submitit's) must run after the save
        "import signal, sys; from pathlib import Path; from webssl_cli.train.loop import train_cell\n"
        f"signal.signal(signal.SIGUSR2, lambda s, f: Path({str(marker)!r}).write_text('called'))\n"
        "print(train_cell(Path(sys.argv[1])))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(cell)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "WEBSSL_DEVICE": "cpu"})  # fmt: skip
    metrics, deadline = CellDir(cell).metrics_jsonl, time.time() + 120
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 5):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGUSR2)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out.strip().splitlines()[-1] == "preempted"
    assert marker.read_text() == "called"
    run = CellDir(cell)
    status = run.stage_status("train")
    step = status["step"]
    assert status["state"] == "queued" and 5 <= step < 30
    assert [p.name for p in run.checkpoints_dir.iterdir()] == [f"dcp-{step:08d}"]
    assert json.loads(run.metrics_jsonl.read_text().splitlines()[-1])["step"] == step

    assert loop.train_cell(cell) == "done"
    assert run.stage_status("train")["resumed_from"].endswith(f"dcp-{step:08d}")
    ta, tb = _teacher(cell), _teacher(straight)
    assert max(float((ta[k] - tb[k]).abs().max()) for k in tb) == 0.0


def test_request_checkpoint_stops_at_the_next_step(tmp_path, shards):
    """The hook submitit's ``checkpoint()`` calls, without a signal."""
    cell = make_cell(tmp_path / "c", shards, samples=8 * 10, checkpoint_every=1000)
    calls = []

    def progress(m):
        calls.append(m["step"])
        if m["step"] == 3:
            loop.request_checkpoint()

    assert loop.train_cell(cell, progress=progress) == "preempted"
    assert calls == [1, 2, 3]
    assert [p.name for p in CellDir(cell).checkpoints_dir.iterdir()] == ["dcp-00000003"]
    assert loop.train_cell(cell) == "done"  # the flag does not outlive the run
