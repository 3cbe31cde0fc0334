"""A study with ``resolution: [base, higher]`` end to end on the local executor (CLI
`webssl study run --wait`): the base cell trains, the adaptation cell waits for it, starts
from its final checkpoint, trains at the higher resolution and is evaluated there; results and
the report show resolution as a curve family."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
import torch
from typer.testing import CliRunner

from webssl_cli.cli import app
from webssl_cli.rundir import CellDir

pytestmark = pytest.mark.slow  # about 3 minutes on 2 shared cores

STUDY = """\
name: hires-mini
output_dir: {out}
cluster: local
preset: test
data:
  sources:
    web: {{synthesize: {{n: 64, seed: 0, shard_size: 32, image_size: 64}}}}
    synth-labelled: {{synthesize: {{n: 80, seed: 1, shard_size: 80, image_size: 64, mix: {{natural: 1.0}}}}}}
    synth-vqa: {{synthesize: {{n: 60, seed: 2, shard_size: 60, image_size: 64}}}}
  filters:
    full: {{source: web}}
grid:
  model: [vit-test]
  samples_seen: [48]
  data_filter: [full]
  resolution: [32, 48]
adapt: {{iterations: 3}}
evals:
  - {{task: knn, dataset: synth-labelled, k: 5}}
  - {{task: linear, dataset: synth-labelled, epochs: 2, lrs: [0.01]}}
  - {{task: vqa, suite: synthetic, dataset: synth-vqa, tokens: 4, stage1_steps: 2, stage1_batch: 8,
     stage2_steps: 2, stage2_batch: 8, lm_width: 32, lm_layers: 1, lm_heads: 2, max_questions: 3,
     max_new_tokens: 4}}
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("hires")
    study = tmp / "hires-mini.yaml"
    out = tmp / "runs"
    study.write_text(STUDY.format(out=out))
    result = CliRunner().invoke(app, ["study", "run", str(study), "--wait", "--max-parallel", "2"])
    assert result.exit_code == 0, result.output
    return out, result.output


def _cells(out: Path) -> tuple[CellDir, CellDir]:
    cells = [CellDir(p) for p in sorted((out / "cells").iterdir())]
    assert len(cells) == 2
    adapted = [c for c in cells if c.read_cell().init_from is not None]
    assert len(adapted) == 1
    base = next(c for c in cells if c is not adapted[0])
    return base, adapted[0]


def test_adaptation_ran_after_its_base_from_its_final_checkpoint(finished) -> None:
    out, _ = finished
    base, hi = _cells(out)
    spec = hi.read_cell()
    assert spec.init_from is not None and spec.init_from.uid == base.root.name
    for cell in (base, hi):
        states = {k: v["state"] for k, v in cell.read_status()["stages"].items()}
        assert states == dict.fromkeys(("train", "eval/knn", "eval/linear", "eval/vqa"), "done")
    b, h = base.stage_status("train"), hi.stage_status("train")
    assert h["initialised_from"] == str(base.checkpoints_dir / "dcp-00000006")
    assert h["started"] >= b["ended"] and h["iterations"] == 3
    export = torch.load(hi.backbone_export, weights_only=True)
    assert export["spec"]["img_size"] == 48 and export["state_dict"]["pos_embed"].shape[1] == 37


def test_each_cell_is_evaluated_at_its_resolution(finished) -> None:
    out, _ = finished
    base, hi = _cells(out)
    for cell, size in ((base, 32), (hi, 48)):
        for name in ("knn", "linear", "vqa"):
            result = json.loads(cell.eval_json(name).read_text())
            assert result["settings"]["image_size"] == size, (cell.root.name, name)
            assert result["settings"]["tokens"] == 4 if name == "vqa" else True


def test_results_and_report_show_resolution(finished) -> None:
    out, output = finished
    assert "report:" in output
    con = duckdb.connect(str(out / "results.duckdb"), read_only=True)
    axes = [json.loads(r[0]) for r in con.sql("SELECT axes FROM cell_specs").fetchall()]
    assert sorted(a["resolution"] for a in axes) == [32, 48]
    report = (out / "report" / "report.md").read_text()
    assert "## Resolution" in report and "| 32 px" in report and "| 48 px" in report
    assert (out / "report" / "score_vs_resolution.png").exists()
