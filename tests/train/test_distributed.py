"""Distributed training on CPU with gloo: 2 ranks x batch b == 1 rank x batch 2b ==
1 rank x 2 micro-batches of b, through a checkpoint/resume in the middle, at any world size.

What "equal" means here (measured, see docs/distributed.md):
- losses: relative difference per step <= 1e-6 (measured ~2e-7);
- teacher weights: per tensor ||a - b|| / ||b|| <= 1e-5 for every parameter, except the key
  slice of ``attn.qkv.bias``. Its gradient is identically zero in exact arithmetic (softmax is
  invariant to a constant added to every key), so what reaches AdamW is rounding noise, which
  Adam's normalised update turns into lr-sized steps of random sign: it differs between any two
  numerically different runs (one rank with another BLAS blocking included). It is only
  checked against AdamW's bound (at most about lr per step); every other tensor carries the
  exactness check.
- The model uses ``layerscale: null``: with LayerScale 1e-5 the CLS features of a freshly
  initialised tiny ViT are identical across images to ~1e-4, KoLeo's nearest-neighbour
  difference vectors are then pure cancellation error, and the gradient direction (clipped from
  norms of ~3000) is chaotic in the last bits. Without it the comparison is well conditioned.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_cell
from dist_worker import launch, launch_preempted

from webssl_cli.rundir import CellDir
from webssl_cli.specs.registry import get_model
from webssl_cli.specs.train import TrainConfig
from webssl_cli.study.memory import estimate_memory
from webssl_cli.train.cell import load_cell
from webssl_cli.train.distributed import DistEnv
from webssl_cli.train.loop import train

B = 4  # images per rank (or per micro-batch); the global batch is 2B = 8 (preset 'test')
EQUAL = dict(layerscale=None, dist={"data_lanes": 2, "koleo_group": B})


def _cell(root, shards, steps: int, strategy: str = "ddp", **kw):
    dist = {**EQUAL["dist"], "strategy": strategy}
    return make_cell(root, shards, samples=8 * steps, layerscale=None, dist=dist,
                     checkpoint_every=steps // 2, keep_checkpoints=3, **kw)  # fmt: skip


def _in_process(cell, stop_after=None) -> str:
    """One rank in this process (a one-rank gloo group)."""
    run = CellDir(cell)
    return train(run, *load_cell(run), env=DistEnv(), stop_after=stop_after)


def losses(cell) -> list[float]:
    return [json.loads(x)["loss"] for x in CellDir(cell).metrics_jsonl.read_text().splitlines()]


def teacher(cell) -> dict[str, torch.Tensor]:
    return torch.load(CellDir(cell).backbone_export, weights_only=False)["state_dict"]


def compare(cell, ref, steps: int) -> tuple[float, float, float]:
    """(max relative loss difference, max relative teacher-tensor difference, key-bias
    difference in lr units)."""
    la, lb = losses(cell), losses(ref)
    assert len(la) == len(lb) == steps
    loss_rel = max(abs(a - b) / abs(b) for a, b in zip(la, lb, strict=True))
    ta, tb = teacher(cell), teacher(ref)
    assert ta.keys() == tb.keys()
    worst, key_bias = 0.0, 0.0
    for k in ta:
        a, b = ta[k].double(), tb[k].double()
        if k.endswith("attn.qkv.bias"):
            d = a.numel() // 3
            key_bias = max(key_bias, float((a[d : 2 * d] - b[d : 2 * d]).abs().max()))
            a, b = torch.cat([a[:d], a[2 * d :]]), torch.cat([b[:d], b[2 * d :]])
        worst = max(worst, float((a - b).norm() / b.norm().clamp_min(1e-30)))
    lr = TrainConfig.model_validate(CellDir(ref).read_spec()["train"]).peak_lr()
    return loss_rel, worst, key_bias / (lr * steps)


def assert_equal(cell, ref, steps: int) -> None:
    loss_rel, teacher_rel, key_bias_lr = compare(cell, ref, steps)
    print(
        f"loss rel {loss_rel:.2e}  teacher rel {teacher_rel:.2e}  key-bias/(lr*steps) {key_bias_lr:.2e}"
    )
    assert loss_rel <= 1e-6
    assert teacher_rel <= 1e-5
    assert key_bias_lr < 1.0  # noise-driven, bounded by the optimiser: see the module docstring


@pytest.fixture(scope="module")
def ref6(tmp_path_factory, shards):
    """1 rank x batch 2B, 6 steps, no interruption."""
    cell = _cell(tmp_path_factory.mktemp("ref") / "c", shards, 6)
    assert _in_process(cell) == "done"
    return cell


def test_ddp_two_ranks_with_resume_match_one_rank(tmp_path, shards, ref6):
    cell = _cell(tmp_path / "ddp2", shards, 6, "ddp")
    launch(2, cell, 3, None)  # 2 ranks x B: stop after 3 steps, resume, finish
    status = CellDir(cell).stage_status("train")
    assert status["state"] == "done" and status["resumed_from"].endswith("dcp-00000003")
    last = json.loads(CellDir(cell).metrics_jsonl.read_text().splitlines()[-1])
    assert last["world_size"] == 2 and last["micro_batch"] == B and last["effective_batch"] == 2 * B
    assert_equal(cell, ref6, 6)


def test_fsdp_checkpoint_of_two_ranks_resumes_on_one(tmp_path, shards, ref6):
    cell = _cell(tmp_path / "fsdp", shards, 6, "fsdp")
    cfg = json.loads((cell / "cell.json").read_text())
    cfg["train"]["dist"]["activation_checkpointing"] = True  # recomputation: same numbers
    (cell / "cell.json").write_text(json.dumps(cfg))
    launch(2, cell, 3)  # FSDP2 over 2 ranks for 3 steps, then the job ends
    # memory: rank 0's local shards of parameters, gradients and AdamW state vs the estimate
    line = json.loads(CellDir(cell).metrics_jsonl.read_text().splitlines()[2])
    est = estimate_memory(get_model("vit-test"), TrainConfig.model_validate(cfg["train"]), 2,
                          strategy="fsdp", act_bytes=4, reserve=False)  # fmt: skip
    print(
        f"FSDP2 rank 0 states: measured {line['state_bytes']:,.0f} B, estimated {est.states_bytes:,} B"
    )
    assert line["world_size"] == 2 and abs(est.states_bytes / line["state_bytes"] - 1) < 0.10
    meta = json.loads((CellDir(cell).checkpoints_dir / "dcp-00000003" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["strategy"] == "fsdp"
    assert sorted(meta["data"]) == ["0", "1"]  # every lane's position, from both ranks
    assert _in_process(cell) == "done"  # ... and resumes on one rank
    assert_equal(cell, ref6, 6)


def test_accumulation_checkpoint_of_one_rank_resumes_on_two(tmp_path, shards, ref6):
    cell = _cell(tmp_path / "acc", shards, 6, "ddp", micro_batch=B)
    assert _in_process(cell, stop_after=3) == "running"  # 1 rank, 2 micro-batches of B
    first = json.loads(CellDir(cell).metrics_jsonl.read_text().splitlines()[0])
    assert first["accumulation"] == 2 and first["effective_batch"] == 2 * B
    launch(2, cell)  # resumes on 2 ranks x B
    assert_equal(cell, ref6, 6)


@pytest.mark.slow
def test_one_checkpoint_resumes_on_one_process_and_on_two_ranks(tmp_path, shards, ref6):
    """The same checkpoint, written by a single process, resumes on 1 process and on 2 gloo
    ranks; and one written by 2 ranks resumes on 2 and on 1: every run equals ``ref6``."""
    import shutil

    single = _cell(tmp_path / "single", shards, 6)
    assert _in_process(single, stop_after=3) == "running"
    on_two = tmp_path / "single-on-two"
    shutil.copytree(single, on_two)
    assert _in_process(single) == "done"
    launch(2, on_two)
    for cell in (single, on_two):
        assert CellDir(cell).stage_status("train")["resumed_from"].endswith("dcp-00000003")
        assert_equal(cell, ref6, 6)

    two = _cell(tmp_path / "two", shards, 6)
    launch(2, two, 3)
    on_one = tmp_path / "two-on-one"
    shutil.copytree(two, on_one)
    launch(2, two)
    assert _in_process(on_one) == "done"
    for cell in (two, on_one):
        assert_equal(cell, ref6, 6)


@pytest.mark.slow
def test_a_checkpoint_request_on_one_rank_checkpoints_all_ranks(tmp_path, shards, ref6):
    """Rank 1 alone asks during step 2 (index 1): both ranks agree at that step boundary, save
    the step-2 checkpoint together and stop; the resumed run equals one never interrupted."""
    cell = _cell(tmp_path / "pre", shards, 6)  # periodic checkpoints at 3 and 6 only
    launch_preempted(2, cell, who=1, at=1, out=tmp_path / "result")
    assert [(tmp_path / f"result.{r}").read_text() for r in (0, 1)] == ["preempted"] * 2
    run = CellDir(cell)
    assert sorted(p.name for p in run.checkpoints_dir.iterdir()) == ["dcp-00000002"]
    assert run.stage_status("train")["state"] == "queued"
    launch(2, cell)
    assert run.stage_status("train")["resumed_from"].endswith("dcp-00000002")
    assert_equal(cell, ref6, 6)


# ---- the full measurement: 20 steps, checkpoint/resume at 10 (about 5 minutes on 2 cores) ----


@pytest.fixture(scope="module")
def ref20(tmp_path_factory, shards):
    cell = _cell(tmp_path_factory.mktemp("ref20") / "c", shards, 20)
    assert _in_process(cell, stop_after=10) == "running"
    assert _in_process(cell) == "done"
    return cell


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_20_steps_two_ranks_match_one_rank(tmp_path, shards, ref20, strategy):
    cell = _cell(tmp_path / strategy, shards, 20, strategy)
    launch(2, cell, 10, None)
    assert_equal(cell, ref20, 20)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_20_steps_world_size_changes_both_ways(tmp_path, shards, ref20, strategy):
    two_to_one = _cell(tmp_path / f"{strategy}-2to1", shards, 20, strategy)
    launch(2, two_to_one, 10)
    assert _in_process(two_to_one) == "done"
    assert_equal(two_to_one, ref20, 20)
    one_to_two = _cell(tmp_path / f"{strategy}-1to2", shards, 20, strategy)
    assert _in_process(one_to_two, stop_after=10) == "running"
    launch(2, one_to_two)
    assert_equal(one_to_two, ref20, 20)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_20_steps_accumulation_matches_one_batch(tmp_path, shards, ref20, strategy):
    cell = _cell(tmp_path / "acc", shards, 20, strategy, micro_batch=B)
    assert _in_process(cell, stop_after=10) == "running"
    assert _in_process(cell) == "done"
    assert_equal(cell, ref20, 20)


def test_torchrun_runs_the_train_command_on_two_ranks(tmp_path, shards):
    """The real launch path: `torchrun --standalone --nproc_per_node 2 webssl train CELL`."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    cell = _cell(tmp_path / "torchrun", shards, 2, "fsdp")
    webssl = str(Path(sys.executable).parent / "webssl")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           webssl, "train", str(cell), "--quiet"]  # fmt: skip
    env = {**os.environ, "WEBSSL_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = CellDir(cell).stage_status("train")
    assert status["state"] == "done" and status["world_size"] == 2 and status["strategy"] == "fsdp"
    assert CellDir(cell).backbone_export.exists()


@pytest.mark.slow
def test_compiled_blocks_give_the_same_losses(tmp_path, shards):
    """train.dist.compile (torch.compile per block, under FSDP2): about 40 s of compilation."""
    eager = _cell(tmp_path / "eager", shards, 2, "fsdp")
    compiled = _cell(tmp_path / "compiled", shards, 2, "fsdp")
    cfg = json.loads((compiled / "cell.json").read_text())
    cfg["train"]["dist"]["compile"] = True
    (compiled / "cell.json").write_text(json.dumps(cfg))
    assert _in_process(eager) == "done" and _in_process(compiled) == "done"
    for a, b in zip(losses(compiled), losses(eager), strict=True):
        assert abs(a - b) <= 1e-5 * abs(b)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_mae_two_ranks_with_resume_match_one_rank(tmp_path, shards, strategy):
    """MAE: the same masks and images at any world size, through a resume (DDP) or a sharded
    checkpoint written by 2 ranks and resumed by 2 (FSDP2)."""
    ref = _cell(tmp_path / "ref", shards, 6, method="mae")
    assert _in_process(ref) == "done"
    cell = _cell(tmp_path / strategy, shards, 6, strategy, method="mae")
    launch(2, cell, 3, None)
    status = CellDir(cell).stage_status("train")
    assert status["state"] == "done" and status["resumed_from"].endswith("dcp-00000003")
    assert_equal(cell, ref, 6)
