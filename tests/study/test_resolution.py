"""The resolution axis: base cells keep their uids, higher resolutions become adaptation cells
that depend on the base cell, are priced for their own stage and say what they start from."""

from __future__ import annotations

from pathlib import Path

import pytest

from webssl_cli.errors import UserError
from webssl_cli.specs.compute import flops_per_sample
from webssl_cli.specs.presets import ADAPT_RECIPES
from webssl_cli.specs.registry import get_model
from webssl_cli.study.adapt import scaled_local_size
from webssl_cli.study.loader import load_study
from webssl_cli.study.plan import plan_rows

REPO = Path(__file__).resolve().parents[2]


def _with_grid_line(base_study: str, line: str) -> str:
    return base_study.replace(
        "  data_filter: [full, light]\n", f"  data_filter: [full, light]\n{line}\n"
    )


def test_base_resolution_keeps_todays_uids(write_study, base_study) -> None:
    plain = load_study(write_study())
    at_base = load_study(write_study(_with_grid_line(base_study, "  resolution: [32]"), "b.yaml"))
    assert [c.uid for c in plain.cells] == [c.uid for c in at_base.cells]
    assert all(c.adapt is None for c in at_base.cells)
    assert at_base.cells[0].spec.resolution == 32 and plain.cells[0].spec.resolution is None
    assert plain.cells[0].spec.image_size == 32  # the preset's global crop size


def test_higher_resolution_is_an_adaptation_of_the_base_cell(write_study, base_study) -> None:
    text = _with_grid_line(base_study, "  resolution: [32, 48]")
    loaded = load_study(write_study(text))
    plain = {
        (c.model, c.samples_seen, c.data_filter): c.uid
        for c in load_study(write_study(name="p.yaml")).cells
    }
    assert len(loaded.cells) == 16
    by_uid = {c.uid: c for c in loaded.cells}
    adapted = [c for c in loaded.cells if c.adapt]
    assert len(adapted) == 8
    for cell in adapted:
        base = by_uid[cell.adapt["from"]]
        assert base.uid == plain[(cell.model, cell.samples_seen, cell.data_filter)]
        assert base.axes["resolution"] == 32 and cell.axes["resolution"] == 48
        spec = cell.spec
        assert spec.resolution == 48 and spec.image_size == 48
        assert spec.init_from is not None and spec.init_from.uid == base.uid
        assert spec.init_from.resolution == 32
        assert spec.init_from.iterations == ADAPT_RECIPES["test"]["iterations"]
        assert spec.train.crops.global_size == 48 and spec.train.crops.local_size == 24
        assert spec.train.base_lr == ADAPT_RECIPES["test"]["base_lr"]
        assert spec.train.teacher_temp == base.spec.train.teacher_temp_end
        assert spec.train.teacher_temp_warmup_iters == 0
        assert spec.samples_seen == base.spec.samples_seen and spec.seed == base.spec.seed
        assert spec.facts.iterations == 4 and spec.train_samples == 4 * spec.train.batch_size
        assert spec.facts.flops_per_sample == pytest.approx(
            flops_per_sample(get_model(cell.model), spec.train)
        )
        assert spec.facts.flops_per_sample > base.spec.facts.flops_per_sample
    # the same study gives the same uids; editing the base settings changes the adaptations
    again = load_study(write_study(text, "again.yaml"))
    assert [c.uid for c in again.cells] == [c.uid for c in loaded.cells]
    edited = load_study(write_study(text + "train: {base_lr: 0.01}\n", "e.yaml"))
    assert not {c.uid for c in edited.cells} & {c.uid for c in adapted}


def test_adapt_block_overrides_the_recipe_and_changes_uids(write_study, base_study) -> None:
    text = _with_grid_line(base_study, "  resolution: [32, 48]")
    first = {c.uid for c in load_study(write_study(text)).cells if c.adapt}
    loaded = load_study(write_study(text + "adapt: {iterations: 7, base_lr: 5.0e-5}\n", "o.yaml"))
    cell = next(c for c in loaded.cells if c.adapt)
    assert cell.spec.facts.iterations == 7 and cell.spec.train.base_lr == 5e-5
    assert not {c.uid for c in loaded.cells if c.adapt} & first


