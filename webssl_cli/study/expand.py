"""From a study's grid to its list of cells: axes (values checked and normalised), zip
groups, ``exclude`` and ``include`` entries (semantics in ``grid.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from webssl_cli.errors import did_you_mean
from webssl_cli.study import grid as G
from webssl_cli.study.schema import Study
from webssl_cli.study.settings import OPTIONAL_AXES, REQUIRED_AXES, Resolver
from webssl_cli.study.yamlfile import Loc, SourceMap


@dataclass
class Expansion:
    """The cells of a grid, each with the settings its include entries add and where it came
    from (for errors), and the axes with the kind of each (model, train, eval, ...)."""

    axes: dict[str, list[Any]]
    kinds: dict[str, str]
    cells: list[dict[str, Any]]
    extras: list[dict[str, Any]]
    origins: list[Loc]


def read_axes(
    study: Study, res: Resolver, smap: SourceMap
) -> tuple[dict[str, list[Any]], dict[str, str]]:
    """Every grid axis with its values normalised, and the kind of each axis."""
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
    return axes, kinds


def zip_groups(study: Study, axes: dict[str, list[Any]], smap: SourceMap) -> list[list[str]]:
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
    return zips


def partial_entry(
    entry: dict[str, Any],
    loc: Loc,
    axes: dict[str, list[Any]],
    res: Resolver,
    smap: SourceMap,
    *,
    settings_ok: bool,
) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """An exclude or include entry: its axis values (each a list) and, for include entries,
    the settings it adds."""
    axis_part: dict[str, list[Any]] = {}
    settings: dict[str, Any] = {}
    if not entry:
        raise smap.error(loc, "empty entry; name at least one axis value")
    for key, value in entry.items():
        kind = res.check_key(str(key), (*loc, key), axis=True)
        if key in axes or key in REQUIRED_AXES or key in OPTIONAL_AXES:
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


def expand_grid(study: Study, res: Resolver, smap: SourceMap) -> Expansion:
    """The cells of the study's grid after zip, exclude and include."""
    axes, kinds = read_axes(study, res, smap)
    if "method" not in axes and any("method" in e for e in [*study.include, *study.exclude]):
        # An entry names a method: the grid's own cells are webdino's (the default).
        axes["method"], kinds["method"] = ["webdino"], "method"
    zips = zip_groups(study, axes, smap)
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

    for i, entry in enumerate(study.exclude):
        axis_part, _ = partial_entry(entry, ("exclude", i), axes, res, smap, settings_ok=False)
        before = len(combos)
        for combo in G.expand_partial(axis_part):
            combos = [c for c in combos if not G.matches(c, combo)]
        if len(combos) == before:
            raise smap.error(("exclude", i), "matches no cell of the grid; check its values")

    cells_axes: list[dict[str, Any]] = list(combos)
    cell_extras: list[dict[str, Any]] = [{} for _ in combos]
    cell_origin: list[Loc] = [("grid",) for _ in combos]
    for i, entry in enumerate(study.include):
        axis_part, settings = partial_entry(
            entry, ("include", i), axes, res, smap, settings_ok=True
        )
        for combo in G.expand_partial(axis_part):
            if (
                "method" in axes and not settings
            ):  # an entry that adds cells: webdino's unless named
                combo.setdefault("method", "webdino")
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
                if "method" in axes:
                    combo.setdefault("method", "webdino")
                missing = [a for a in axes if a not in combo]
                if missing:
                    raise smap.error(
                        ("include", i),
                        f"matches no cell; to add a cell give every axis (missing: {', '.join(missing)})",
                    )
                cells_axes.append(dict(combo))
                cell_extras.append(dict(settings))
                cell_origin.append(("include", i))
    return Expansion(axes, kinds, cells_axes, cell_extras, cell_origin)
