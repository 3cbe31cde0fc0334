"""Zero-shot classification and image-text retrieval of CLIP cells: the scoring by hand, the
eval stage on a trained cell (outcomes, random-init twin), and the errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from webssl_cli.errors import UserError
from webssl_cli.eval.run import run_eval
from webssl_cli.eval.zeroshot import load_text_side, retrieval_hits, zero_shot_hits
from webssl_cli.rundir import CellDir
from webssl_cli.specs.cell import CellData, CellSpec
from webssl_cli.specs.presets import PRESETS
from webssl_cli.specs.train import TrainConfig
from webssl_cli.train.loop import train_cell


def test_zero_shot_hits_by_hand():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    classes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    top1, top5 = zero_shot_hits(img, classes, torch.tensor([0, 0, 1]))
    assert top1.tolist() == [1.0, 0.0, 1.0] and top5.tolist() == [1.0, 1.0, 1.0]


def test_retrieval_hits_by_hand_with_identical_captions():
    img = torch.eye(3)
    txt = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    hits = retrieval_hits(img, txt, ["a", "b", "c"])
    # image 0 is nearest caption 1 ("b"), image 1 nearest caption 0, image 2 its own
    assert hits["i2t-r1"].tolist() == [0.0, 0.0, 1.0] and hits["t2i-r1"].tolist() == [0.0, 0.0, 1.0]
    assert hits["i2t-r5"].tolist() == [1.0, 1.0, 1.0]
    same = retrieval_hits(img, txt, ["a", "a", "c"])  # captions 0 and 1 cannot be told apart
    assert same["i2t-r1"].tolist() == [1.0, 1.0, 1.0] and same["t2i-r1"].tolist() == [1.0, 1.0, 1.0]


EVALS = [
    {"task": "zeroshot", "prompts": ["a photo of a {label}", "a {label}"], "batch_size": 32},
    {"task": "retrieval", "batch_size": 32},
    {"task": "knn", "k": 5},
]


@pytest.fixture(scope="module")
def clip_cell(tmp_path_factory: pytest.TempPathFactory, synth_shards: str) -> Path:
    root = tmp_path_factory.mktemp("clip") / "c"
    over = PRESETS["test"] | {
        "crops": {"global_size": 32, "local_size": 16, "n_local": 0},
        "clip": {"text_layers": 2, "context_length": 16, "vocab_size": 400},
    }
    spec = CellSpec.build(uid="c", model="vit-test", samples_seen=8 * 3,
                          train=TrainConfig.model_validate(over),
                          data=CellData(source="synth", shards=synth_shards), seed=0,
                          method="clip", evals=EVALS,
                          sources={"synth-labelled": {"shards": synth_shards}})  # fmt: skip
    CellDir(root).write_cell(spec)
    assert train_cell(root) == "done"
    return root


def _outcome_means(cell: Path, name: str) -> dict[tuple[str, str], float]:
    rows = [
        json.loads(x) for x in (cell / "eval" / f"{name}.examples.jsonl").read_text().splitlines()
    ]
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["benchmark"]), []).append(r["value"])
    return {k: sum(v) / len(v) for k, v in groups.items()}


@pytest.mark.parametrize("name", ["zeroshot", "retrieval"])
def test_clip_eval_writes_scores_outcomes_and_the_random_twin(clip_cell: Path, name: str):
    out = run_eval(clip_cell, name)
    means = _outcome_means(clip_cell, name)
    variants = {r.get("variant", "encoder") for r in out["results"]}
    assert variants == {"encoder", "random-init"}
    n = 2 if name == "zeroshot" else 4
    assert len(out["results"]) == 2 * n
    for r in out["results"]:
        key = (r.get("variant", "encoder"), r["benchmark"])
        assert abs(means[key] - r["value"]) < 1e-12
    if name == "zeroshot":
        assert out["details"]["n_classes"] == 13
        top1 = {
            r.get("variant", "encoder"): r["value"] for r in out["results"] if r["metric"] == "top1"
        }
        top5 = {
            r.get("variant", "encoder"): r["value"] for r in out["results"] if r["metric"] == "top5"
        }
        assert all(top5[v] >= top1[v] for v in top1)
    assert CellDir(clip_cell).stage_status(f"eval/{name}")["state"] == "done"


def test_the_random_twin_is_the_trainers_initialisation(clip_cell: Path):
    from webssl_cli.eval.zeroshot import random_twin
    from webssl_cli.train.objective import RunContext
    from webssl_cli.train.objectives.clip import CLIP

    spec = CellDir(clip_cell).read_spec()
    side = load_text_side(clip_cell / "train" / "text_tower.pt")
    enc, twin = random_twin(spec, CellDir(clip_cell), side)
    cell = CellDir(clip_cell).read_cell()
    from webssl_cli.specs.registry import get_model

    ctx = RunContext(torch.device("cpu"), None, 0, 3, micro=8, method="clip",
                     shards=(), run_dir=str(clip_cell))  # fmt: skip
    fresh = CLIP(get_model(cell.model), cell.train, ctx).model
    for k, v in fresh.backbone.state_dict().items():
        assert torch.equal(enc.backbone.state_dict()[k], v), k
    for k, v in fresh.text.state_dict().items():
        assert torch.equal(twin.text.state_dict()[k], v), k


def test_clip_evals_need_a_clip_cell(tmp_path: Path, synth_shards: str, make_cell: Any):
    cell = make_cell(tmp_path, synth_shards, [{"task": "zeroshot"}])
    with pytest.raises(
        UserError, match="text_tower.pt: missing; zero-shot and retrieval evaluate CLIP cells"
    ):
        run_eval(cell, "zeroshot")
