"""High-resolution adaptation: the cell starts from its base cell's final checkpoint with the
position embeddings resized (teacher and student), fresh optimiser state, and resumes from its
own checkpoints exactly after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import make_cell

from webssl_cli.errors import UserError
from webssl_cli.rundir import CellDir
from webssl_cli.specs.cell import CellData, CellSpec, InitFrom
from webssl_cli.specs.presets import ADAPT_RECIPES, PRESETS
from webssl_cli.specs.registry import get_model
from webssl_cli.specs.train import TrainConfig
from webssl_cli.train.cell import base_checkpoint, load_cell
from webssl_cli.train.checkpoint import Checkpointer
from webssl_cli.train.distributed import DistEnv, init_process_group
from webssl_cli.train.loop import train_cell
from webssl_cli.train.objective import RunContext
from webssl_cli.train.objectives.dinov2 import DINOv2
from webssl_cli.train.optim import build_optimizer
from webssl_cli.train.posembed import init_from_checkpoint, resize_pos_embed
from webssl_cli.train.vit import build_backbone

BASE_SAMPLES = 8 * 6  # 6 iterations at the test preset's batch of 8


def adapt_cell(root: Path, base_uid: str, shards: str, resolution: int = 48,
               iterations: int = 4, **train) -> Path:  # fmt: skip
    """An adaptation cell beside its base (cells/<uid>): the test preset's recipe at
    ``resolution`` (the base trains 32 px crops, vit-test has 8 px patches)."""
    recipe = {k: v for k, v in ADAPT_RECIPES["test"].items() if k != "iterations"}
    crops = {**PRESETS["test"]["crops"], "global_size": resolution, "local_size": resolution // 2}
    cfg = TrainConfig.model_validate(PRESETS["test"] | recipe | {"crops": crops} | train)
    spec = CellSpec.build(
        uid=root.name, model="vit-test", samples_seen=BASE_SAMPLES, train=cfg,
        data=CellData(source="synth", shards=shards), seed=0, resolution=resolution,
        init_from=InitFrom(uid=base_uid, resolution=32, iterations=iterations),
    )  # fmt: skip
    CellDir(root).write_cell(spec)
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory, shards) -> Path:
    cell = make_cell(tmp_path_factory.mktemp("cells") / "base32", shards, samples=BASE_SAMPLES)
    assert train_cell(cell) == "done"
    return cell


def _objective(run: CellDir) -> tuple[DINOv2, torch.optim.Optimizer]:
    model, cfg, _, samples, seed, _ = load_cell(run)
    ctx = RunContext(
        torch.device("cpu"), None, seed, samples // cfg.batch_size, micro=cfg.batch_size
    )
    objective = DINOv2(model, cfg, ctx)
    return objective, build_optimizer(objective.param_groups(), torch.device("cpu"))


def test_resize_is_the_vits_own_interpolation() -> None:
    vit = build_backbone(get_model("vit-test"))
    torch.nn.init.normal_(vit.pos_embed)
    for side in (3, 4, 6, 9):
        want = vit.interpolate_pos_encoding(side, side)
        assert torch.equal(resize_pos_embed(vit.pos_embed.data, side), want.data)
    with pytest.raises(ValueError, match="not a square grid"):
        resize_pos_embed(torch.zeros(1, 6, 4), 3)


def test_step_0_is_the_base_checkpoint_with_resized_position_embeddings(base, shards) -> None:
    cell = adapt_cell(base.parent / "hi48", base.name, shards)
    run, base_run = CellDir(cell), CellDir(base)
    final = base_checkpoint(run)
    assert final is not None and final.name == "dcp-00000006"
    init_process_group(DistEnv(), torch.device("cpu"))
    try:
        torch.manual_seed(123)  # not the base's init: every tensor must come from the checkpoint
        adapted, optimizer = _objective(run)
        assert adapted.student.backbone.pos_embed.shape == (1, 1 + 6 * 6, 32)  # 48 px / 8
        names = init_from_checkpoint(adapted, final)
        reference, ref_opt = _objective(base_run)
        assert Checkpointer(base_run.checkpoints_dir, 3).load_latest(reference, ref_opt, False)
    finally:
        dist.destroy_process_group()
    assert sorted(names) == ["student.backbone.pos_embed", "teacher.backbone.pos_embed"]
    assert not optimizer.state  # the optimiser starts fresh
    for part in ("student", "teacher"):
        got = getattr(adapted, part).state_dict()
        want = getattr(reference, part).state_dict()
        assert got.keys() == want.keys()
        for key in want:
            if key.endswith("pos_embed"):
                assert torch.equal(got[key], resize_pos_embed(want[key], 6))
            else:
                assert torch.equal(got[key], want[key]), (part, key)
    # at its resolution the adapted teacher computes what the base teacher computed there
    images = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        a = adapted.teacher.backbone.forward_features(images)["x_norm_patchtokens"]
        b = reference.teacher.backbone.forward_features(images)["x_norm_patchtokens"]
    assert torch.equal(a, b)


def test_adaptation_trains_at_its_resolution_and_exports_that_grid(base, shards) -> None:
    cell = adapt_cell(base.parent / "hi48-run", base.name, shards)
    assert train_cell(cell) == "done"
    run = CellDir(cell)
    status = run.stage_status("train")
    assert status["iterations"] == 4 and status["samples_seen"] == 32
    assert status["initialised_from"].endswith("base32/train/checkpoints/dcp-00000006")
    export = torch.load(run.backbone_export, weights_only=True)
    assert export["spec"]["img_size"] == 48
    assert export["state_dict"]["pos_embed"].shape == (1, 37, 32)


def test_a_base_without_its_final_checkpoint_is_a_clear_error(tmp_path, shards) -> None:
    unfinished = make_cell(tmp_path / "base", shards, samples=BASE_SAMPLES)
    cell = adapt_cell(tmp_path / "hi", "base", shards)
    with pytest.raises(UserError, match="has not finished training"):
        base_checkpoint(CellDir(cell))
    assert not CellDir(unfinished).checkpoints_dir.exists()


def _teacher(cell: Path) -> dict[str, torch.Tensor]:
    return torch.load(CellDir(cell).backbone_export, weights_only=True)["state_dict"]


def test_sigkill_midway_resumes_from_its_own_checkpoint_exactly(base, shards) -> None:
    kw = {"checkpoint_every": 5, "keep_checkpoints": 2}
    straight = adapt_cell(base.parent / "straight", base.name, shards, iterations=40, **kw)
    assert train_cell(straight) == "done"

    killed = adapt_cell(base.parent / "killed", base.name, shards, iterations=40, **kw)
    code = "import sys; from pathlib import Path; from webssl_cli.train.loop import train_cell; train_cell(Path(sys.argv[1]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(killed)], env={**os.environ, "WEBSSL_DEVICE": "cpu"}
    )
    ckdir = CellDir(killed).checkpoints_dir
    deadline = time.time() + 120
    while not (ckdir / "dcp-00000010" / "meta.json").exists():
        assert proc.poll() is None, "the training process ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not CellDir(killed).backbone_export.exists()

    assert train_cell(killed) == "done"
    status = CellDir(killed).stage_status("train")
    assert status["resumed_from"].endswith("dcp-00000010")  # its own, not the base's
    a, b = _teacher(straight), _teacher(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(x)["step"] for x in CellDir(killed).metrics_jsonl.read_text().splitlines()]
    assert steps == list(range(1, 41))


@pytest.mark.slow
def test_fsdp_on_two_ranks_starts_from_the_base_as_one_process_does(tmp_path, shards) -> None:
    """The sharded path (position embeddings loaded whole, resized, then sharded like the
    parameter): 2 FSDP ranks through `torchrun ... webssl train` match one process."""
    from test_distributed import compare

    equal = {"layerscale": None, "dist": {"data_lanes": 2, "koleo_group": 4}}
    base = make_cell(tmp_path / "base", shards, samples=BASE_SAMPLES, **equal)
    assert train_cell(base) == "done"
    one = adapt_cell(tmp_path / "one", "base", shards, iterations=3, **equal)
    assert train_cell(one) == "done"
    dist_two = {**equal["dist"], "strategy": "fsdp"}
    two = adapt_cell(tmp_path / "two", "base", shards, iterations=3, layerscale=None, dist=dist_two)
    webssl = str(Path(sys.executable).parent / "webssl")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           webssl, "train", str(two), "--quiet"]  # fmt: skip
    env = {**os.environ, "WEBSSL_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = CellDir(two).stage_status("train")
    assert status["world_size"] == 2 and status["strategy"] == "fsdp"
    loss_rel, teacher_rel, _ = compare(two, one, 3)
    assert loss_rel <= 1e-6 and teacher_rel <= 1e-5
