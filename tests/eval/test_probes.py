"""kNN and linear probes, unit-level and through run_eval's contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from webssl_cli.eval.features import Features
from webssl_cli.eval.knn import knn_predict
from webssl_cli.eval.linear import linear_probe


def test_knn_weighted_vote() -> None:
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.2, 0.8]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    # k=5 covers all: the two close class-0 neighbours outweigh three far class-1 ones at low T
    pred = knn_predict(train, labels, torch.tensor([[1.0, 0.05]]), k=5, temperature=0.07)
    assert pred.tolist() == [0]
    # a high temperature makes the vote a plain majority
    assert knn_predict(
        train, labels, torch.tensor([[1.0, 0.05]]), k=5, temperature=100.0
    ).tolist() == [1]


def test_linear_probe_separable() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (300,), generator=g)
    centers = torch.randn(3, 16, generator=g) * 3
    x = centers[y] + torch.randn(300, 16, generator=g)
    feats = Features(
        cls=torch.stack([torch.randn(300, 16, generator=g), x], 1),
        avgpool=torch.randn(300, 16, generator=g),
    )
    tr, va = slice(0, 200), slice(200, 300)
    best, top1, grid, _ = linear_probe(
        Features(feats.cls[tr], feats.avgpool[tr]), y[tr], Features(feats.cls[va], feats.avgpool[va]), y[va],
        lrs=(1e-3, 0.1), n_last_blocks=(1, 2), avgpool=(False, True), epochs=20,
    )  # fmt: skip
    assert len(grid) == 8 and top1 >= 0.95
    assert top1 == max(grid.values())


@pytest.mark.parametrize("task", ["knn", "linear"])
def test_run_eval_contract(tmp_path: Path, synth_shards: str, task: str, make_cell: Any) -> None:
    from webssl_cli.eval.run import run_eval
    from webssl_cli.rundir import CellDir

    extra = {"lrs": [0.01, 0.1], "epochs": 3} if task == "linear" else {}
    cell = make_cell(tmp_path, synth_shards, [{"task": task, **extra}])
    out = run_eval(cell, task)
    doc = json.loads((cell / "eval" / f"{task}.json").read_text())
    assert doc == json.loads(json.dumps(out, default=str))
    assert doc["task"] == task and doc["cell"] == "abc123" and doc["settings_hash"]
    res, base = doc["results"]
    assert (
        res["metric"] == "top1" and res["benchmark"] == "synth-labelled" and res["category"] is None
    )
    assert "variant" not in res and base["variant"] == "random-init"
    # 13 classes; a random-init ViT on these shapes is still clearly above 1/13
    assert 0.1 < res["value"] <= 1.0
    assert CellDir(cell).stage_status(f"eval/{task}")["state"] == "done"
    # one outcome per validation image and variant, keyed by the image's key; means = scores
    from webssl_cli.outcomes import examples_path, read_outcomes

    outs = list(read_outcomes(examples_path(cell / "eval" / f"{task}.json")))
    for row in (res, base):
        vals = [o.value for o in outs if o.variant == row.get("variant", "encoder")]
        assert len(vals) == doc["details"]["n_val"] and set(vals) <= {0.0, 1.0}
        assert sum(vals) / len(vals) == pytest.approx(row["value"], abs=1e-12)
    keys = {o.example for o in outs}
    assert len(keys) == doc["details"]["n_val"] and all(k and not k.isdigit() for k in keys)
    f = doc["details"]["features"]
    assert f["dim"] == 64 and 1.0 < f["effective_rank"] <= 64 and f["dim_std_min"] > 0
    assert set(doc["details"]["features_by_variant"]) == {"random-init"}


def test_run_eval_unknown_name_is_user_error(
    tmp_path: Path, synth_shards: str, make_cell: Any
) -> None:
    from webssl_cli.errors import UserError
    from webssl_cli.eval.run import run_eval

    cell = make_cell(tmp_path, synth_shards, [{"task": "knn"}])
    with pytest.raises(UserError, match="no eval named 'vqa'"):
        run_eval(cell, "vqa")


def test_imagefolder_probe(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from webssl_cli.eval.features import load_labelled

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 2)):
        for cls, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
            d = tmp_path / "imgs" / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                arr = np.clip(np.array(colour) + rng.integers(-20, 20, (16, 16, 3)), 0, 255).astype(
                    np.uint8
                )
                Image.fromarray(arr).save(d / f"{i}.png")
    train, val = load_labelled(str(tmp_path / "imgs"))
    assert (len(train), len(val)) == (12, 4) and train.class_names == {0: "blue", 1: "red"}
    assert sorted(set(val.labels)) == [0, 1]


def test_cli_eval_run(tmp_path: Path, synth_shards: str, make_cell: Any) -> None:
    import typer
    from typer.testing import CliRunner

    from webssl_cli.eval.commands import register

    app = typer.Typer()
    register(app)
    cell = make_cell(
        tmp_path, synth_shards, [{"task": "knn", "name": "knn-small", "max_images": 200}]
    )
    res = CliRunner().invoke(app, ["run", str(cell), "--task", "knn-small"])
    assert res.exit_code == 0, res.output
    assert "synth-labelled\t-\ttop1\t" in res.output
    assert (
        json.loads((cell / "eval" / "knn-small.json").read_text())["settings"]["max_images"] == 200
    )
    res = CliRunner().invoke(app, ["run", str(tmp_path), "--task", "knn"])
    assert res.exit_code == 2 and "no cell.json" in " ".join(res.output.split())


def test_knn_and_linear_share_cached_features(
    tmp_path: Path, synth_shards: str, make_cell: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import webssl_cli.eval.features as F
    from webssl_cli.eval.run import run_eval

    evals = [
        {"task": "knn", "max_images": 150},
        {"task": "linear", "max_images": 150, "lrs": [0.1], "epochs": 1},
    ]
    cell = make_cell(tmp_path, synth_shards, evals)
    run_eval(cell, "knn")
    # the encoder's features and its random-init twin's
    assert len(list((cell / "eval").glob(".features-*.pt"))) == 2
    calls: list[int] = []
    orig = F.extract
    monkeypatch.setattr(F, "extract", lambda *a, **k: calls.append(1) or orig(*a, **k))
    out = run_eval(cell, "linear")
    assert calls == [] and out["details"]["n_train"] + out["details"]["n_val"] == 150


def test_baseline_encoder_override(tmp_path: Path, synth_shards: str, make_cell: Any) -> None:
    """An eval may name another encoder (here an HF Dinov2 export) in place of the cell's."""
    from webssl_cli.eval.encoders import export_hf
    from webssl_cli.eval.run import run_eval

    donor = make_cell(tmp_path / "donor", synth_shards, [], model="vit-test")
    hf = export_hf(donor / "train" / "teacher_backbone.pt", tmp_path / "hf")
    cell = make_cell(
        tmp_path / "c", synth_shards, [{"task": "knn", "max_images": 100, "encoder": str(hf)}]
    )
    out = run_eval(cell, "knn")
    assert out["settings"]["encoder"] == "hf" and out["settings"]["threads"] is None
    # no random-init twin for a foreign encoder: said so, and no baseline row
    assert "random-init" in out["details"]["baselines_skipped"]
    assert [r.get("variant", "encoder") for r in out["results"]] == ["encoder"]


