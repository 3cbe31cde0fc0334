"""Resolve every cell of an expanded grid: its training config (layered and validated, cached
per distinct setting values), its eval overrides, its uid, and (on first use) its CellSpec."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from webssl_cli.errors import UserError
from webssl_cli.specs.cell import CellData, CellSpec, InitFrom
from webssl_cli.specs.evals import CLIP_ONLY_TASKS
from webssl_cli.specs.train import TrainConfig
from webssl_cli.study import grid as G
from webssl_cli.study.adapt import Adapter, check_bases
from webssl_cli.study.expand import Expansion
from webssl_cli.study.loaded import FilterJob, LoadedStudy
from webssl_cli.study.settings import EVAL_CLASSES, deep_merge, nest
from webssl_cli.study.yamlfile import Loc, SourceMap, dotted

Resolved = tuple[dict[str, Any], str, dict[str, dict[str, Any]], str]
"""(train config as JSON, its identity hash, eval overrides by eval name, their canonical JSON)."""


class SettingsResolver:
    """The settings of a cell from its layered values (train.*, eval.*, seed): the train
    config validated against TrainConfig (errors point at the grid, include entry, --set or
    the study's train block that set the bad value), cached per distinct train override."""

    def __init__(
        self,
        base_train: dict[str, dict[str, Any]],
        cli: dict[str, Any],
        exp: Expansion,
        smap: SourceMap,
    ) -> None:
        self.base_train = base_train  # by method: the preset for it < the study's train block
        self.cli = cli
        self.exp = exp
        self.smap = smap
        self.train_cache: dict[Any, tuple[dict[str, Any], str]] = {}
        self.default_train = TrainConfig().model_dump(mode="json")

    def resolve(self, idx: int, layered: dict[str, Any]) -> Resolved:
        cax, extras = self.exp.cells[idx], self.exp.extras[idx]
        method = str(layered.get("method", "webdino"))
        base_train = self.base_train[method]
        train_over = {k[6:]: v for k, v in layered.items() if k.startswith("train.")}
        if "seed" in layered:
            train_over["seed"] = layered["seed"]
        tkey = G.canonical_json([method, train_over])
        cached = self.train_cache.get(tkey)
        if cached is None:
            merged = deep_merge(base_train, nest(train_over)) if train_over else base_train
            try:
                cfg = TrainConfig.model_validate(merged)
            except ValidationError as exc:
                err = exc.errors(include_url=False)[0]
                key = "train." + ".".join(str(p) for p in err["loc"])
                origin: Loc = (
                    ("--set", key)
                    if key in self.cli
                    else self.exp.origins[idx]
                    if key in extras
                    else ("grid", key)
                    if key in cax
                    else ("train",)
                )
                if origin[0] == "--set":
                    raise UserError(f"--set {key}: {err['msg']}") from None
                raise self.smap.error(origin, f"{key}: {err['msg']}") from None
            tdict = cfg.model_dump(mode="json")
            cached = self.train_cache[tkey] = (
                tdict,
                G.short_hash(G.train_identity(tdict, self.default_train), 16),
            )
        eval_over: dict[str, dict[str, Any]] = {}
        for k, v in layered.items():
            if k.startswith("eval."):
                _, ename, *rest = k.split(".")
                eval_over.setdefault(ename, {})[".".join(rest)] = v
        return cached[0], cached[1], eval_over, G.canonical_json(eval_over) if eval_over else "{}"


def resolve_cells(
    loaded: LoadedStudy,
    exp: Expansion,
    settings: SettingsResolver,
    filter_defs: dict[str, dict[str, Any]],
    job_of_filter: dict[str, FilterJob | None],
    adapter: Adapter | None = None,
) -> None:
    """Append every cell of ``exp`` to ``loaded.cells``; duplicate uids are an error. With an
    ``adapter``, cells above their base resolution become adaptation cells (study/adapt.py)."""
    smap = loaded.source_map
    cells = loaded.cells
    filter_json = {name: G.canonical_json(fdef) for name, fdef in filter_defs.items()}
    setting_axes = [k for k in exp.axes if exp.kinds[k] in ("train", "eval", "seed", "method")]
    by_uid: dict[str, int] = {}
    origins: dict[str, Loc] = {}

    def factory(cell: G.Cell) -> CellSpec:
        return cell_spec(loaded, cell, filter_defs, job_of_filter, smap)

    # Per distinct setting values (train.*, eval.*, seed): the resolved train dict, its hash and
    # the eval overrides. Most cells share one, so a 100,000-cell grid resolves in about a second.
    resolved: dict[Any, Resolved] = {}
    for idx, cax in enumerate(exp.cells):
        extras = exp.extras[idx]
        if extras or settings.cli:
            layered = {k: cax[k] for k in setting_axes}
            layered.update(extras)
            layered.update(settings.cli)
            tdict, thash, eval_over, eval_json = settings.resolve(idx, layered)
        else:
            try:
                skey: Any = tuple(cax[k] for k in setting_axes)
                hash(skey)
            except TypeError:  # list or dict values
                skey = G.canonical_json([cax[k] for k in setting_axes])
            shared = resolved.get(skey)
            if shared is None:
                shared = resolved[skey] = settings.resolve(idx, {k: cax[k] for k in setting_axes})
            tdict, thash, eval_over, eval_json = shared
        method = str(cax.get("method", "webdino"))
        uid = G.cell_uid(
            cax["model"],
            cax["samples_seen"],
            filter_json[cax["data_filter"]],
            thash,
            eval_json,
            method,
        )
        adapt = None
        if adapter is not None and "resolution" in cax:
            uid, tdict, adapt = adapter.resolve(cax, uid, tdict, exp.origins[idx])
            origins[uid] = exp.origins[idx]
        if uid in by_uid:
            other = cells[by_uid[uid]].axes
            raise smap.error(
                exp.origins[idx], f"duplicate cells: {cax} resolves to the same cell as {other}"
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
                method,
                factory,
                adapt=adapt,
            )
        )
    if adapter is not None:
        check_bases(cells, origins, smap)


def cell_spec(
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
        if ev["task"] in CLIP_ONLY_TASKS and cell.method != "clip":
            continue  # zero-shot and retrieval need a text tower: CLIP cells only
        name = ev["name"] or ev["task"]
        over = cell.eval_overrides.get(name)
        if over:
            merged = deep_merge(ev, nest(over))
            try:
                ev = EVAL_CLASSES[ev["task"]].model_validate(merged).model_dump(mode="json")
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
        method=cell.method,
        resolution=cell.axes.get("resolution"),
        init_from=InitFrom(
            uid=cell.adapt["from"],
            resolution=cell.adapt["base_resolution"],
            iterations=cell.adapt["iterations"],
        )
        if cell.adapt
        else None,
    )
