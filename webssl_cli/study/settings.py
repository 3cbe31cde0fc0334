"""Checking and normalising what a study names: setting keys (``train.<field>``,
``eval.<name>.<field>``, axes), axis values (model aliases, sample counts, filter names,
seeds), and the dict helpers that layer settings (defaults < preset < study < cell < --set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from webssl_cli.errors import UserError, did_you_mean
from webssl_cli.specs.cell import METHODS
from webssl_cli.specs.evals import EVAL_CLASSES
from webssl_cli.specs.registry import resolve_model_name
from webssl_cli.specs.train import TrainConfig
from webssl_cli.specs.units import parse_count
from webssl_cli.study.schema import Study
from webssl_cli.study.yamlfile import Loc, SourceMap

REQUIRED_AXES = ("model", "samples_seen", "data_filter")
OPTIONAL_AXES = ("method", "seed", "resolution")
"""Axes a grid may add: ``method`` (default webdino), ``seed`` and ``resolution`` (the global
crop size); include entries may name them even when the grid does not."""


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{'crops.global_size': 64, 'dino_head': {'hidden': 8}} -> nested dicts."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = str(key).split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"{key}: conflicts with a value set for {p}")
        if isinstance(value, dict):
            node[parts[-1]] = deep_merge(node.get(parts[-1], {}), nest(value))
        else:
            node[parts[-1]] = value
    return out


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def field_path_ok(model: type[BaseModel], parts: list[str]) -> str | None:
    """None if ``parts`` names a (nested) field of ``model``; else an error message."""
    current: Any = model
    for i, part in enumerate(parts):
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return f"{'.'.join(parts[:i])} has no sub-fields"
        fields = current.model_fields
        if part not in fields:
            return f"unknown setting {'.'.join(parts)!r}{did_you_mean(part, list(fields))}; valid here: {', '.join(fields)}"
        current = fields[part].annotation
    return None


def resolve_path(pattern: str) -> str:
    if pattern.startswith("pipe:") or "://" in pattern:
        return pattern
    return str(Path(pattern).expanduser().absolute())


class Resolver:
    """Classifies and normalises axis names and values for one study."""

    def __init__(self, study: Study, smap: SourceMap) -> None:
        self.study = study
        self.smap = smap
        self.eval_names = {(e.name or e.task): e for e in study.evals}

    def check_key(self, key: str, loc: Loc, *, axis: bool) -> str:
        """Kind of a grid/include/override key: model, samples_seen, data_filter, seed, train, eval."""
        if key in REQUIRED_AXES or key in OPTIONAL_AXES:
            return key
        if key.startswith("train."):
            problem = field_path_ok(TrainConfig, key.split(".")[1:])
            if problem:
                raise self.smap.error(loc, problem)
            return "train"
        if key.startswith("eval."):
            parts = key.split(".")
            if len(parts) < 3 or parts[1] not in self.eval_names:
                names = ", ".join(self.eval_names) or "(no evals defined)"
                raise self.smap.error(
                    loc,
                    f"eval settings are written eval.<name>.<field> with a name from evals: {names}",
                )
            cls = EVAL_CLASSES[self.eval_names[parts[1]].task]
            problem = field_path_ok(cls, parts[2:])
            if problem:
                raise self.smap.error(loc, problem)
            return "eval"
        valid = [*REQUIRED_AXES, *OPTIONAL_AXES, "train.<field>", "eval.<name>.<field>"]
        hint = did_you_mean(key, [*REQUIRED_AXES, *OPTIONAL_AXES])
        what = "axis" if axis else "key"
        raise self.smap.error(loc, f"unknown {what} {key!r}{hint}; valid: {', '.join(valid)}")

    def value(self, kind: str, value: Any, loc: Loc) -> Any:
        if isinstance(value, dict | list):
            raise self.smap.error(loc, f"expected a single value, got a {type(value).__name__}")
        if kind == "model":
            try:
                return resolve_model_name(str(value))
            except UserError as exc:
                raise self.smap.error(loc, str(exc.message)) from None
        if kind == "samples_seen":
            try:
                return parse_count(value)
            except ValueError as exc:
                raise self.smap.error(loc, str(exc)) from None
        if kind == "data_filter":
            filters = list(self.study.data.filters)
            if str(value) not in filters:
                raise self.smap.error(
                    loc,
                    f"unknown data filter {value!r}{did_you_mean(str(value), filters)}; defined in data.filters: {', '.join(filters)}",
                )
            return str(value)
        if kind == "method":
            if value not in METHODS:
                raise self.smap.error(
                    loc,
                    f"unknown method {value!r}{did_you_mean(str(value), list(METHODS))}; valid: {', '.join(METHODS)}",
                )
            return str(value)
        if kind == "resolution":
            if isinstance(value, bool) or not isinstance(value, int) or not 8 <= value <= 4096:
                raise self.smap.error(
                    loc, f"a resolution is an image side in pixels (8 to 4096), got {value!r}"
                )
            return value
        if kind == "seed":
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.smap.error(loc, f"a seed is an integer, got {value!r}")
            if not 0 <= value < 2**31:
                raise self.smap.error(loc, f"a seed must be in [0, 2**31), got {value}")
            return value
        return value
