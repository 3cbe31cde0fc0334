"""Web-MAE's encoder beats its random init on the study's kNN probe: an MAE cell trained on the
smoke corpus (vit-nano, 16K samples, the smoke preset's MAE recipe) is evaluated by the study's
kNN stage beside its random-init twin (the network at step 0, same seed) on the same labelled
images, and the paired 95% interval of the difference excludes zero.

Run: ``pytest -m slow -s tests/train/test_mae_knn.py`` (prints the figures).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from webssl_cli.data.synth import shard_pattern, synthesize
from webssl_cli.eval.run import run_eval
from webssl_cli.rundir import CellDir
from webssl_cli.specs.cell import CellData, CellSpec
from webssl_cli.specs.presets import preset_settings
from webssl_cli.specs.train import TrainConfig
from webssl_cli.train.loop import train_cell


@pytest.mark.slow
def test_mae_encoder_beats_its_random_init_on_knn(tmp_path: Path) -> None:
    web = shard_pattern(synthesize(tmp_path / "web", n=1000, seed=0, shard_size=250, image_size=96))
    labelled = shard_pattern(synthesize(tmp_path / "lab", n=3000, seed=1, shard_size=500,
                                        image_size=96, mix={"natural": 1.0}))  # fmt: skip
    cfg = TrainConfig.model_validate(preset_settings("smoke", "mae") | {"checkpoint_every": 1000})
    spec = CellSpec.build(
        uid="mae", model="vit-nano", samples_seen=16000, train=cfg, method="mae", seed=0,
        data=CellData(source="web", shards=web), evals=[{"task": "knn", "k": 20}],
        sources={"synth-labelled": {"shards": labelled}},
    )  # fmt: skip
    cell = tmp_path / "cell"
    CellDir(cell).write_cell(spec)
    assert train_cell(cell) == "done"
    run_eval(cell, "knn")
    by: dict[str, dict[str, float]] = {}
    for line in (cell / "eval" / "knn.examples.jsonl").read_text().splitlines():
        r = json.loads(line)
        by.setdefault(r["variant"], {})[r["example"]] = r["value"]
    keys = sorted(by["encoder"])
    enc = np.array([by["encoder"][k] for k in keys])
    rnd = np.array([by["random-init"][k] for k in keys])
    rng = np.random.default_rng(0)
    reps = np.array([(enc[i] - rnd[i]).mean() for i in rng.integers(0, len(keys), (2000, len(keys)))])  # fmt: skip
    lo, hi = np.percentile(reps, [2.5, 97.5])
    print(f"\nMAE vit-nano 16K kNN top-1 {enc.mean():.3f}, random-init {rnd.mean():.3f}, "
          f"difference {enc.mean() - rnd.mean():+.3f} [{lo:+.3f}, {hi:+.3f}] (n={len(keys)})")  # fmt: skip
    assert lo > 0
