"""The one place that reads a cell's spec (cell.json, a ``CellSpec``) for training."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from webssl_cli.data.stream import expand_urls
from webssl_cli.rundir import CellDir
from webssl_cli.specs.cell import CellSpec
from webssl_cli.specs.registry import ModelSpec, get_model
from webssl_cli.specs.train import TrainConfig


class CellInputs(NamedTuple):
    model: ModelSpec
    cfg: TrainConfig
    shards: list[str]
    samples: int
    seed: int
    method: str = "webdino"


def cell_shards(spec: CellSpec) -> list[str]:
    """Shard URLs of a cell: the filtered subset when a filter ran, else the source pattern."""
    if spec.data.filter_dir:
        from webssl_cli.data.filtering import filtered_sources

        sources = filtered_sources(Path(spec.data.filter_dir))
        return expand_urls(sources if isinstance(sources, str | list | tuple) else list(sources))
    return expand_urls(spec.data.shards)


def load_cell(run: CellDir) -> CellInputs:
    """(model, train config, shard URLs, samples to see, seed, method) of the cell in ``run``."""
    spec = run.read_cell()
    return CellInputs(
        get_model(spec.model), spec.train, cell_shards(spec), spec.samples_seen, spec.seed,
        spec.method,
    )  # fmt: skip
