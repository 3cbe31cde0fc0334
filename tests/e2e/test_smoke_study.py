"""The main job end to end, reduced: `webssl study run STUDY --wait` through the CLI.

A smaller cousin of studies/smoke.yaml (2 models x 1 budget x 2 filters, the `test` preset,
tiny probes and VQA settings) runs on the local executor: data synthesis, the OCR light filter,
real training, kNN/linear probes, the synthetic VQA evaluation, ingest and report. Then a
second run must submit nothing, and deleting one cell must redo only that cell.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from webssl_cli.cli import app

REPO = Path(__file__).resolve().parents[2]

STUDY = """\
name: smoke-mini
output_dir: {out}
cluster: local
preset: test
train: {{batch_size: 16, crops.global_size: 32, crops.local_size: 16}}
data:
  sources:
    web: {{synthesize: {{n: 96, seed: 0, shard_size: 48, image_size: 64}}}}
    synth-labelled: {{synthesize: {{n: 120, seed: 1, shard_size: 120, image_size: 64, mix: {{natural: 1.0}}}}}}
    synth-vqa: {{synthesize: {{n: 100, seed: 2, shard_size: 100, image_size: 64}}}}
  filters:
    full: {{source: web}}
    light: {{source: web, filter: light, classifier: ocr}}
grid:
  model: [vit-test, vit-pico]
  samples_seen: [64]
  data_filter: [full, light]
evals:
  - {{task: knn, dataset: synth-labelled, k: 5}}
  - {{task: linear, dataset: synth-labelled, epochs: 2, lrs: [0.01]}}
  - {{task: vqa, suite: synthetic, dataset: synth-vqa, tokens: 4, stage1_steps: 2, stage1_batch: 8,
     stage2_steps: 4, stage2_batch: 8, lm_width: 32, lm_layers: 1, lm_heads: 2, max_questions: 3,
     max_new_tokens: 4}}
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    tmp = tmp_path_factory.mktemp("smoke")
    study = tmp / "smoke-mini.yaml"
    out = tmp / "runs"
    study.write_text(STUDY.format(out=out))
    result = CliRunner().invoke(app, ["study", "run", str(study), "--wait", "--max-parallel", "2"])
    assert result.exit_code == 0, result.output
    return study, out, result.output


def test_every_cell_finished_and_results_are_complete(finished: tuple[Path, Path, str]) -> None:
    study, out, output = finished
    assert "results:" in output and "report:" in output
    cells = sorted((out / "cells").iterdir())
    assert len(cells) == 4
    for cell in cells:
        status = json.loads((cell / "status.json").read_text())["stages"]
        assert {k: v["state"] for k, v in status.items()} == {
            "train": "done",
            "eval/knn": "done",
            "eval/linear": "done",
            "eval/vqa": "done",
        }, cell.name
        assert (cell / "train" / "teacher_backbone.pt").stat().st_size > 0
    con = duckdb.connect(str(out / "results.duckdb"), read_only=True)
    uids = {c.name for c in cells}
    assert {r[0] for r in con.sql("SELECT uid FROM cells WHERE state = 'done'").fetchall()} == uids
    assert {
        r[0]
        for r in con.sql("SELECT DISTINCT uid FROM train_metrics WHERE name = 'loss'").fetchall()
    } == uids
    # every cell has every benchmark of every evaluation
    per_cell = con.sql(
        "SELECT eval_name, benchmark, count(DISTINCT uid) FROM eval_results GROUP BY ALL"
    ).fetchall()
    vqa_benchmarks = {b for e, b, _ in per_cell if e == "vqa"}
    assert len(vqa_benchmarks) >= 8
    assert all(n == 4 for _, _, n in per_cell), per_cell
    probes = {(e, b) for e, b, _ in per_cell if e != "vqa"}
    assert probes == {("knn", "synth-labelled"), ("linear", "synth-labelled")}
    cats = con.sql(
        "SELECT category, count(DISTINCT uid) FROM eval_categories GROUP BY ALL"
    ).fetchall()
    assert dict(cats) == {
        c: 4 for c in ("General", "Knowledge", "OCR & Chart", "Vision-Centric", "Average")
    }
    assert con.execute("SELECT fraction FROM filter_stats").fetchone()[0] > 0
    report = out / "report"
    for name in ("report.md", "report.html"):
        assert (report / name).stat().st_size > 1000, name
    pngs = list(report.rglob("*.png"))
    assert pngs and all(p.stat().st_size > 1000 for p in pngs)


def test_second_run_submits_nothing_and_a_deleted_cell_is_redone(
    finished: tuple[Path, Path, str],
) -> None:
    study, out, _ = finished
    again = CliRunner().invoke(app, ["study", "run", str(study), "--wait"])
    assert again.exit_code == 0, again.output
    assert "nothing to do" in again.output
    assert not re.search(r"submitted|submission\(s\)", again.output.split("nothing to do")[0])

    cells = sorted((out / "cells").iterdir())
    victim, others = cells[0], cells[1:]
    before = {c.name: (c / "train" / "teacher_backbone.pt").stat().st_mtime_ns for c in others}
    shutil.rmtree(victim)
    redo = CliRunner().invoke(app, ["study", "run", str(study), "--wait"])
    assert redo.exit_code == 0, redo.output
    assert (victim / "eval" / "vqa.json").exists()
    assert {
        c.name: (c / "train" / "teacher_backbone.pt").stat().st_mtime_ns for c in others
    } == before
    # ingest picked the redone cell up: every cell is done again
    con = duckdb.connect(str(out / "results.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM cells WHERE state = 'done'").fetchone()[0] == 4
