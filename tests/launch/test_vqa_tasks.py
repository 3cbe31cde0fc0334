"""A VQA evaluation as a 2-task job, on SLURM and on the local executor: its ranks come from
SLURM's environment (or submitit's local one), they meet over gloo on the CPU, and it writes
what one process writes. The SLURM case needs the one-node cluster (`slurm/start-cluster.sh`)
and is skipped when `scontrol ping` does not answer UP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from webssl_cli.launch.executors import slurm_available
from webssl_cli.launch.runner import RunOptions, run_study
from webssl_cli.rundir import CellDir

EXECUTORS = [
    pytest.param(
        "slurm",
        marks=[
            pytest.mark.slurm,
            pytest.mark.skipif(
                not slurm_available(), reason="no SLURM cluster (slurm/start-cluster.sh)"
            ),
        ],
    ),
    "local",
]
pytest.importorskip("transformers")

STUDY = """\
name: vqa2
output_dir: {out}
preset: test
train: {{batch_size: 16, crops.global_size: 32, crops.local_size: 16}}
data:
  sources:
    web: {{synthesize: {{n: 64, seed: 0, shard_size: 32, image_size: 48}}}}
    synth-vqa: {{synthesize: {{n: 100, seed: 2, shard_size: 100, image_size: 64}}}}
  filters:
    full: {{source: web}}
grid:
  model: [vit-test]
  samples_seen: [64]
  data_filter: [full]
evals:
  - {{task: vqa, suite: synthetic, dataset: synth-vqa, tokens: 4, stage1_steps: 2, stage1_batch: 8,
     stage2_steps: 4, stage2_batch: 8, lm_width: 32, lm_layers: 1, lm_heads: 2, max_questions: 3,
     max_new_tokens: 4, batch_size: 8}}
"""
REPO = Path(__file__).resolve().parents[2]


def _profile(tmp_path: Path) -> Path:
    base = (REPO / "slurm" / "local.yaml").read_text()
    line = "eval: {cpus_per_task: 1, mem_gb: 2, time_min: 30}"
    assert line in base
    path = tmp_path / "eval-two-tasks.yaml"
    path.write_text(
        base.replace(line, "eval: {tasks_per_node: 2, cpus_per_task: 1, mem_gb: 4, time_min: 30}")
    )
    return path


def _outputs(cell: Path) -> tuple[list[dict], list[str], dict[str, str]]:
    doc = json.loads((cell / "eval" / "vqa.json").read_text())
    examples = sorted((cell / "eval" / "vqa.examples.jsonl").read_text().splitlines())
    preds = {}
    for line in (cell / "eval" / "vqa.cache" / "predictions.jsonl").read_text().splitlines():
        d = json.loads(line)
        preds[d["id"]] = d["prediction"]
    return doc["results"], examples, preds


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("executor", EXECUTORS)
def test_vqa_eval_as_two_tasks_equals_one_process(tmp_path: Path, executor: str) -> None:
    study = tmp_path / "vqa2.yaml"
    study.write_text(STUDY.format(out=tmp_path / "out"))
    opts = RunOptions(executor=executor, profile=str(_profile(tmp_path)), wait=True, poll_s=2.0,
                      progress=False, post_hooks=False)  # fmt: skip
    r = run_study(study, opts)
    assert not r.failed and not r.blocked, r
    cell = next((r.study_dir / "cells").iterdir())
    st = CellDir(cell).stage_status("eval/vqa")
    assert st["state"] == "done", st
    if executor == "slurm":
        sub = Path(st["log"]).parent
        assert "#SBATCH --ntasks-per-node=2" in (sub / f"{st['job']}_submission.sh").read_text()
        train = CellDir(cell).stage_status("train")
        assert "#SBATCH --ntasks-per-node=1" in (sub / f"{train['job']}_submission.sh").read_text()
    doc = json.loads((cell / "eval" / "vqa.json").read_text())
    # "slurm": the SLURM_* variables (submitit's local executor exports the same kind)
    assert doc["details"]["ranks"] == 2 and doc["details"]["rank_source"] == "slurm"

    # the same cell evaluated by one process, outside SLURM
    one = tmp_path / "one" / "cells" / cell.name
    (one / "train").mkdir(parents=True)
    shutil.copy(cell / "cell.json", one / "cell.json")
    shutil.copy(CellDir(cell).backbone_export, one / "train" / CellDir(cell).backbone_export.name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    code = "import sys; from webssl_cli.eval.run import run_eval; run_eval(sys.argv[1], 'vqa')"
    subprocess.run([sys.executable, "-c", code, str(one)], env=env, check=True, timeout=600)
    ref = json.loads((one / "eval" / "vqa.json").read_text())
    assert ref["details"]["ranks"] == 1
    assert _outputs(cell) == _outputs(one)
    assert doc["categories"] == ref["categories"]
