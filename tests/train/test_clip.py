"""The CLIP objective in the loop: run directory contract and export, exact resume after
SIGKILL, and gathered negatives on 2 gloo ranks equal to 1 rank at twice the batch."""

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
from dist_worker import launch

from webssl_cli.data.synth import shard_pattern, synthesize
from webssl_cli.eval.encoders.own import load_own
from webssl_cli.rundir import CellDir
from webssl_cli.specs.cell import CellData, CellSpec
from webssl_cli.specs.presets import PRESETS
from webssl_cli.specs.train import TrainConfig
from webssl_cli.train.cell import load_cell
from webssl_cli.train.distributed import DistEnv
from webssl_cli.train.loop import train, train_cell

CLIP_TEST = {
    "crops": {"global_size": 32, "local_size": 16, "n_local": 0},
    "layerscale": None,
    "clip": {"text_layers": 2, "context_length": 16, "vocab_size": 400},
}


@pytest.fixture(scope="module")
def captioned(tmp_path_factory):
    paths = synthesize(tmp_path_factory.mktemp("captioned"), n=96, seed=0, shard_size=48,
                       image_size=48)  # fmt: skip
    return shard_pattern(paths)


def clip_cell(root: Path, shards: str, samples: int, **train_kw) -> Path:
    over = PRESETS["test"] | CLIP_TEST | train_kw
    spec = CellSpec.build(uid=root.name, model="vit-test", samples_seen=samples,
                          train=TrainConfig.model_validate(over),
                          data=CellData(source="synth", shards=shards), seed=0, method="clip")  # fmt: skip
    CellDir(root).write_cell(spec)
    return root


def _export(cell: Path) -> dict[str, torch.Tensor]:
    return torch.load(CellDir(cell).backbone_export, weights_only=True)["state_dict"]


def _text(cell: Path) -> dict:
    return torch.load(CellDir(cell).train_dir / "text_tower.pt", weights_only=True)


def test_clip_cell_trains_and_exports_both_towers(tmp_path, captioned):
    cell = clip_cell(tmp_path / "c", captioned, samples=8 * 5)
    assert train_cell(cell) == "done"
    run = CellDir(cell)
    lines = [json.loads(x) for x in run.metrics_jsonl.read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3, 4, 5]
    for key in ("loss", "logit_scale", "i2t_top1", "captioned", "grad_norm", "skipped_samples"):
        assert key in lines[-1], key
    assert lines[0]["logit_scale"] == pytest.approx(1 / 0.07, rel=1e-5)
    # every image without a caption was counted (no_caption) and left out of the loss
    missing = sum(round((1 - m["captioned"]) * 8) for m in lines)
    assert lines[-1]["skipped_samples"] == missing
    enc = load_own(run.backbone_export)  # the vision tower loads as a Web-DINO teacher does
    assert enc.width == 32
    text = _text(cell)
    assert text["format"] == "webssl-clip-text-1" and text["dims"]["layers"] == 2
    assert "logit_scale" in text["state_dict"] and "visual_projection.weight" in text["state_dict"]
    assert not any(k.startswith("backbone.") for k in text["state_dict"])
    assert (run.train_dir / "tokenizer.json").exists()


def test_logit_scale_is_clamped(tmp_path, captioned):
    cell = clip_cell(tmp_path / "c", captioned, samples=8 * 3, base_lr=5.0,
                     clip={**CLIP_TEST["clip"], "init_logit_scale": 2.99, "max_logit_scale": 3.0})  # fmt: skip
    assert train_cell(cell) == "done"
    scale = float(_text(cell)["state_dict"]["logit_scale"])
    assert scale <= 3.0 + 1e-7


