"""A trained encoder beats its random init on the dense probes: an MAE cell (vit-nano, 24K
samples, the smoke preset's MAE recipe) trained on 1000 synthetic dense scenes is evaluated by
the study's own segmentation and depth stages beside its random-init twin (the network at step
0, same seed) on 400 fresh scenes, and the paired 95% intervals over the 89 val images put mIoU
and δ1 above and RMSE below the twin's.

Run: ``pytest -m slow -s tests/eval/test_depth_learns.py`` (prints the figures; about 3 minutes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from webssl_cli.data.dense import synthesize_dense
from webssl_cli.data.synth import shard_pattern
from webssl_cli.eval.run import run_eval
from webssl_cli.rundir import CellDir
from webssl_cli.specs.cell import CellData, CellSpec
from webssl_cli.specs.presets import preset_settings
from webssl_cli.specs.train import TrainConfig
from webssl_cli.train.loop import train_cell


def _paired(enc: np.ndarray, rnd: np.ndarray) -> tuple[float, float, float]:
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(enc), (2000, len(enc)))
    reps = enc[idx].mean(1) - rnd[idx].mean(1)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return float(enc.mean() - rnd.mean()), float(lo), float(hi)


@pytest.mark.slow
def test_mae_encoder_beats_its_random_init_on_segmentation_and_depth(tmp_path: Path) -> None:
    scenes = shard_pattern(synthesize_dense(tmp_path / "train", n=1000, seed=3, image_size=96))
    probe = shard_pattern(synthesize_dense(tmp_path / "probe", n=400, seed=1, image_size=96))
    cfg = TrainConfig.model_validate(preset_settings("smoke", "mae") | {"checkpoint_every": 1000})
    opts = {"image_size": 96, "lrs": [1e-3, 3e-3, 1e-2]}
    evals = [{"task": "segmentation", **opts}, {"task": "depth", "bins_upsample": 1, **opts}]
    spec = CellSpec.build(
        uid="mae-dense", model="vit-nano", samples_seen=24000, train=cfg, method="mae", seed=0,
        data=CellData(source="scenes", shards=scenes), evals=evals,
        sources={"synth-dense": {"shards": probe}},
    )  # fmt: skip
    cell = tmp_path / "cells" / "mae-dense"
    CellDir(cell).write_cell(spec)
    assert train_cell(cell) == "done"
    run_eval(cell, "segmentation")
    run_eval(cell, "depth")
    seg = {r.get("variant", "encoder"): r["value"] for r in
           json.loads((cell / "eval" / "segmentation.json").read_text())["results"]}  # fmt: skip
    by: dict[tuple[str, str], dict[str, float]] = {}
    for line in (cell / "eval" / "depth.examples.jsonl").read_text().splitlines():
        r = json.loads(line)
        by.setdefault((r["variant"], r["benchmark"].rsplit("/", 1)[1]), {})[r["example"]] = r["value"]  # fmt: skip
    got = {}
    for metric in ("delta1", "rmse", "absrel"):
        keys = sorted(by[("encoder", metric)])
        assert keys == sorted(by[("random-init", metric)]) and len(keys) > 80
        enc = np.array([by[("encoder", metric)][k] for k in keys])
        rnd = np.array([by[("random-init", metric)][k] for k in keys])
        got[metric] = (enc.mean(), rnd.mean(), *_paired(enc, rnd))
        print(f"\n{metric}: MAE {enc.mean():.3f}, random-init {rnd.mean():.3f}, difference "
              f"{got[metric][2]:+.3f} [{got[metric][3]:+.3f}, {got[metric][4]:+.3f}] (n={len(keys)})")  # fmt: skip
    from webssl_cli.report.dense import miou_estimates
    from webssl_cli.results.dense import load_counts

    counts = load_counts(tmp_path, "mae-dense", "segmentation")
    m, gain = miou_estimates(counts["encoder"], counts["random-init"], 2000, 0)
    assert gain is not None and m.value == pytest.approx(seg["encoder"])
    print(f"\nmIoU: MAE {seg['encoder']:.3f}, random-init {seg['random-init']:.3f}, difference "
          f"{gain.value:+.3f} [{gain.lo:+.3f}, {gain.hi:+.3f}]")  # fmt: skip
    assert gain.lo is not None and gain.lo > 0  # mIoU higher, detectably
    assert got["delta1"][3] > 0, got["delta1"]  # δ1 higher, detectably
    assert got["rmse"][4] < 0, got["rmse"]  # RMSE lower, detectably
