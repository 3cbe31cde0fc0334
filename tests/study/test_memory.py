"""GPU memory estimates in the plan (pure python; measured against CPU allocations in
tests/train/test_distributed_units.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from webssl_cli.cli import app
from webssl_cli.specs.registry import get_model
from webssl_cli.specs.train import TrainConfig
from webssl_cli.study.memory import (
    AUTO_HEADROOM,
    Operational,
    check_fit,
    choose_operational,
    estimate_memory,
)

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


PAPER_STUDY = str(REPO / "studies" / "webssl-paper.yaml")


def _plan(*args: str) -> dict:
    out = CliRunner().invoke(app, ["study", "plan", PAPER_STUDY, "-f", "json", *args])
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


def test_plan_has_memory_columns_and_flags_cells():
    """Explicit settings that do not fit are flagged with the fix (nothing 'auto' to choose)."""
    sets = ["--set", "train.micro_batch=24", "--set", "train.dist.activation_checkpointing=false"]
    rows = _plan(*sets)["cells"]
    seven = next(r for r in rows if r["model"] == "webdino-7b")["memory"]
    assert seven["gpus"] == 128 and seven["strategy"] == "fsdp" and seven["micro_batch"] == 24
    assert seven["auto"] == [] and seven["activation_checkpointing"] is False
    assert seven["memory_fits"] is False and "activation_checkpointing" in seven["memory_fix"]
    assert set(seven["memory_parts"]) == {"params", "grads", "optimizer", "teacher", "gathered",
                                          "activations", "logits", "reserve"}  # fmt: skip
    table = CliRunner().invoke(app, ["study", "plan", PAPER_STUDY, *sets]).output
    assert "GB/GPU" in table and "! webdino-7b:" in table


# Chosen for the example H100 profile (80 GB, 16/32/32/64/128 GPUs for 1B/2B/3B/5B/7B):
# (micro-batch, accumulation steps, activation checkpointing).
PAPER_AUTO = {
    "webdino-1b": (96, 2, True),
    "webdino-2b": (96, 1, True),
    "webdino-3b": (96, 1, True),
    "webdino-5b": (48, 1, True),
    "webdino-7b": (24, 1, True),
}


def test_paper_study_fits_out_of_the_box():
    plan = _plan()
    assert plan["cluster"] == "example-h100" and len(plan["cells"]) == 24
    for row in plan["cells"]:  # every method's cells fit, with the plan's own choices
        mem = row["memory"]
        assert mem["memory_fits"] is True and mem["memory_fix"] == "", row["model"]
        assert mem["memory_bytes"] <= AUTO_HEADROOM * 80e9
        assert mem["auto"] == ["micro_batch", "activation_checkpointing"]
        assert mem["micro_batch"] * mem["accumulation"] * mem["gpus"] == row["batch_size"]
        if "init_from" in row:  # high resolution: more tokens a crop, smaller micro-batches
            assert mem["micro_batch"] < PAPER_AUTO[row["model"]][0]
            continue
        got = (mem["micro_batch"], mem["accumulation"], mem["activation_checkpointing"])
        if row["method"] == "webdino":
            assert got == PAPER_AUTO[row["model"]], row["model"]
        else:  # no teacher, no prototype logits: a 2B-param arm needs less than Web-DINO
            assert mem["memory_parts"]["teacher"] == 0
        assert mem["micro_batch"] * mem["accumulation"] * mem["gpus"] == row["batch_size"]
    table = CliRunner().invoke(app, ["study", "plan", PAPER_STUDY]).output
    assert "!" not in table.replace("GB/GPU", "") and "96x2*" in table and "yes*" in table
    csv_out = CliRunner().invoke(app, ["study", "plan", PAPER_STUDY, "-f", "csv"]).output
    header, first = csv_out.splitlines()[:2]
    row = dict(zip(header.split(","), first.split(","), strict=True))
    assert row["micro_batch"] == "96" and row["accumulation"] == "2"
    assert row["activation_checkpointing"] == "True"
    assert row["auto"] == "micro_batch activation_checkpointing"


def test_explicit_settings_are_kept_and_uids_do_not_move():
    auto = _plan()
    fixed = _plan(
        "--set", "train.micro_batch=8", "--set", "train.dist.activation_checkpointing=true"
    )
    half = _plan(
        "--set", "train.micro_batch=auto", "--set", "train.dist.activation_checkpointing=false"
    )
    assert [r["uid"] for r in auto["cells"]] == [r["uid"] for r in fixed["cells"]]
    assert [r["uid"] for r in auto["cells"]] == [r["uid"] for r in half["cells"]]
    for row in fixed["cells"]:
        mem = row["memory"]
        assert (mem["micro_batch"], mem["activation_checkpointing"], mem["auto"]) == (8, True, [])
    one_b = next(r for r in half["cells"] if r["model"] == "webdino-1b")["memory"]
    # checkpointing off as set: the largest micro-batch dividing 192 that fits in 90% of 80 GB
    assert one_b["auto"] == ["micro_batch"] and one_b["activation_checkpointing"] is False
    assert one_b["micro_batch"] == 16 and one_b["memory_fits"] is True


def test_choice_without_gpu_memory_leaves_the_trainer_default():
    op = choose_operational(get_model("vit-small"), PAPER, 8, 0.0)
    assert op == Operational(None, False, ("micro_batch", "activation_checkpointing"))
    explicit = PAPER.model_copy(update={"micro_batch": 12})
    assert choose_operational(get_model("vit-small"), explicit, 8, 80).micro_batch == 12


def test_auto_values_are_what_the_training_job_reads(tmp_path: Path):
    """`study run` resolves 'auto' into cell.json with the plan's choice; the trainer's
    micro-batch split of that config is the planned one."""
    from webssl_cli.launch.profiles import load_profile
    from webssl_cli.specs.cell import read_cell
    from webssl_cli.study.loader import load_study
    from webssl_cli.study.materialize import write_cells
    from webssl_cli.study.plan import resolve_operational
    from webssl_cli.train.batches import micro_batches_for

    study = tmp_path / "paper.yaml"
    text = (
        Path(PAPER_STUDY)
        .read_text()
        .replace("name: webssl-paper", "name: webssl-paper\noutput_dir: " + str(tmp_path / "out"))
    )
    study.write_text(text)
    loaded = load_study(study)
    uids = [c.uid for c in loaded.cells]
    assert all(c.spec.train.micro_batch is None for c in loaded.cells)  # 'auto' until resolved
    resolve_operational(loaded, load_profile("example-h100"))
    assert [c.uid for c in loaded.cells] == uids
    write_cells(loaded)
    for cell in loaded.cells:
        spec = read_cell(tmp_path / "out" / "cells" / cell.uid / "cell.json")
        if spec.method != "webdino":
            assert spec.train.micro_batch is not None
            continue
        if spec.init_from is not None:  # high resolution: the plan's own choice, same contract
            mb, accum = spec.train.micro_batch, 2048 // (128 * spec.train.micro_batch)
            assert mb is not None and micro_batches_for(spec.train, 128) == (mb, accum)
            continue
        mb, accum, ac = PAPER_AUTO[spec.model]
        assert spec.train.micro_batch == mb and spec.train.dist.activation_checkpointing is ac
        world = 3072 // (mb * accum)
        assert micro_batches_for(spec.train, world) == (mb, accum)


def test_auto_is_spelled_auto_in_a_study(write_study):
    from webssl_cli.errors import UserError
    from webssl_cli.study.loader import load_study

    path = write_study()
    text = path.read_text().replace(
        "preset: test",
        "preset: test\ntrain: {micro_batch: auto, dist: {activation_checkpointing: auto}}",
    )
    path.write_text(text)
    assert load_study(path).cells[0].train["micro_batch"] is None
    path.write_text(text.replace("micro_batch: auto", "micro_batch: big"))
    with pytest.raises(UserError, match="train.micro_batch: .*a number of images or 'auto'"):
        load_study(path)
