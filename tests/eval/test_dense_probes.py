"""The segmentation and depth probes on constructed features with a known answer, and the
segmentation/depth evaluations through run_eval's contract on the synthetic dense scenes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from webssl_cli.eval.dense_features import DenseFeatures
from webssl_cli.eval.depth import depth_probe
from webssl_cli.eval.segmentation import seg_probe


def _band_maps(n: int, g: int, k: int, seed: int) -> np.ndarray:
    """(n, g, g) class maps constant along rows: each column of patches has one class."""
    rng = np.random.default_rng(seed)
    cols = rng.integers(0, k, size=(n, 1, g))
    return np.repeat(cols, g, axis=1)


def _one_hot_features(maps: np.ndarray, k: int, noise_dims: int = 4) -> DenseFeatures:
    n, g, _ = maps.shape
    onehot = np.eye(k, dtype=np.float32)[maps].transpose(0, 3, 1, 2)  # (n, k, g, g)
    noise = np.random.default_rng(1).normal(size=(n, noise_dims, g, g)).astype(np.float32)
    x = torch.from_numpy(np.concatenate([onehot, noise], 1))[:, None]  # (n, 1, D, g, g)
    return DenseFeatures(x.half(), torch.zeros(n, 1, x.shape[2]).half())


def test_features_that_encode_the_class_give_miou_one() -> None:
    k, g, up = 5, 6, 4
    maps = _band_maps(80, g, k, 0)
    feats = _one_hot_features(maps, k)
    labels = [np.repeat(np.repeat(m, up, 0), up, 1).astype(np.uint8) for m in maps]
    labels[0][0, :3] = 255  # ignored pixels change nothing
    tr, va = slice(0, 60), slice(60, 80)
    res = seg_probe(DenseFeatures(feats.patches[tr], feats.cls[tr]), labels[tr],
                    DenseFeatures(feats.patches[va], feats.cls[va]), labels[va],
                    n_classes=k, lrs=(1e-2, 1e-1), epochs=30, label_size=g * up)  # fmt: skip
    assert res.miou == 1.0
    assert res.inter.sum() == res.union.sum() == sum(int((t != 255).sum()) for t in labels[va])
    # features that carry nothing about the class: far from 1
    rnd = DenseFeatures(torch.randn_like(feats.patches.float()).half(), feats.cls)
    res0 = seg_probe(DenseFeatures(rnd.patches[tr], rnd.cls[tr]), labels[tr],
                     DenseFeatures(rnd.patches[va], rnd.cls[va]), labels[va],
                     n_classes=k, lrs=(1e-2,), epochs=30, label_size=g * up)  # fmt: skip
    assert res0.miou < 0.5


def _depth_case(n: int, g: int, seed: int) -> tuple[DenseFeatures, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    depth = rng.uniform(1.0, 9.0, size=(n, g, g)).astype(np.float32)
    noise = rng.normal(size=(n, 3, g, g)).astype(np.float32)
    x = torch.from_numpy(np.concatenate([depth[:, None], noise], 1))[:, None]  # depth in channel 0
    cls = torch.from_numpy(rng.normal(size=(n, 1, 4)).astype(np.float32))
    return DenseFeatures(x.half(), cls.half()), [d for d in depth]


def test_depth_encoded_linearly_gives_rmse_near_zero() -> None:
    feats, depth = _depth_case(120, 6, 0)
    depth[0][0, 0] = 0.0  # a missing pixel is neither trained on nor scored
    tr, va = slice(0, 90), slice(90, 120)
    res = depth_probe(DenseFeatures(feats.patches[tr], feats.cls[tr]), depth[tr],
                      DenseFeatures(feats.patches[va], feats.cls[va]), depth[va], mode="regression",
                      lrs=(1e-2, 3e-2), epochs=60, label_size=6)  # fmt: skip
    # fp16 features round depth to ~0.004 m: that is the floor
    assert res.scores["rmse"] < 0.05 and res.scores["delta1"] == 1.0
    assert res.scores["absrel"] < 0.01
    # the binned head (DINOv2's) gets close too
    resb = depth_probe(DenseFeatures(feats.patches[tr], feats.cls[tr]), depth[tr],
                       DenseFeatures(feats.patches[va], feats.cls[va]), depth[va], mode="bins",
                       n_bins=64, upsample=1, lrs=(1e-2, 3e-2), epochs=60, label_size=6)  # fmt: skip
    assert resb.scores["delta1"] > 0.95 and resb.scores["rmse"] < 0.5


@pytest.fixture(scope="module")
def dense_shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    from webssl_cli.data.dense import synthesize_dense
    from webssl_cli.data.synth import shard_pattern

    return shard_pattern(synthesize_dense(tmp_path_factory.mktemp("dense"), 40, 0, 20, 64))


@pytest.mark.parametrize("task", ["segmentation", "depth"])
def test_run_eval_dense_contract(tmp_path: Path, synth_shards: str, dense_shards: str,
                                 task: str, make_cell: Any) -> None:  # fmt: skip
    from webssl_cli.eval.run import run_eval
    from webssl_cli.outcomes import counts_path, examples_path, read_counts, read_outcomes
    from webssl_cli.rundir import CellDir

    extra = {"n_bins": 16} if task == "depth" else {}
    ev = {
        "task": task,
        "dataset": dense_shards,
        "lrs": [1e-2],
        "epochs": 2,
        "image_size": 56,
        **extra,
    }
    cell = make_cell(tmp_path, synth_shards, [ev])
    out = run_eval(cell, task)
    doc = json.loads((cell / "eval" / f"{task}.json").read_text())
    assert doc["task"] == task and doc == json.loads(json.dumps(out, default=str))
    metrics = ["miou"] if task == "segmentation" else ["rmse", "absrel", "delta1"]
    enc = [r for r in doc["results"] if "variant" not in r]
    twin = [r for r in doc["results"] if r.get("variant") == "random-init"]
    assert [r["metric"] for r in enc] == metrics and [r["metric"] for r in twin] == metrics
    outs = list(read_outcomes(examples_path(cell / "eval" / f"{task}.json")))
    for r in doc["results"]:
        vals = [o.value for o in outs
                if o.benchmark == r["benchmark"] and o.variant == r.get("variant", "encoder")]  # fmt: skip
        assert len(vals) == doc["details"]["n_val"]
        assert np.mean(vals) == pytest.approx(r["value"], rel=1e-9)  # the outcome contract
    if task == "segmentation":
        from webssl_cli.eval.dense_metrics import miou

        rows = list(read_counts(counts_path(cell / "eval" / f"{task}.json")))
        assert {v for v, *_ in rows} == {"encoder", "random-init"}
        enc_rows = [r for r in rows if r[0] == "encoder"]
        assert miou(np.array([r[3] for r in enc_rows]), np.array([r[4] for r in enc_rows])) == \
            pytest.approx(enc[0]["value"])  # fmt: skip
        assert doc["details"]["n_classes"] == 12
    assert CellDir(cell).read_status()["stages"][f"eval/{task}"]["state"] == "done"
    # a second run reads the cached features and gives the same numbers
    again = run_eval(cell, task)
    assert [r["value"] for r in again["results"]] == [r["value"] for r in doc["results"]]
