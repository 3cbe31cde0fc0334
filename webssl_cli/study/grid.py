"""Grid expansion: axes x zip groups, then exclude, then include; stable cell uids.

Semantics (documented in the README):
- Each axis is a list of values (a scalar is a one-value list). Axes in one ``zip`` group vary
  together (equal lengths); the cells are the product over zip groups and the other axes.
- ``exclude`` entries are partial cells (values may be lists): every matching cell is removed.
  An entry that matches no cell is an error (usually a typo).
- ``include`` entries are partial cells plus optional settings. Where their axis values match
  existing cells, the settings extend those cells; where nothing matches, the entry adds a new
  cell and must then name every axis.
- A cell's uid is a hash of its canonical resolved spec — model, samples seen, the data
  filter's definition, the resolved training config, seed and eval settings varied as axes —
  so the same study always gives the same uids, editing one value changes only the cells that
  hold it, and cosmetic fields (output path, cluster, comments) change nothing.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from webssl_cli.specs.cell import CellSpec

UID_LENGTH = 12  # 48 bits: collision odds ~1e-5 at 100,000 cells (and collisions are checked)
UID_VERSION = "webssl-cell-v1"


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def short_hash(obj: Any, n: int = UID_LENGTH) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:n]


@dataclass
class Cell:
    """One point of the study: the unit that trains, evaluates and reports."""

    uid: str
    axes: dict[str, Any]  # axis -> normalised value (model canonical, samples an int)
    model: str
    samples_seen: int
    data_filter: str
    seed: int
    train: dict[str, Any]  # resolved TrainConfig, JSON form
    eval_overrides: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # eval name -> field -> value
    extras: dict[str, Any] = field(default_factory=dict)  # settings set by include entries
    method: str = "webdino"  # the training objective (the method axis; webdino by default)
    # Builds the cell.json content on first use: planning 100,000 cells never needs it.
    spec_factory: Callable[[Cell], CellSpec] | None = field(default=None, repr=False)
    _spec: CellSpec | None = field(default=None, repr=False)
    # An adaptation cell (resolution above the base's, study/adapt.py): {"from": base uid,
    # "resolution", "base_resolution", "iterations"}; None for every other cell.
    adapt: dict[str, Any] | None = None

    @property
    def spec(self) -> CellSpec:
        """The resolved cell spec: what ``cell.json`` holds."""
        if self._spec is None:
            if self.spec_factory is None:
                raise ValueError(f"cell {self.uid}: no spec factory")
            self._spec = self.spec_factory(self)
        return self._spec

    @property
    def evals(self) -> list[str]:
        return [e.stage_name for e in self.spec.evals]


def factor_lengths(axes: dict[str, list[Any]], zips: list[list[str]]) -> list[int]:
    """Length of each factor of the product ``expand_axes`` forms (a zip group counts once)."""
    out: list[int] = []
    groups_seen: set[int] = set()
    for name, values in axes.items():
        gi = next((i for i, g in enumerate(zips) if name in g), None)
        if gi is not None:
            if gi in groups_seen:
                continue
            groups_seen.add(gi)
        out.append(len(values))
    return out


def expand_axes(axes: dict[str, list[Any]], zips: list[list[str]]) -> list[dict[str, Any]]:
    """Product over zip groups and free axes, in the order the axes are written."""
    zipped = {name for group in zips for name in group}
    factors: list[list[dict[str, Any]]] = []
    done_groups: set[int] = set()
    for name in axes:
        if name in zipped:
            gi = next(i for i, g in enumerate(zips) if name in g)
            if gi in done_groups:
                continue
            done_groups.add(gi)
            group = zips[gi]
            factors.append(
                [
                    dict(zip(group, values, strict=True))
                    for values in zip(*(axes[a] for a in group), strict=True)
                ]
            )
        else:
            factors.append([{name: v} for v in axes[name]])
    cells = []
    for combo in itertools.product(*factors):
        merged: dict[str, Any] = {}
        for part in combo:
            merged.update(part)
        cells.append(merged)
    return cells


def matches(cell_axes: dict[str, Any], partial: dict[str, Any]) -> bool:
    return all(cell_axes.get(k) == v for k, v in partial.items())


def expand_partial(entry: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """{'model': [a, b], 'samples_seen': [x]} -> [{model: a, samples_seen: x}, {model: b, ...}]."""
    keys = list(entry)
    return [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*(entry[k] for k in keys))
    ]


# Training settings that change how a run executes, not what it computes: they do not enter
# the uid, so checkpointing more often or moving to more GPUs never re-runs a finished cell.
OPERATIONAL_TRAIN_FIELDS = frozenset(
    {
        "metrics_every",
        "checkpoint_every",
        "keep_checkpoints",
        "num_workers",
        "threads",
        "micro_batch",
        "dist.strategy",
        "dist.activation_checkpointing",
        "dist.compile",
        "dist.packed_crops",
    }
)
# Bump when a TrainConfig default changes what a run computes (the recipe changed): every
# uid changes with it. Adding a field whose default keeps the old behaviour needs no bump.
RECIPE_VERSION = 2  # 2: iBOT head bottleneck 256 (was 384), as DINOv2's ViT-g


def flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def train_identity(train: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The settings of a resolved train config that define its result: those that differ
    from TrainConfig's defaults, less the operational ones."""
    flat, base = flatten(train), flatten(defaults)
    return {
        k: v
        for k, v in flat.items()
        if k not in OPERATIONAL_TRAIN_FIELDS and base.get(k, object()) != v
    }


def cell_uid(
    model: str,
    samples_seen: int,
    data_json: str,
    train_hash: str,
    evals_json: str,
    method: str = "webdino",
) -> str:
    """Hash of the cell's identity; ``data_json``/``evals_json`` are canonical JSON strings.
    The method enters for clip and mae only, so that every webdino uid stays what it was."""
    text = f"{UID_VERSION}|r{RECIPE_VERSION}|{model}|{samples_seen}|{data_json}|{train_hash}|{evals_json}"
    if method != "webdino":
        text += f"|method={method}"
    return hashlib.sha256(text.encode()).hexdigest()[:UID_LENGTH]
