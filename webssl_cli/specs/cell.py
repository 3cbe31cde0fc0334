"""The typed cell spec: what ``cells/<uid>/cell.json`` holds, and the only way it is read or written.

A cell states, once, what it is: its axes, the model and its backbone parameters, the method,
the samples budget and the resolved iterations, FLOPs per sample and in total, the data (source,
shards, the filter's key and kind), the full training configuration and the evaluations. Every
stage, results ingest and the report read these fields; nothing downstream re-prices a cell or
guesses a filter from its name.

Versions: 2 is this layout. A version-1 file (written before the derived facts existed: no
``version``, ``method`` or ``facts``, no ``data.filter_key``) is migrated on read. ``resolution``
and ``init_from`` (the high-resolution adaptation stage) are optional: files without them are
cells at their global crop size that start from random weights, as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from webssl_cli.errors import UserError
from webssl_cli.specs.base import Frozen
from webssl_cli.specs.evals import EvalConfig
from webssl_cli.specs.train import TrainConfig

CELL_VERSION: Literal[2] = 2
METHODS = ("webdino", "clip", "mae")
"""Training objectives a cell can name: DINOv2 as Web-DINO trains it, CLIP, MAE."""
FILTER_KINDS = ("none", "light", "heavy")


class CellData(Frozen):
    source: str
    """Data source name of the study (``shards`` outside a study)."""
    shards: str | list[str]
    """The source's shard pattern (absolute path, braces allowed)."""
    filter: Literal["none", "light", "heavy"] = "none"
    """Kind of the data filter: none, light (images with text) or heavy (charts/documents)."""
    classifier: str | None = None
    """The filter's classifier (ocr, vlm, label); None when ``filter`` is none."""
    vlm_path: str | None = None
    filter_key: str | None = None
    """The filter output's cache key (its directory name under ``filters/``); None: unfiltered."""
    filter_dir: str | None = None
    """Where the filter stage writes the keep-list and the filtered shards."""


class CellFacts(Frozen):
    """Derived once, when the cell is resolved, from the model, method and training config."""

    params: int = Field(ge=1)
    """Backbone parameters (the registry's analytic count)."""
    iterations: int = Field(ge=1)
    """Optimiser steps: ceil(samples_seen / batch_size)."""
    flops_per_sample: float = Field(gt=0)
    """Training FLOPs per image of one step of the method."""
    flops: float = Field(gt=0)
    """Training FLOPs of the whole cell: flops_per_sample x iterations x batch_size."""


class InitFrom(Frozen):
    """The cell a high-resolution adaptation continues from, and the adaptation's length."""

    uid: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    """The base cell (a sibling directory ``cells/<uid>``): same model, method, data, samples
    seen and seed, trained at ``resolution``. Its final checkpoint initialises this cell."""
    resolution: int = Field(ge=8)
    """The base cell's image side (its ``train.crops.global_size``)."""
    iterations: int = Field(ge=1)
    """Optimiser steps of the adaptation (the paper: 20K at batch 2048)."""


