"""The method axis: its values, uids (webdino's unchanged), presets per method, the plan."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from webssl_cli.cli import app
from webssl_cli.errors import UserError
from webssl_cli.specs.presets import PRESETS, preset_settings
from webssl_cli.specs.train import TrainConfig
from webssl_cli.study.loader import load_study

runner = CliRunner()


def _with_method_axis(base: str, values: str) -> str:
    return base.replace("  data_filter: [full, light]\n", f"  data_filter: [full, light]\n  method: {values}\n")  # fmt: skip


def test_method_axis_multiplies_cells_and_keeps_webdino_uids(write_study, base_study):
    plain = load_study(write_study())
    mixed = load_study(write_study(_with_method_axis(base_study, "[webdino, clip, mae]"), "m.yaml"))
    assert len(mixed.cells) == 3 * len(plain.cells)
    by_method = {m: [c for c in mixed.cells if c.method == m] for m in ("webdino", "clip", "mae")}
    # a webdino cell has the uid it had before the axis existed
    assert sorted(c.uid for c in by_method["webdino"]) == sorted(c.uid for c in plain.cells)
    assert len({c.uid for c in mixed.cells}) == len(mixed.cells)
    dino_flops = {c.model: c.spec.facts.flops_per_sample for c in by_method["webdino"]}
    for cell in by_method["mae"]:
        spec = cell.spec
        assert spec.method == "mae" and spec.axes["method"] == "mae"
        assert spec.train.adam_betas == (0.9, 0.95) and spec.train.mae.decoder_width == 16
        assert spec.facts.flops_per_sample < 0.5 * dino_flops[cell.model]
    for cell in by_method["clip"]:
        assert cell.spec.train.adam_eps == 1e-6 and cell.spec.train.clip.text_width == 16


def test_include_adds_a_method_cell_and_plain_entries_stay_webdino(write_study, base_study):
    text = base_study + (
        "include:\n"
        "  - {method: mae, model: vit-test, samples_seen: 1K, data_filter: full}\n"
        "  - {model: vit-test, samples_seen: 4K, data_filter: full}\n"
    )
    loaded = load_study(write_study(text))
    assert len(loaded.cells) == 10
    assert [c.method for c in loaded.cells[-2:]] == ["mae", "webdino"]
    plain = {c.uid for c in load_study(write_study(base_study, "p.yaml")).cells}
    assert plain <= {c.uid for c in loaded.cells}


def test_bad_method_is_one_located_line(write_study, base_study):
    with pytest.raises(
        UserError, match=r"grid\.method.*unknown method 'dino'.*valid: webdino, clip, mae"
    ):
        load_study(write_study(_with_method_axis(base_study, "[webdino, dino]")))


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("method", ["webdino", "clip", "mae"])
def test_every_preset_composes_with_every_method(preset, method):
    cfg = TrainConfig.model_validate(preset_settings(preset, method))
    base = TrainConfig.model_validate(PRESETS[preset])
    if method == "webdino":
        assert cfg == base
        return
    # the preset's scale stays (CPU crops, threads), the method's optimiser comes on top
    assert cfg.crops == base.crops and cfg.threads == base.threads
    assert cfg.adam_betas == {"clip": (0.9, 0.98), "mae": (0.9, 0.95)}[method]


def test_paper_recipes():
    clip = TrainConfig.model_validate(preset_settings("webdino", "clip"))
    assert (clip.batch_size, clip.peak_lr(), clip.warmup_iters) == (32768, 4e-4, 2000)
    assert (clip.adam_betas, clip.adam_eps, clip.weight_decay) == ((0.9, 0.98), 1e-6, 0.2)
    mae = TrainConfig.model_validate(preset_settings("webdino", "mae"))
    assert (mae.batch_size, mae.warmup_iters, mae.adam_betas) == (4096, 80_000, (0.9, 0.95))
    assert mae.peak_lr() == pytest.approx(1.6e-3) and mae.weight_decay == 0.05
    assert mae.mae.mask_ratio == 0.75
    dino = TrainConfig()
    assert (dino.adam_betas, dino.adam_eps) == ((0.9, 0.999), 1e-8)


def test_plan_prices_each_method(write_study, base_study):
    path = write_study(_with_method_axis(base_study, "[webdino, mae]"))
    out = runner.invoke(app, ["study", "plan", str(path), "-f", "json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)["cells"]
    assert {r["method"] for r in rows} == {"webdino", "mae"}
    for r in rows:
        assert r["memory"]["memory_parts"]["teacher"] == (0 if r["method"] == "mae" else r["memory"]["memory_parts"]["params"])  # fmt: skip
    table = runner.invoke(app, ["study", "plan", str(path)]).output
    assert "method" in table.splitlines()[0] and " mae " in table


def test_zero_shot_and_retrieval_attach_to_clip_cells_only(write_study, base_study):
    text = _with_method_axis(base_study, "[webdino, clip]").replace(
        "  - {task: knn}\n",
        "  - {task: knn}\n  - {task: zeroshot}\n  - {task: retrieval, name: ret}\n",
    )
    path = write_study(text)
    loaded = load_study(path)
    for cell in loaded.cells:
        tasks = [e.task for e in cell.spec.evals]
        want = ["knn", "zeroshot", "retrieval"] if cell.method == "clip" else ["knn"]
        assert tasks == want, cell.method
    out = runner.invoke(app, ["study", "plan", str(path), "-f", "json"])
    assert out.exit_code == 0, out.output
    for row in json.loads(out.output)["cells"]:
        clip_stages = {"eval/zeroshot", "eval/ret"} & set(row["stages"])
        assert clip_stages == ({"eval/zeroshot", "eval/ret"} if row["method"] == "clip" else set())
