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
    best, top1, grid = linear_probe(
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
    (res,) = doc["results"]
    assert (
        res["metric"] == "top1" and res["benchmark"] == "synth-labelled" and res["category"] is None
    )
    # 13 classes; a random-init ViT on these shapes is still clearly above 1/13
    assert 0.1 < res["value"] <= 1.0
    assert CellDir(cell).stage_status(f"eval/{task}")["state"] == "done"


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
    assert len(list((cell / "eval").glob(".features-*.pt"))) == 1
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
