"""Load a study file: parse safely, validate with located errors, expand into cells.

``load_study(path)`` is the one entry point. Precedence of settings, written once:
TrainConfig defaults < preset (with the cell's method's settings for it) < study ``train`` <
cell (grid axes, include settings) < command line (``--set key=value``). The resolved spec of every cell is what ``cell.json`` holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from webssl_cli.errors import UserError, did_you_mean
from webssl_cli.specs.presets import PRESETS, preset_settings
from webssl_cli.specs.train import TrainConfig
from webssl_cli.study.adapt import Adapter
from webssl_cli.study.cells import SettingsResolver, resolve_cells
from webssl_cli.study.expand import expand_grid
from webssl_cli.study.filters import FILTER_VERSION, filter_stages, resolve_sources
from webssl_cli.study.loaded import FilterJob, LoadedStudy
from webssl_cli.study.schema import Study
from webssl_cli.study.settings import REQUIRED_AXES, Resolver, deep_merge, nest
from webssl_cli.study.yamlfile import SourceMap, load_yaml, validation_error

__all__ = ["FILTER_VERSION", "REQUIRED_AXES", "FilterJob", "LoadedStudy", "load_study"]


def load_study(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> LoadedStudy:
    """Parse, validate and expand the study at ``path``; UserError on any bad input."""
    path = Path(path)
    data, smap = load_yaml(path, what="study file")
    try:
        study = Study.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, smap, model=Study) from None
    check_references(study, smap)
    output_dir = Path(study.output_dir or f"runs/{study.name}").expanduser().absolute()
    cli = cli_overrides(study, overrides)
    exp = expand_grid(study, Resolver(study, smap), smap)
    methods = {str(a.get("method", "webdino")) for a in exp.cells}
    base_train = {m: study_train(study, smap, m) for m in sorted(methods)}
    sources = resolve_sources(study, output_dir)
    used = {a["data_filter"] for a in exp.cells}
    filter_defs, filters, job_of_filter = filter_stages(study, sources, used, output_dir)
    eval_base = [e.model_dump(mode="json") for e in study.evals]
    loaded = LoadedStudy(path.absolute(), study, output_dir, [], sources, filters, eval_base, smap)
    settings = SettingsResolver(base_train, cli, exp, smap)
    resolve_cells(loaded, exp, settings, filter_defs, job_of_filter, Adapter(study, smap))
    return loaded


def check_references(study: Study, smap: SourceMap) -> None:
    """Names the study refers to exist: the preset, each filter's source, eval names unique."""
    if study.preset not in PRESETS:
        raise smap.error(
            ("preset",),
            f"unknown preset {study.preset!r}{did_you_mean(study.preset, list(PRESETS))}; valid: {', '.join(PRESETS)}",
        )
    for name, flt in study.data.filters.items():
        if flt.source not in study.data.sources:
            srcs = list(study.data.sources)
            raise smap.error(
                ("data", "filters", name, "source"),
                f"unknown source {flt.source!r}{did_you_mean(flt.source, srcs)}; defined: {', '.join(srcs)}",
            )
        if flt.classifier == "vlm" and flt.filter != "none" and not flt.vlm_path:
            raise smap.error(
                ("data", "filters", name, "vlm_path"),
                "classifier 'vlm' needs vlm_path: a local model directory",
            )
    seen_evals: set[str] = set()
    for i, ev in enumerate(study.evals):
        name = ev.name or ev.task
        if name in seen_evals:
            raise smap.error(
                ("evals", i), f"two evaluations are named {name!r}; give one a distinct `name`"
            )
        seen_evals.add(name)


def study_train(study: Study, smap: SourceMap, method: str = "webdino") -> dict[str, Any]:
    """The study-level training settings of ``method``'s cells (the preset for the method <
    study.train), validated once."""
    try:
        train = nest(study.train)
    except ValueError as exc:
        raise smap.error(("train",), str(exc)) from None
    base = deep_merge(preset_settings(study.preset, method), train)
    base.setdefault("seed", study.seed)
    try:
        TrainConfig.model_validate(base)
    except ValidationError as exc:
        raise validation_error(exc, smap, prefix=("train",), model=TrainConfig) from None
    return base


def cli_overrides(study: Study, overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``--set key=value`` items (YAML values) by key; axes cannot be set this way."""
    cli: dict[str, Any] = {}
    cli_res = Resolver(study, SourceMap(Path("--set"), {}))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected key=value, e.g. --set train.batch_size=128")
        kind = cli_res.check_key(key.strip(), (key,), axis=False)
        if kind in REQUIRED_AXES or kind == "resolution":
            raise UserError(
                f"--set {key}: axes are set in the study's grid; --set takes train.*, eval.<name>.* or seed"
            )
        try:
            cli[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise UserError(f"--set {item!r}: the value is not valid YAML") from None
    return cli
