from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from webssl_cli.rundir import CellDir
from webssl_cli.specs.cell import CellData, CellSpec
from webssl_cli.specs.train import CropConfig, TrainConfig


@pytest.fixture(scope="session")
def synth_shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small synthetic corpus (64 px) shared by the eval tests: its shard pattern."""
    from webssl_cli.data.synth import shard_pattern, synthesize

    out = tmp_path_factory.mktemp("synth")
    return shard_pattern(synthesize(out, 400, 0, 200, 64, None))


@pytest.fixture
def make_cell() -> Any:
    """A factory: make_cell(root, shards, evals, model="vit-pico", seed=0) -> cell dir."""
    return _make_cell


def _make_cell(
    root: Path, shards: str, evals: list[dict[str, Any]], model: str = "vit-pico", seed: int = 0
) -> Path:
    """A cell directory with a random-init teacher backbone of ``model``."""
    import torch

    from webssl_cli.eval.encoders import save_own
    from webssl_cli.specs.registry import get_model
    from webssl_cli.train.vit import build_backbone

    cell = root / "cells" / "abc123"
    cell.mkdir(parents=True)
    spec = get_model(model)
    torch.manual_seed(seed)
    save_own(
        build_backbone(spec, layerscale=spec.layerscale),
        spec,
        cell / "train" / "teacher_backbone.pt",
    )
    CellDir(cell).write_cell(
        CellSpec.build(
            uid="abc123",
            model=model,
            samples_seen=1000,
            train=TrainConfig(crops=CropConfig(global_size=64)),
            data=CellData(source="synth", shards=shards),
            evals=evals,
            sources={"synth-labelled": {"shards": shards}},
            seed=0,
        )
    )
    return cell