def test_plan_prices_the_adaptation_stage(write_study, base_study) -> None:
    text = _with_grid_line(base_study, "  resolution: [32, 48]")
    plan = plan_rows(load_study(write_study(text)), peak_tflops=100.0, mfu=0.5)
    rows = {r["uid"]: r for r in plan["cells"]}
    adapted = [r for r in plan["cells"] if r.get("init_from")]
    assert len(adapted) == 8
    for row in adapted:
        base = rows[row["init_from"]]
        assert row["iterations"] == 4 and row["resolution"] == 48
        assert row["flops"] == pytest.approx(row["flops_per_sample"] * 4 * row["batch_size"])
        assert row["flops_per_sample"] > base["flops_per_sample"]
        assert row["gpu_hours"] == pytest.approx(row["flops"] / (100e12 * 0.5) / 3600)
        assert row["stages"][0] == f"after {row['init_from']}:train"
    assert plan["totals"]["flops"] == pytest.approx(sum(r["flops"] for r in plan["cells"]))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("  resolution: [48]", "which the study does not hold; add 32 to resolution"),
        ("  resolution: [16, 32]", "resolution 16 is below the base resolution 32"),
        ("  resolution: [32, 44]", "resolution 44 is not a whole number of 8 px patches"),
        ("  resolution: [32, true]", "a resolution is an image side in pixels"),
        ("  resolution: [32, 48]\nadapt: {iterations: 0}", "adapt: iterations: a positive number"),
        ("  resolution: [32, 48]\nadapt: {base_lr: -1}", "base_lr: Input should be greater than 0"),
        (
            "  resolution: [32, 48]\n  method: [webdino, mae]",
            "a mae cell stays at its base resolution 32",
        ),
    ],
)
def test_bad_resolutions_are_one_line_errors(write_study, base_study, line, message) -> None:
    with pytest.raises(UserError) as err:
        load_study(write_study(_with_grid_line(base_study, line)))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_resolution_cannot_be_set_from_the_command_line(write_study) -> None:
    with pytest.raises(UserError, match="axes are set in the study's grid"):
        load_study(write_study(), overrides=["resolution=48"])


def test_local_crops_scale_to_whole_patches() -> None:
    assert scaled_local_size(98, 378, 224, 14) == 168
    assert scaled_local_size(98, 518, 224, 14) == 224
    assert scaled_local_size(24, 72, 48, 8) == 40  # 36 px = 4.5 patches, rounded up


def test_paper_study_high_resolution_cells() -> None:
    loaded = load_study(REPO / "studies" / "webssl-paper.yaml")
    adapted = [c for c in loaded.cells if c.adapt]
    assert sorted(c.axes["resolution"] for c in adapted) == [378, 518]
    base = {c.uid: c for c in loaded.cells}[adapted[0].adapt["from"]]
    assert (base.model, base.samples_seen, base.data_filter) == (
        "webdino-7b",
        8_000_000_000,
        "full",
    )
    assert "resolution" not in base.axes  # the paper's 224 px cells are untouched
    for cell in adapted:
        spec = cell.spec
        assert cell.adapt["from"] == base.uid and spec.facts.iterations == 20_000
        assert spec.train.batch_size == 2048 and spec.train.peak_lr() == pytest.approx(
            1.41e-5, rel=5e-3
        )
        assert spec.train.crops.local_size == {378: 168, 518: 224}[spec.resolution]


def test_study_plan_command_shows_the_adaptation_stage() -> None:
    from typer.testing import CliRunner

    from webssl_cli.cli import app

    path = str(REPO / "studies" / "hires-smoke.yaml")
    table = CliRunner().invoke(app, ["study", "plan", path])
    assert table.exit_code == 0, table.output
    base, hi = (line for line in table.output.splitlines() if " vit-micro " in line)
    assert "resolution" in table.output and " 72 " in hi and " 48 " in base
    assert f"after {base.split()[0]}:train > train" in hi and " 30 " in hi
