"""GPU memory estimates in the plan (pure python; measured against CPU allocations in
tests/train/test_distributed_units.py)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from webssl_cli.cli import app
from webssl_cli.specs.registry import get_model
from webssl_cli.specs.train import TrainConfig
from webssl_cli.study.memory import check_fit, estimate_memory

REPO = Path(__file__).resolve().parents[2]
PAPER = TrainConfig()


def test_fsdp_shards_states_and_checkpointing_cuts_activations():
    spec = get_model("webdino-7b")
    one = estimate_memory(spec, PAPER, 8, strategy="fsdp")
    two = estimate_memory(spec, PAPER, 16, strategy="fsdp", micro_batch=one.micro_batch)
    assert abs(two.states_bytes * 2 / one.states_bytes - 1) < 1e-3  # sharded over the ranks
    ddp = estimate_memory(spec, PAPER, 8, strategy="ddp")
    assert ddp.states_bytes > 7 * one.states_bytes  # replicated
    ac = estimate_memory(spec, PAPER, 8, strategy="fsdp", activation_checkpointing=True)
    assert ac.activation_bytes < one.activation_bytes / 5
    # states of a 7B student + teacher: 16 bytes/param + 4 for the teacher
    params = spec.backbone_params()
    assert one.states_bytes * 8 > 16 * params and one.teacher_bytes * 8 > 4 * params


def test_micro_batch_and_accumulation():
    est = estimate_memory(get_model("webdino-1b"), PAPER, 16, micro_batch=24)
    assert (est.micro_batch, est.accumulation, est.strategy) == (24, 8, "fsdp")  # 3072 / 16 / 24


def test_fit_check_suggests_the_cheapest_fix():
    spec = get_model("webdino-7b")
    assert check_fit(spec, PAPER, 128, 0).fits  # unknown GPU memory: nothing to check
    fit = check_fit(spec, PAPER, 128, 80)
    assert not fit.fits and fit.fix == "set train.dist.activation_checkpointing: true"
    assert check_fit(
        spec,
        PAPER.model_copy(
            update={"dist": PAPER.dist.model_copy(update={"activation_checkpointing": True})}
        ),
        128,
        80,
    ).fits
    tiny = check_fit(spec, PAPER, 1, 80, max_gpus=128)  # one GPU cannot hold 7B's states
    assert not tiny.fits and tiny.fix.startswith("use ") and "GPUs" in tiny.fix
    none = check_fit(spec, PAPER, 1, 8, max_gpus=2)
    assert "does not fit on any GPU count" in none.fix


def test_plan_has_memory_columns_and_flags_cells():
    runner = CliRunner()
    out = runner.invoke(
        app, ["study", "plan", str(REPO / "studies" / "webssl-paper.yaml"), "-f", "json"]
    )
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)["cells"]
    seven = next(r for r in rows if r["model"] == "webdino-7b")["memory"]
    assert seven["gpus"] == 128 and seven["strategy"] == "fsdp" and seven["micro_batch"] == 24
    assert seven["memory_fits"] is False and "activation_checkpointing" in seven["memory_fix"]
    assert set(seven["memory_parts"]) == {"params", "grads", "optimizer", "teacher", "gathered",
                                          "activations", "logits", "reserve"}  # fmt: skip
    table = runner.invoke(
        app, ["study", "plan", str(REPO / "studies" / "webssl-paper.yaml")]
    ).output
    assert "GB/GPU" in table and "! webdino-7b:" in table
