"""A study mixing Web-DINO and MAE cells, end to end on the local executor: both train, are
evaluated the same way, ingest with their method, and the report draws one line per method."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from webssl_cli.cli import app

STUDY = """\
name: methods-mini
output_dir: {out}
cluster: local
preset: test
train: {{batch_size: 16, crops.global_size: 32, crops.local_size: 16}}
data:
  sources:
    web: {{synthesize: {{n: 96, seed: 0, shard_size: 48, image_size: 64}}}}
    synth-labelled: {{synthesize: {{n: 120, seed: 1, shard_size: 120, image_size: 64, mix: {{natural: 1.0}}}}}}
  filters:
    full: {{source: web}}
grid:
  model: [vit-test, vit-pico]
  samples_seen: [32, 64]
  data_filter: [full]
  method: [webdino, mae]
evals:
  - {{task: knn, dataset: synth-labelled, k: 5}}
"""


@pytest.mark.slow
def test_mixed_methods_study_runs_ingests_and_reports(tmp_path: Path) -> None:
    study, out = tmp_path / "methods-mini.yaml", tmp_path / "runs"
    study.write_text(STUDY.format(out=out))
    result = CliRunner().invoke(app, ["study", "run", str(study), "--wait", "--max-parallel", "2"])
    assert result.exit_code == 0, result.output
    cells = sorted((out / "cells").iterdir())
    assert len(cells) == 8
    methods = {}
    for cell in cells:
        spec = json.loads((cell / "cell.json").read_text())
        methods[cell.name] = spec["method"]
        stages = json.loads((cell / "status.json").read_text())["stages"]
        assert {k: v["state"] for k, v in stages.items()} == {"train": "done", "eval/knn": "done"}
        metrics = (cell / "train" / "metrics.jsonl").read_text().splitlines()
        assert ("mae_loss" in json.loads(metrics[-1])) == (spec["method"] == "mae")
    assert sorted(methods.values()) == ["mae"] * 4 + ["webdino"] * 4
    con = duckdb.connect(str(out / "results.duckdb"), read_only=True)
    assert dict(con.sql("SELECT uid, method FROM cell_specs").fetchall()) == methods
    con.close()
    report = (out / "report" / "report.md").read_text()
    assert "## Methods" in report and "method × model size" in report
    table = report.split("method × model size")[1].split("###")[0]
    assert re.search(r"\| Web-DINO +\|", table) and re.search(r"\| Web-MAE +\|", table)
    assert "[" in table  # intervals from the per-example outcomes
    # each other method against Web-DINO, paired over the same examples, with its verdict;
    # the point estimate is the difference of the two methods' scores in the knn table
    knn = report.split("knn top1: method × model size")[1].split("###")[0]
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]]
            for r in knn.splitlines() if r.startswith("| Web-")}  # fmt: skip
    diff = report.split("Methods against Web-DINO, paired")[1].split("![")[0]
    line = next(r for r in diff.splitlines() if re.match(r"\| Web-MAE − Web-DINO +\| knn top1 ", r))
    for i, cell in enumerate(c.strip() for c in line.split("|")[3:-1]):
        d = float(cell.split()[0])
        assert cell.endswith(("detectable", "not detectable at this scale")), cell
        mae, dino = (float(rows[m][i].split()[0]) for m in ("Web-MAE", "Web-DINO"))
        assert abs(d - (mae - dino)) <= 0.11, (cell, mae, dino)
    for name in ("method_vs_params", "method_vs_samples"):
        svg = (out / "report" / f"{name}.svg").read_text()
        assert ">Web-DINO<" in svg and ">Web-MAE<" in svg, name  # one line per method
