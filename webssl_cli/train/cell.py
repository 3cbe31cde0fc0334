"""The one place that reads a cell's spec (cell.json) for training."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from webssl_cli.data.stream import expand_urls
from webssl_cli.errors import UserError
from webssl_cli.rundir import CellDir
from webssl_cli.specs.registry import ModelSpec, get_model
from webssl_cli.specs.train import TrainConfig


class CellInputs(NamedTuple):
    model: ModelSpec
    cfg: TrainConfig
    shards: list[str]
    samples: int
    seed: int


def cell_shards(spec: dict[str, Any]) -> list[str]:
    """Shard URLs of a cell: the filtered subset when a filter ran, else the source pattern."""
    data = spec.get("data") or {}
    if data.get("filter_dir"):
        from webssl_cli.data.filtering import filtered_sources

        sources = filtered_sources(Path(data["filter_dir"]))
        return expand_urls(sources if isinstance(sources, str | list | tuple) else list(sources))
    if not data.get("shards"):
        raise UserError(
            "cell.json: data.shards: missing; the study layer must name the cell's shards"
        )
    return expand_urls(data["shards"])


def load_cell(run: CellDir) -> CellInputs:
    """(model, train config, shard URLs, samples to see, seed) of the cell in ``run``."""
    spec = run.read_spec()
    cfg = TrainConfig.model_validate(spec.get("train") or {})
    seed = int(spec.get("seed", cfg.seed))
    return CellInputs(
        get_model(spec["model"]), cfg, cell_shards(spec), int(spec["samples_seen"]), seed
    )
