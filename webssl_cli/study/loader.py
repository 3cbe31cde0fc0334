"""Load a study file: parse safely, validate with located errors, expand into cells.

``load_study(path)`` is the one entry point. Precedence of settings, written once:
TrainConfig defaults < preset < study ``train`` < cell (grid axes, include settings) <
command line (``--set key=value``). The resolved spec of every cell is what ``cell.json`` holds.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from webssl_cli.errors import UserError, did_you_mean
from webssl_cli.specs.cell import CellData, CellSpec
from webssl_cli.specs.evals import KnnEval, LinearEval, VqaEval
from webssl_cli.specs.presets import PRESETS
from webssl_cli.specs.registry import resolve_model_name
from webssl_cli.specs.train import TrainConfig
from webssl_cli.specs.units import parse_count
from webssl_cli.study import grid as G
from webssl_cli.study.schema import Study
from webssl_cli.study.yamlfile import Loc, SourceMap, dotted, load_yaml, validation_error

FILTER_VERSION = 1
REQUIRED_AXES = ("model", "samples_seen", "data_filter")
_EVAL_CLASSES: dict[str, type[BaseModel]] = {"knn": KnnEval, "linear": LinearEval, "vqa": VqaEval}


@dataclass(frozen=True)
class FilterJob:
    """One distinct data-filter stage, shared by every cell that trains on its output."""

    key: str
    name: str  # the study's filter name (the data_filter axis value)
    source: str
    source_pattern: str
    filter: str
    classifier: str
    vlm_path: str | None
    out_dir: Path


@dataclass
class LoadedStudy:
    path: Path
    study: Study
    output_dir: Path
    cells: list[G.Cell]
    sources: dict[
        str, dict[str, Any]
    ]  # name -> {"shards": absolute pattern, "synthesize": {...} | None}
    filters: dict[str, FilterJob]  # key -> job, only filters that some cell uses and that filter
    evals: list[dict[str, Any]]  # the study's eval configs, JSON form
    source_map: SourceMap = field(repr=False)

    def cell_spec(self, cell: G.Cell) -> CellSpec:
        return cell.spec

    def filter_for(self, cell: G.Cell) -> FilterJob | None:
        return self.filter_for_name(cell.data_filter)

    def filter_for_name(self, data_filter: str) -> FilterJob | None:
        for job in self.filters.values():
            if job.name == data_filter:
                return job
        return None

    @property
    def eval_names(self) -> list[str]:
        return [e["name"] or e["task"] for e in self.evals]


# ---- helpers ------------------------------------------------------------------------------
def _nest(flat: dict[str, Any]) -> dict[str, Any]:
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
            node[parts[-1]] = _deep_merge(node.get(parts[-1], {}), _nest(value))
        else:
            node[parts[-1]] = value
    return out


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _field_path_ok(model: type[BaseModel], parts: list[str]) -> str | None:
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


def _resolve_path(pattern: str) -> str:
    if pattern.startswith("pipe:") or "://" in pattern:
        return pattern
    return str(Path(pattern).expanduser().absolute())


class _Resolver:
    """Classifies and normalises axis names and values for one study."""

    def __init__(self, study: Study, smap: SourceMap) -> None:
        self.study = study
        self.smap = smap
        self.eval_names = {(e.name or e.task): e for e in study.evals}

    def check_key(self, key: str, loc: Loc, *, axis: bool) -> str:
        """Kind of a grid/include/override key: model, samples_seen, data_filter, seed, train, eval."""
        if key in REQUIRED_AXES or key == "seed":
            return key
        if key.startswith("train."):
            problem = _field_path_ok(TrainConfig, key.split(".")[1:])
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
            cls = _EVAL_CLASSES[self.eval_names[parts[1]].task]
            problem = _field_path_ok(cls, parts[2:])
            if problem:
                raise self.smap.error(loc, problem)
            return "eval"
        valid = [*REQUIRED_AXES, "seed", "train.<field>", "eval.<name>.<field>"]
        hint = did_you_mean(key, [*REQUIRED_AXES, "seed"])
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
        if kind == "seed":
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.smap.error(loc, f"a seed is an integer, got {value!r}")
            if not 0 <= value < 2**31:
                raise self.smap.error(loc, f"a seed must be in [0, 2**31), got {value}")
            return value
        return value


# ---- the loader ---------------------------------------------------------------------------
def load_study(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> LoadedStudy:
    """Parse, validate and expand the study at ``path``; UserError on any bad input."""
    path = Path(path)
    data, smap = load_yaml(path, what="study file")
    try:
        study = Study.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, smap, model=Study) from None
    res = _Resolver(study, smap)

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

    output_dir = Path(study.output_dir or f"runs/{study.name}").expanduser().absolute()

    # Study-level training settings (preset < study.train), validated once.
    try:
        study_train = _nest(study.train)
    except ValueError as exc:
        raise smap.error(("train",), str(exc)) from None
    base_train = _deep_merge(copy.deepcopy(PRESETS[study.preset]), study_train)
    base_train.setdefault("seed", study.seed)
    try:
        TrainConfig.model_validate(base_train)
    except ValidationError as exc:
        raise validation_error(exc, smap, prefix=("train",), model=TrainConfig) from None

    # Command-line overrides: key=value with YAML values.
    cli: dict[str, Any] = {}
    cli_map = SourceMap(Path("--set"), {})
    cli_res = _Resolver(study, cli_map)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected key=value, e.g. --set train.batch_size=128")
        kind = cli_res.check_key(key.strip(), (key,), axis=False)
        if kind in REQUIRED_AXES:
            raise UserError(
                f"--set {key}: axes are set in the study's grid; --set takes train.*, eval.<name>.* or seed"
            )
        try:
            cli[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise UserError(f"--set {item!r}: the value is not valid YAML") from None

    # Axes.
    if not study.grid:
        raise smap.error(("grid",), "no axes; give at least model, samples_seen and data_filter")
    axes: dict[str, list[Any]] = {}
    kinds: dict[str, str] = {}
    for axis, raw_values in study.grid.items():
        kinds[axis] = res.check_key(axis, ("grid", axis), axis=True)
        values = raw_values if isinstance(raw_values, list) else [raw_values]
        if not values:
            raise smap.error(("grid", axis), "empty axis; give at least one value")
        normal = [res.value(kinds[axis], v, ("grid", axis, i)) for i, v in enumerate(values)]
        seen: dict[str, int] = {}  # canonical form -> first index (linear in the axis length)
        for j, v in enumerate(normal):
            first = seen.setdefault(G.canonical_json(v), j)
            if first != j:
                raise smap.error(
                    ("grid", axis, j),
                    f"duplicate value {values[j]!r} (same as [{first}]); give each value once",
                )
        axes[axis] = normal
    for required in REQUIRED_AXES:
        if required not in axes:
            raise smap.error(
                ("grid",), f"missing axis {required!r}; the grid needs {', '.join(REQUIRED_AXES)}"
            )

    zips: list[list[str]] = []
    in_zip: dict[str, int] = {}
    for gi, group in enumerate(study.zip):
        for j, name in enumerate(group):
            if name not in axes:
                raise smap.error(
                    ("zip", gi, j), f"{name!r} is not a grid axis{did_you_mean(name, list(axes))}"
                )
            if name in in_zip:
                raise smap.error(
                    ("zip", gi, j), f"axis {name!r} is already in zip group {in_zip[name]}"
                )
            in_zip[name] = gi
        lengths = {name: len(axes[name]) for name in group}
        if len(set(lengths.values())) > 1:
            detail = ", ".join(f"{k} has {v}" for k, v in lengths.items())
            raise smap.error(("zip", gi), f"axes in a zip group need equal lengths: {detail}")
        zips.append(list(group))

    # The cap is checked on the product of the axis lengths, before any cell is built.
    n_cells = 1
    for length in G.factor_lengths(axes, zips):
        n_cells *= length
    for entry in study.include:  # an include may add the product of its value lists
        added = 1
        for value in entry.values():
            added *= len(value) if isinstance(value, list) else 1
        n_cells += added
    if n_cells > study.max_cells:
        raise smap.error(
            ("grid",),
            f"expands to {n_cells} cells, more than max_cells ({study.max_cells}); "
            "shrink the grid or set max_cells",
        )
    combos = G.expand_axes(axes, zips)

    def partial(
        entry: dict[str, Any], loc: Loc, *, settings_ok: bool
    ) -> tuple[dict[str, list[Any]], dict[str, Any]]:
        axis_part: dict[str, list[Any]] = {}
        settings: dict[str, Any] = {}
        if not entry:
            raise smap.error(loc, "empty entry; name at least one axis value")
        for key, value in entry.items():
            kind = res.check_key(str(key), (*loc, key), axis=True)
            if key in axes or key in REQUIRED_AXES:
                values = value if isinstance(value, list) else [value]
                if not values:
                    raise smap.error((*loc, key), "empty list; give at least one value")
                axis_part[key] = [
                    res.value(kind, v, (*loc, key, i) if isinstance(value, list) else (*loc, key))
                    for i, v in enumerate(values)
                ]
            elif settings_ok:
                settings[key] = value
            else:
                raise smap.error(
                    (*loc, key),
                    f"{key!r} is not a grid axis; exclude entries match axes: {', '.join(axes)}",
                )
        return axis_part, settings

    for i, entry in enumerate(study.exclude):
        axis_part, _ = partial(entry, ("exclude", i), settings_ok=False)
        before = len(combos)
        for combo in G.expand_partial(axis_part):
            combos = [c for c in combos if not G.matches(c, combo)]
        if len(combos) == before:
            raise smap.error(("exclude", i), "matches no cell of the grid; check its values")

    cells_axes: list[dict[str, Any]] = list(combos)
    cell_extras: list[dict[str, Any]] = [{} for _ in combos]
    cell_origin: list[Loc] = [("grid",) for _ in combos]
    for i, entry in enumerate(study.include):
        axis_part, settings = partial(entry, ("include", i), settings_ok=True)
        for combo in G.expand_partial(axis_part):
            hit = [k for k, c in enumerate(cells_axes) if G.matches(c, combo)]
            if hit and settings:
                for k in hit:
                    cell_extras[k] = {**cell_extras[k], **settings}
                    cell_origin[k] = ("include", i)
            elif hit:
                raise smap.error(
                    ("include", i),
                    "duplicate cell: it is already in the grid and the entry adds no setting",
                )
            else:
                missing = [a for a in axes if a not in combo]
                if missing:
                    raise smap.error(
                        ("include", i),
                        f"matches no cell; to add a cell give every axis (missing: {', '.join(missing)})",
                    )
                cells_axes.append(dict(combo))
                cell_extras.append(dict(settings))
                cell_origin.append(("include", i))

    # Sources and filters, resolved.
    sources: dict[str, dict[str, Any]] = {}
    for name, src in study.data.sources.items():
        if src.shards is not None:
            pattern = _resolve_path(src.shards)
        else:
            assert src.synthesize is not None  # the schema guarantees one of the two
            last = -(-src.synthesize.n // src.synthesize.shard_size) - 1
            pattern = str(output_dir / "data" / name / f"shard-{{000000..{last:06d}}}.tar")
        sources[name] = {
            "shards": pattern,
            "synthesize": src.synthesize.model_dump(mode="json") if src.synthesize else None,
        }

    filter_defs: dict[str, dict[str, Any]] = {}
    for name, flt in study.data.filters.items():
        src = study.data.sources[flt.source]
        filter_defs[name] = {
            "source": flt.source,
            "source_def": src.shards
            if src.shards is not None
            else {"synthesize": sources[flt.source]["synthesize"]},
            "filter": flt.filter,
            "classifier": flt.classifier if flt.filter != "none" else None,
            "vlm_path": flt.vlm_path if flt.filter != "none" and flt.classifier == "vlm" else None,
        }
    filters: dict[str, FilterJob] = {}
    job_of_filter: dict[str, FilterJob | None] = {}
    used = {a["data_filter"] for a in cells_axes}
    for name, fdef in filter_defs.items():
        if fdef["filter"] == "none" or name not in used:
            job_of_filter[name] = None
            continue
        key = f"{fdef['source']}-{fdef['filter']}-{fdef['classifier']}-v{FILTER_VERSION}-{G.short_hash(fdef, 6)}"
        job = FilterJob(
            key,
            name,
            fdef["source"],
            sources[fdef["source"]]["shards"],
            fdef["filter"],
            fdef["classifier"],
            fdef["vlm_path"],
            output_dir / "filters" / key,
        )
        filters.setdefault(key, job)
        job_of_filter[name] = job

    # Resolve every cell: train config (cached per distinct override set), evals, uid, spec.
    eval_base = [e.model_dump(mode="json") for e in study.evals]
    filter_json = {name: G.canonical_json(fdef) for name, fdef in filter_defs.items()}
    setting_axes = [k for k in axes if kinds[k] in ("train", "eval", "seed")]
    train_cache: dict[Any, tuple[dict[str, Any], str]] = {}
    default_train = TrainConfig().model_dump(mode="json")
    cells: list[G.Cell] = []
    by_uid: dict[str, int] = {}
    loaded = LoadedStudy(
        path.absolute(), study, output_dir, cells, sources, filters, eval_base, smap
    )

    def factory(cell: G.Cell) -> CellSpec:
        return _cell_spec(loaded, cell, filter_defs, job_of_filter, smap)

    # Per distinct setting values (train.*, eval.*, seed): the resolved train dict, its hash and
    # the eval overrides. Most cells share one, so a 100,000-cell grid resolves in about a second.
    resolved: dict[Any, tuple[dict[str, Any], str, dict[str, dict[str, Any]], str]] = {}

    def resolve(
        idx: int, layered: dict[str, Any]
    ) -> tuple[dict[str, Any], str, dict[str, dict[str, Any]], str]:
        cax, extras = cells_axes[idx], cell_extras[idx]
        train_over = {k[6:]: v for k, v in layered.items() if k.startswith("train.")}
        if "seed" in layered:
            train_over["seed"] = layered["seed"]
        tkey = G.canonical_json(train_over)
        cached = train_cache.get(tkey)
        if cached is None:
            merged = _deep_merge(base_train, _nest(train_over)) if train_over else base_train
            try:
                cfg = TrainConfig.model_validate(merged)
            except ValidationError as exc:
                err = exc.errors(include_url=False)[0]
                key = "train." + ".".join(str(p) for p in err["loc"])
                origin: Loc = (
                    ("--set", key)
                    if key in cli
                    else cell_origin[idx]
                    if key in extras
                    else ("grid", key)
                    if key in cax
                    else ("train",)
                )
                if origin[0] == "--set":
                    raise UserError(f"--set {key}: {err['msg']}") from None
                raise smap.error(origin, f"{key}: {err['msg']}") from None
            tdict = cfg.model_dump(mode="json")
            cached = train_cache[tkey] = (
                tdict,
                G.short_hash(G.train_identity(tdict, default_train), 16),
            )
        eval_over: dict[str, dict[str, Any]] = {}
        for k, v in layered.items():
            if k.startswith("eval."):
                _, ename, *rest = k.split(".")
                eval_over.setdefault(ename, {})[".".join(rest)] = v
        return cached[0], cached[1], eval_over, G.canonical_json(eval_over) if eval_over else "{}"

    for idx, cax in enumerate(cells_axes):
        extras = cell_extras[idx]
        if extras or cli:
            layered = {k: cax[k] for k in setting_axes}
            layered.update(extras)
            layered.update(cli)
            tdict, thash, eval_over, eval_json = resolve(idx, layered)
        else:
            try:
                skey: Any = tuple(cax[k] for k in setting_axes)
                hash(skey)
            except TypeError:  # list or dict values
                skey = G.canonical_json([cax[k] for k in setting_axes])
            shared = resolved.get(skey)
            if shared is None:
                shared = resolved[skey] = resolve(idx, {k: cax[k] for k in setting_axes})
            tdict, thash, eval_over, eval_json = shared
        uid = G.cell_uid(
            cax["model"], cax["samples_seen"], filter_json[cax["data_filter"]], thash, eval_json
        )
        if uid in by_uid:
            other = cells[by_uid[uid]].axes
            raise smap.error(
                cell_origin[idx], f"duplicate cells: {cax} resolves to the same cell as {other}"
            )
        by_uid[uid] = len(cells)
        cells.append(
            G.Cell(
                uid,
                cax,
                cax["model"],
                cax["samples_seen"],
                cax["data_filter"],
                tdict["seed"],
                tdict,
                eval_over,
                extras,
                factory,
            )
        )
    return loaded


def _cell_spec(
    loaded: LoadedStudy,
    cell: G.Cell,
    filter_defs: dict[str, dict[str, Any]],
    job_of_filter: dict[str, FilterJob | None],
    smap: SourceMap,
) -> CellSpec:
    fdef = filter_defs[cell.data_filter]
    job = job_of_filter[cell.data_filter]
    evals = []
    for ev in loaded.evals:
        name = ev["name"] or ev["task"]
        over = cell.eval_overrides.get(name)
        if over:
            merged = _deep_merge(ev, _nest(over))
            try:
                ev = _EVAL_CLASSES[ev["task"]].model_validate(merged).model_dump(mode="json")
            except ValidationError as exc:
                err = exc.errors(include_url=False)[0]
                raise smap.error(
                    ("grid",), f"eval.{name}.{dotted(tuple(err['loc']))}: {err['msg']}"
                ) from None
        evals.append(ev)
    return CellSpec.build(
        uid=cell.uid,
        study=loaded.study.name,
        axes=cell.axes,
        model=cell.model,
        samples_seen=cell.samples_seen,
        data_filter=cell.data_filter,
        data=CellData(
            source=fdef["source"],
            shards=loaded.sources[fdef["source"]]["shards"],
            filter=fdef["filter"],
            classifier=fdef["classifier"],
            vlm_path=fdef["vlm_path"],
            filter_key=job.key if job else None,
            filter_dir=str(job.out_dir) if job else None,
        ),
        train=TrainConfig.model_validate(cell.train),
        evals=evals,
        sources=loaded.sources,
        seed=cell.seed,
    )
