"""The VQA evaluation over 2 gloo ranks equals 1 process (features, both stages, answers and
scores, the blind twin too), under DDP and FSDP2, and a 2-rank run killed mid-stage-2 resumes
from its checkpoint to the uninterrupted result. Each rank is a process launched as torchrun
would (env://)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

WORKER = Path(__file__).with_name("vqa_rank_worker.py")
TINY = {
    "task": "vqa", "tokens": 4, "lm_width": 32, "lm_layers": 1, "lm_heads": 2, "adapter_depth": 2,
    "stage1_steps": 2, "stage1_batch": 8, "stage1_lr": 1e-3, "stage2_steps": 4, "stage2_batch": 8,
    "stage2_lr": 1e-3, "max_questions": 4, "max_new_tokens": 3, "batch_size": 8, "max_images": 120,
}  # fmt: skip
EVALS = [TINY, {**TINY, "name": "vqa-fsdp", "placement": "fsdp", "feature_cache": "disk",
                "feature_shard": 16}]  # fmt: skip


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(cell: Path, name: str, world: int, log: Path, kill_after: int = 0) -> list[int]:
    port, procs = _port(), []
    root = Path(__file__).parents[2]
    for rank in range(world):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "WEBSSL_DEVICE": "cpu",
               "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}  # fmt: skip
        if world > 1:
            env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
        procs.append(subprocess.Popen(
            [sys.executable, str(WORKER), str(cell), name, str(log), str(kill_after)], env=env))  # fmt: skip
    return [p.wait(timeout=900) for p in procs]


def stages(log: Path) -> dict[str, dict[str, Any]]:
    """The training stages a run logged, by (encoder | blind, stage)."""
    out = {}
    for line in log.read_text().splitlines():
        e = json.loads(line)
        d = Path(e["dir"])
        out[f"{'encoder' if d.parent.name.endswith('.cache') else 'blind'}/{d.name}"] = e
    return out


def outcome(cell: Path, name: str) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    doc = json.loads((cell / "eval" / f"{name}.json").read_text())
    preds = {}
    for line in (cell / "eval" / f"{name}.cache" / "predictions.jsonl").read_text().splitlines():
        d = json.loads(line)
        preds[d["id"]] = d["prediction"]
    examples = (cell / "eval" / f"{name}.examples.jsonl").read_text().splitlines()
    return doc, preds, sorted(examples)


def rel(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b) > 0
    return max(abs(x - y) / abs(y) for x, y in zip(a, b, strict=True))


@pytest.mark.slow
def test_two_ranks_equal_one_ddp_fsdp_and_killed_run_resumes(
    tmp_path: Path, synth_shards: str, make_cell: Any
) -> None:
    one = make_cell(tmp_path / "one", synth_shards, EVALS)
    assert launch(one, "vqa", 1, tmp_path / "one.log") == [0]
    ref_doc, ref_preds, ref_examples = outcome(one, "vqa")
    ref = stages(tmp_path / "one.log")
    assert set(ref) == {"encoder/train-stage1", "encoder/train-stage2", "blind/train-stage2"}
    assert ref_doc["details"]["ranks"] == 1
    assert ref["encoder/train-stage2"]["losses"][-1] < ref["encoder/train-stage2"]["losses"][0]

    worst = 0.0
    for name in ("vqa", "vqa-fsdp"):  # auto: DDP on 2 ranks; FSDP2 with the on-disk features
        cell = make_cell(tmp_path / name, synth_shards, EVALS)
        assert launch(cell, name, 2, tmp_path / f"{name}.log") == [0, 0]
        doc, preds, examples = outcome(cell, name)
        got = stages(tmp_path / f"{name}.log")
        assert set(got) == set(ref)
        for k in ref:
            worst = max(worst, rel(got[k]["losses"], ref[k]["losses"]))
        assert doc["details"]["ranks"] == 2
        assert preds == ref_preds  # greedy answers, the same questions in the same batches
        assert doc["results"] == ref_doc["results"] and examples == ref_examples
        assert doc["categories"] == ref_doc["categories"]
        assert doc["gains"] == ref_doc["gains"]
        if name == "vqa-fsdp":
            shards = sorted((cell / "eval" / "vqa-fsdp.cache" / "features").glob("shard-*.done"))
            assert len(shards) > 2  # the features were split over the ranks
            fsdp_stage2 = got["encoder/train-stage2"]["losses"]
    print(f"2 ranks vs 1: max relative stage loss difference {worst:.2e}")
    assert worst <= 1e-5

    # killed after its second stage-2 checkpoint (of 4 steps), both ranks at once
    killed = make_cell(tmp_path / "killed", synth_shards, EVALS)
    codes = launch(killed, "vqa-fsdp", 2, tmp_path / "k1.log", kill_after=2)
    assert all(c != 0 for c in codes) and not (killed / "eval" / "vqa-fsdp.json").exists()
    cache = killed / "eval" / "vqa-fsdp.cache"
    assert json.loads((cache / "train-stage2" / "latest.json").read_text())["step"] == 2
    assert not (cache / "mllm.pt").exists()
    assert launch(killed, "vqa-fsdp", 2, tmp_path / "k2.log") == [0, 0]
    resumed = stages(tmp_path / "k2.log")
    assert resumed["encoder/train-stage1"]["resumed_at"] == TINY["stage1_steps"]  # done: skipped
    assert resumed["encoder/train-stage2"]["resumed_at"] == 2
    assert rel(resumed["encoder/train-stage2"]["losses"], fsdp_stage2) <= 1e-5
    doc, preds, examples = outcome(killed, "vqa-fsdp")
    assert preds == ref_preds and doc["results"] == ref_doc["results"]
    assert examples == ref_examples
    assert not (cache / "train-stage2").exists() and (cache / "mllm.pt").exists()