class CellSpec(Frozen):
    version: Literal[2] = CELL_VERSION
    uid: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    study: str | None = None
    """The study's name; None for a run outside a study (``webssl train --out``)."""
    method: Literal["webdino", "clip", "mae"] = "webdino"
    """The training objective (see METHODS)."""
    model: str
    """Registry name of the backbone."""
    samples_seen: int = Field(ge=1)
    data_filter: str | None = None
    """The study's name of the data filter (the data_filter axis value)."""
    seed: int = Field(ge=0)
    axes: dict[str, Any] = {}
    """Every axis value of the cell, as the study's grid gives it."""
    data: CellData
    train: TrainConfig
    evals: list[EvalConfig] = []
    sources: dict[str, dict[str, Any]] = {}
    """The study's data sources (name -> {shards, synthesize}); evaluations resolve names here."""
    facts: CellFacts
    resolution: int | None = Field(None, ge=8)
    """Image side the cell trains and evaluates at (the ``resolution`` axis); None: its
    ``train.crops.global_size`` (every cell of a study without the axis)."""
    init_from: InitFrom | None = None
    """Set on an adaptation cell (resolution above the base's): the base cell it continues
    from. None: the cell trains from random initialisation."""

    @model_validator(mode="after")
    def _resolution_is_the_crop_size(self) -> CellSpec:
        # One number, stated twice: the trainer reads the crops, evaluation and the report the
        # resolution. A hand-edited file where they disagree would train one and report another.
        if self.resolution is not None and self.resolution != self.train.crops.global_size:
            raise ValueError(
                f"resolution {self.resolution} differs from train.crops.global_size "
                f"{self.train.crops.global_size}; they name the same image side"
            )
        if self.init_from is not None and (
            self.resolution is None or self.init_from.resolution >= self.resolution
        ):
            raise ValueError(
                "init_from: an adaptation cell needs a resolution above its base cell's "
                f"({self.init_from.resolution})"
            )
        return self

    @property
    def image_size(self) -> int:
        """The side the cell trains its global crops at and its evaluations resize images to."""
        return self.resolution or self.train.crops.global_size

    @property
    def train_samples(self) -> int:
        """Images this cell's own training stage sees: an adaptation's iterations x batch, else
        ``samples_seen`` (the axis value, which an adaptation cell shares with its base)."""
        if self.init_from is not None:
            return self.init_from.iterations * self.train.batch_size
        return self.samples_seen

    @classmethod
    def build(
        cls,
        *,
        uid: str,
        model: str,
        samples_seen: int,
        train: TrainConfig,
        data: CellData,
        seed: int | None = None,
        study: str | None = None,
        data_filter: str | None = None,
        axes: dict[str, Any] | None = None,
        evals: list[Any] | None = None,
        sources: dict[str, dict[str, Any]] | None = None,
        method: str = "webdino",
        resolution: int | None = None,
        init_from: InitFrom | None = None,
    ) -> CellSpec:
        """A cell with its derived facts computed (the one place a cell is priced). An
        adaptation cell (``init_from``) is priced for its own stage: its iterations at the
        token count of its resolution (the base cell prices the base training)."""
        iterations = init_from.iterations if init_from is not None else None
        return cls.model_validate(
            {
                "uid": uid,
                "study": study,
                "method": method,
                "model": model,
                "samples_seen": samples_seen,
                "data_filter": data_filter,
                "seed": train.seed if seed is None else seed,
                "axes": axes or {},
                "data": data,
                "train": train,
                "evals": evals or [],
                "sources": sources or {},
                "facts": derive_facts(model, samples_seen, train, method, iterations),
                "resolution": resolution,
                "init_from": init_from,
            }
        )

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"

    def eval_named(self, name: str) -> Any:
        """The evaluation whose stage name (its ``name``, else its task) is ``name``; None if absent."""
        for ev in self.evals:
            if ev.stage_name == name:
                return ev
        return None


def derive_facts(
    model: str,
    samples_seen: int,
    train: TrainConfig,
    method: str = "webdino",
    iterations: int | None = None,
) -> CellFacts:
    """Facts of a cell; ``iterations`` given (an adaptation stage) instead of derived from
    the samples."""
    from webssl_cli.specs.compute import flops_per_sample
    from webssl_cli.specs.registry import get_model

    spec = get_model(model)
    if iterations is None:
        iterations = max(1, -(-samples_seen // train.batch_size))
    per_sample = flops_per_sample(spec, train, method)
    return CellFacts(
        params=spec.backbone_params(),
        iterations=iterations,
        flops_per_sample=per_sample,
        flops=per_sample * iterations * train.batch_size,
    )


def migrate(obj: dict[str, Any]) -> dict[str, Any]:
    """A version-1 cell.json, as a version-2 dict (derived facts computed, filter key named)."""
    if obj.get("version") == CELL_VERSION:
        return obj
    out = dict(obj)
    out["version"] = CELL_VERSION
    out.setdefault("method", "webdino")
    data = dict(out.get("data") or {})
    if data.get("filter") in (None, "none"):
        data["filter"] = "none"
        data.setdefault("classifier", None)
    if "filter_key" not in data:
        fdir = data.get("filter_dir")
        data["filter_key"] = Path(fdir).name if fdir else None
    out["data"] = data
    if out.get("seed") is None and isinstance(out.get("train"), dict):
        out["seed"] = out["train"].get("seed", 0)
    if "facts" not in out:
        try:
            train = TrainConfig.model_validate(out.get("train"))
            out["facts"] = derive_facts(
                str(out["model"]), int(out["samples_seen"]), train, str(out["method"])
            )
        except (KeyError, TypeError, ValueError, ValidationError, UserError):
            pass  # validation of the migrated dict names the missing or bad field
    return out


def parse_cell(obj: Any, where: str) -> CellSpec:
    """Validate a cell.json's content; one-line UserError naming ``where`` and the field."""
    if not isinstance(obj, dict):
        raise UserError(f"{where}: not a JSON object; rewrite it with `webssl study run`")
    try:
        return CellSpec.model_validate(migrate(obj))
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "missing":
            msg = "missing"
        raise UserError(
            f"{where}: {field}: {msg}; the study layer writes cell.json "
            "(`webssl study run` rewrites it)"
        ) from None


def read_cell(path: Path) -> CellSpec:
    """Read and validate ``path`` (a cell.json); one-line UserError naming the file and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(
            f"{path}: missing; a cell directory holds the cell.json its study wrote"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: unreadable ({exc}); rewrite it with `webssl study run`") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); rewrite it with `webssl study run`"
        ) from None
    return parse_cell(obj, str(path))