def test_random_twin_is_the_trainers_initialisation(tmp_path: Path, synth_shards: str,
                                                     make_cell: Any) -> None:  # fmt: skip
    """The baseline is the trainer's student backbone at step 0 for the cell's seed."""
    from webssl_cli.eval.run import _random_twin
    from webssl_cli.rundir import CellDir
    from webssl_cli.specs.evals import KnnEval
    from webssl_cli.specs.registry import get_model
    from webssl_cli.specs.train import TrainConfig
    from webssl_cli.train.objectives.dinov2_model import build_models

    cell = make_cell(tmp_path, synth_shards, [{"task": "knn"}], model="vit-test")
    spec = json.loads((cell / "cell.json").read_text())
    spec["train"]["seed"] = 7
    twin = _random_twin(KnnEval(), spec, CellDir(cell))
    torch.manual_seed(7)
    student, _ = build_models(
        get_model("vit-test"), TrainConfig(**spec["train"]), torch.device("cpu")
    )
    ref = student.backbone.state_dict()
    got = twin.backbone.state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)


def test_feature_stats_see_collapse() -> None:
    from webssl_cli.eval.run import feature_stats

    g = torch.Generator().manual_seed(0)
    spread = feature_stats(torch.randn(500, 32, generator=g))
    assert spread["effective_rank"] > 25 and spread["dim_std_min"] > 0.8
    one_dir = torch.randn(500, 1, generator=g) * torch.randn(1, 32, generator=g)
    assert feature_stats(one_dir)["effective_rank"] == pytest.approx(1.0, abs=1e-6)
    const = feature_stats(torch.ones(50, 8))
    assert const["dim_std_mean"] == 0.0 and const["effective_rank"] == 0.0


def test_baselines_can_be_turned_off(tmp_path: Path, synth_shards: str, make_cell: Any) -> None:
    from webssl_cli.eval.run import run_eval

    cell = make_cell(tmp_path, synth_shards, [{"task": "knn", "max_images": 100, "baselines": []}])
    out = run_eval(cell, "knn")
    assert len(out["results"]) == 1 and "features_by_variant" not in out["details"]


def test_run_eval_on_an_explicit_cpu(
    tmp_path: Path, synth_shards: str, make_cell: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WEBSSL_DEVICE (what a profile's `device:` sets) reaches the eval job: `cpu` runs, and a
    device that is not there fails with a one-line error before any work."""
    import torch

    from webssl_cli.errors import UserError
    from webssl_cli.eval.run import run_eval

    cell = make_cell(tmp_path, synth_shards, [{"task": "knn", "max_images": 120}])
    monkeypatch.setenv("WEBSSL_DEVICE", "cpu")
    monkeypatch.setenv("WEBSSL_DTYPE", "fp32")
    out = run_eval(cell, "knn")
    assert 0.0 <= out["results"][0]["value"] <= 1.0
    if not torch.cuda.is_available():
        monkeypatch.setenv("WEBSSL_DEVICE", "cuda")
        with pytest.raises(UserError, match="no CUDA device is visible"):
            run_eval(cell, "knn")
