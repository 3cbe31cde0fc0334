"""``webssl train``: train one cell from its directory, or a small run from a config file.

    webssl train CELL_DIR                          a study cell (cell.json written by the study)
    webssl train --config small.yaml --out DIR     a run outside any study
    webssl train --preset smoke --model vit-pico --shards 'x/shard-{0..7}.tar' --samples 2000 --out DIR
    webssl train --method mae --preset smoke ... --out DIR   MAE (or clip: shards with captions)

The run file (``--config``) is closed: ``model``, ``samples_seen``, ``shards``, ``seed``,
``method``, ``preset`` and ``train`` (TrainConfig overrides on the preset's recipe for the
method, ``specs.presets.preset_settings``). Precedence: defaults < preset < file <
command line. Either way the resolved spec is written to ``DIR/cell.json`` before training,
and a rerun of the same command resumes from the newest checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import Field

from webssl_cli.errors import UserError
from webssl_cli.specs.base import Frozen
from webssl_cli.specs.cell import CellData, CellSpec


class RunFile(Frozen):
    """A training run outside a study."""

    model: str = "vit-pico"
    """Registry name of the ViT (``webssl study plan`` lists them)."""
    samples_seen: int = Field(2000, ge=1)
    """Images to train on (iterations = samples_seen / batch_size)."""
    shards: str | list[str] | None = None
    """Webdataset shards: path, brace pattern or ``pipe:`` command (or a list of them)."""
    seed: int = 0
    method: str = "webdino"
    """The objective: webdino, clip (shards with captions) or mae."""
    preset: str = "smoke"
    """A TrainConfig preset (webdino, smoke, test)."""
    train: dict[str, Any] = {}
    """TrainConfig overrides on top of the preset."""


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_run(
    config: Path | None, overrides: dict[str, Any], train_overrides: dict[str, Any]
) -> CellSpec:
    """The cell.json of a run outside a study (validated); UserError names file and field."""
    from pydantic import ValidationError

    from webssl_cli.specs.presets import METHOD_PRESETS, PRESETS, preset_settings
    from webssl_cli.specs.registry import resolve_model_name
    from webssl_cli.specs.train import TrainConfig

    data: dict[str, Any] = {}
    source = None
    if config is not None:
        from webssl_cli.study.yamlfile import load_yaml, validation_error

        data, source = load_yaml(config, what="run file")
    data = _merge(data, {k: v for k, v in overrides.items() if v is not None})
    try:
        run = RunFile.model_validate(data)
    except ValidationError as exc:
        if source is not None:
            raise validation_error(exc, source, model=RunFile) from None
        raise UserError(f"train: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    if run.preset not in PRESETS:
        raise UserError(
            f"{config or 'train'}: preset: unknown {run.preset!r}; valid: {', '.join(PRESETS)}"
        )
    if run.method not in METHOD_PRESETS:
        raise UserError(
            f"{config or 'train'}: method: unknown {run.method!r}; valid: {', '.join(METHOD_PRESETS)}"
        )
    if not run.shards:
        raise UserError(
            f"{config or 'train'}: shards: missing; give --shards PATTERN or shards: in the file"
        )
    merged = _merge(_merge(preset_settings(run.preset, run.method), run.train), train_overrides)
    try:
        cfg = TrainConfig.model_validate(merged)
    except ValidationError as exc:
        if source is not None:
            raise validation_error(exc, source, prefix=("train",), model=TrainConfig) from None
        raise UserError(f"train.{exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    return CellSpec.build(
        uid="run",
        model=resolve_model_name(run.model),
        samples_seen=run.samples_seen,
        data=CellData(source="shards", shards=run.shards),
        train=cfg,
        seed=run.seed,
        method=run.method,
    )


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        cell_dir: Annotated[
            Path | None, typer.Argument(help="A cell directory holding cell.json.")
        ] = None,
        config: Annotated[
            Path | None,
            typer.Option("--config", help="A run file (YAML) for a run outside a study."),
        ] = None,
        out: Annotated[
            Path | None, typer.Option("--out", help="Run directory for --config/--preset runs.")
        ] = None,
        preset: Annotated[str | None, typer.Option(help="TrainConfig preset.")] = None,
        method: Annotated[
            str | None, typer.Option(help="Objective: webdino, clip (captions) or mae.")
        ] = None,
        model: Annotated[str | None, typer.Option(help="Registry model name.")] = None,
        shards: Annotated[str | None, typer.Option(help="Webdataset shards.")] = None,
        samples: Annotated[int | None, typer.Option(help="Samples seen.")] = None,
        seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
        batch_size: Annotated[int | None, typer.Option(help="Global batch size.")] = None,
        quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    ) -> None:
        """Train one cell's encoder (Web-DINO, CLIP or MAE; resumes from its checkpoints)."""
        from webssl_cli.rundir import CellDir

        if cell_dir is not None:
            if not (cell_dir / "cell.json").is_file():
                raise UserError(
                    f"{cell_dir}: no cell.json; give a cell directory or --config/--out"
                )
        else:
            if out is None:
                raise UserError("train: give CELL_DIR, or --out DIR with --config FILE or --shards")
            overrides = {
                "preset": preset,
                "method": method,
                "model": model,
                "shards": shards,
                "samples_seen": samples,
                "seed": seed,
            }
            spec = resolve_run(config, overrides, {"batch_size": batch_size} if batch_size else {})
            run = CellDir(out)
            if (
                run.cell_json.exists()
                and run.read_cell() != spec
                and any(run.checkpoints_dir.glob("*-[0-9]*"))  # dcp-N/ or older ckpt-N.pt
            ):
                raise UserError(f"{out}: holds checkpoints of a different run; use a new --out")
            run.write_cell(spec)
            cell_dir = out
        # Under torchrun/SLURM every rank runs this command: only rank 0 draws a progress bar.
        rank = os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or "0"
        _run_with_progress(cell_dir, quiet or rank != "0")


def _run_with_progress(cell_dir: Path, quiet: bool) -> None:
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from webssl_cli.rundir import CellDir
    from webssl_cli.train.loop import train_cell

    spec = CellDir(cell_dir).read_cell()
    columns = (
        TextColumn("[bold]train[/] {task.fields[model]}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} samples"),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[ips]:.1f} img/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=quiet, transient=False) as bar:
        task = bar.add_task(
            "train",
            total=spec.samples_seen,
            model=spec.model,
            loss=float("nan"),
            ips=0.0,
        )

        def progress(m: dict[str, Any]) -> None:
            fields: dict[str, Any] = {"loss": m.get("loss", float("nan"))}
            if "images_per_s" in m:
                fields["ips"] = m["images_per_s"]
            bar.update(
                task,
                completed=m["samples_seen"],
                total=m["iterations"] * (m["samples_seen"] // max(m["step"], 1)),
                **fields,
            )

        state = train_cell(cell_dir, progress=progress)
    typer.echo(f"train: {state}: {cell_dir}")
    if state == "diverged":
        raise typer.Exit(1)