def test_sigkill_midway_then_resume_gives_identical_weights(tmp_path, captioned):
    n = 8 * 30
    straight = clip_cell(tmp_path / "straight", captioned, n, checkpoint_every=5)
    assert train_cell(straight) == "done"
    killed = clip_cell(tmp_path / "killed", captioned, n, checkpoint_every=5)
    code = "import sys; from pathlib import Path; from webssl_cli.train.loop import train_cell; train_cell(Path(sys.argv[1]))"
    proc = subprocess.Popen([sys.executable, "-c", code, str(killed)],
                            env={**os.environ, "WEBSSL_DEVICE": "cpu"})  # fmt: skip
    ckdir, deadline = CellDir(killed).checkpoints_dir, time.time() + 120
    while not (ckdir / "dcp-00000010" / "meta.json").exists():
        assert proc.poll() is None, "the training process ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not CellDir(killed).backbone_export.exists()
    assert train_cell(killed) == "done"
    assert CellDir(killed).stage_status("train")["resumed_from"].endswith(("dcp-00000010", "dcp-00000015", "dcp-00000020", "dcp-00000025"))  # fmt: skip
    a, b = _export(straight), _export(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ta, tb = _text(straight)["state_dict"], _text(killed)["state_dict"]
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


def _rel(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest relative difference over tensors, the attention key biases left out: softmax
    ignores them (their true gradient is 0) and AdamW turns their rounding noise into lr-sized
    steps (as in test_distributed's comparison)."""
    worst = 0.0
    for k in b:
        x, y = a[k].double(), b[k].double()
        if k.endswith("qkv.bias"):  # (q, k, v) in both towers
            d = x.numel() // 3
            x, y = torch.cat([x[:d], x[2 * d :]]), torch.cat([y[:d], y[2 * d :]])
        worst = max(worst, float((x - y).norm() / y.norm().clamp_min(1e-30)))
    return worst


@pytest.fixture(scope="module")
def one_rank_20(tmp_path_factory, captioned):
    one = clip_cell(tmp_path_factory.mktemp("one") / "one", captioned, 8 * 20,
                    dist={"data_lanes": 2}, checkpoint_every=10)  # fmt: skip
    run = CellDir(one)
    assert train(run, *load_cell(run), env=DistEnv()) == "done"
    return one


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_gathered_negatives_on_two_ranks_equal_one_rank_at_twice_the_batch(
    tmp_path, captioned, one_rank_20, strategy
):
    steps, kw = 20, {"dist": {"data_lanes": 2, "strategy": strategy}, "checkpoint_every": 10}
    one = one_rank_20
    two = clip_cell(tmp_path / "two", captioned, 8 * steps, **kw)
    launch(2, two, 10, None)  # 2 ranks x 4 images, stopped and resumed half-way
    la = [json.loads(x)["loss"] for x in CellDir(one).metrics_jsonl.read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in CellDir(two).metrics_jsonl.read_text().splitlines()]
    assert len(la) == len(lb) == steps
    loss_rel = max(abs(a - b) / abs(a) for a, b in zip(la, lb, strict=True))
    w_rel = max(_rel(_export(two), _export(one)),
                _rel(_text(two)["state_dict"], _text(one)["state_dict"]))  # fmt: skip
    print(f"loss rel {loss_rel:.2e}  weights rel {w_rel:.2e}")
    assert loss_rel <= 1e-5 and w_rel <= 1e-5
    if strategy == "fsdp":
        return
    # without gradients through the gather, the other ranks' rows are constants: the run fails
    # the tolerance above, by far more than the run with them differs from one rank (AdamW
    # normalises the smaller gradients, so the gap is modest: 9.5e-5 against 1.5e-6 measured)
    nog = clip_cell(tmp_path / "nograd", captioned, 8 * steps, **kw,
                    clip={**CLIP_TEST["clip"], "gather_with_grad": False})  # fmt: skip
    launch(2, nog)
    nog_rel = _rel(_export(nog), _export(one))
    print(f"without gradients through the gather: weights rel {nog_rel:.2e}")
    assert nog_rel > 1e-5 and nog_rel > 10 * max(w_rel, 1e-7)
