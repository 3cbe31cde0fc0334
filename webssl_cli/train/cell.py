"""The one place that reads a cell's spec (cell.json, a ``CellSpec``) for training."""

from __future__ import annotations

import dataclasses
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
    """(model, train config, shard URLs, samples to see, seed, method) of the cell in ``run``.
    An adaptation cell's backbone is built at its resolution (position embeddings of that grid)
    and sees its own stage's samples."""
    spec = run.read_cell()
    model = get_model(spec.model)
    if spec.init_from is not None:
        model = dataclasses.replace(model, img_size=spec.image_size)
    return CellInputs(
        model, spec.train, cell_shards(spec), spec.train_samples, spec.seed, spec.method
    )


def base_checkpoint(run: CellDir) -> Path | None:
    """The final checkpoint of the base cell an adaptation cell continues from (a sibling
    directory ``cells/<uid>``); None for a cell that starts from random weights."""
    from webssl_cli.errors import UserError
    from webssl_cli.train.checkpoint import checkpoint_dir

    spec = run.read_cell()
    if spec.init_from is None:
        return None
    base = CellDir(run.root.parent / spec.init_from.uid)
    final = checkpoint_dir(base.checkpoints_dir, base.read_cell().facts.iterations)
    if not (final / "meta.json").exists():
        raise UserError(
            f"{final}: missing; this cell adapts the {spec.init_from.resolution} px cell "
            f"{spec.init_from.uid}, which has not finished training (run it first)"
        )
    return final
