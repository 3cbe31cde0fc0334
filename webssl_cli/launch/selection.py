"""Which cells `--only` selects: a uid, a uid prefix or AXIS=VALUE (units and model aliases understood)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from webssl_cli.errors import UserError, did_you_mean
from webssl_cli.launch.dag import Node
from webssl_cli.rundir import CellDir


def select_nodes(loaded: Any, nodes: list[Node], only: list[str]) -> set[str]:
    """Node keys selected by --only (uid, uid prefix or axis=value; all when empty)."""
    if not only:
        return {n.key for n in nodes}
    cells = loaded.cells
    chosen: set[str] = set()
    for item in only:
        if "=" in item:
            axis, _, value = item.partition("=")
            axis = axis.strip()
            axes = sorted({a for c in cells for a in c.axes})
            if axis not in axes:
                raise UserError(
                    f"--only {item}: unknown axis {axis!r}{did_you_mean(axis, axes)}; axes: {', '.join(axes)}"
                )
            hit = {c.uid for c in cells if axis_match(c.axes.get(axis), value.strip())}
        else:
            hit = {c.uid for c in cells if c.uid.startswith(item.strip())}
        if not hit:
            raise UserError(
                f"--only {item}: matches no cell of the study (give a uid, a uid prefix or axis=value)"
            )
        chosen |= hit
    keys = {n.key for n in nodes if n.cell in chosen}
    # what the chosen stages need: the filters they train on, an adaptation's base cell (and its
    # filter); nodes come in topological order, so one pass from the end closes the set
    for n in reversed(nodes):
        if n.key in keys:
            keys.update(n.deps)
    return {k for k in keys if k in {n.key for n in nodes}}


def axis_match(value: Any, text: str) -> bool:
    if str(value) == text:
        return True
    try:
        from webssl_cli.specs.units import parse_count

        return bool(value == parse_count(text))
    except Exception:
        pass
    try:
        from webssl_cli.specs.registry import resolve_model_name

        return bool(value == resolve_model_name(text))
    except Exception:
        return False


def select_uids(study_dir: Path, uids: list[str], only: list[str]) -> set[str]:
    chosen: set[str] = set()
    for item in only:
        if "=" in item:
            axis, _, value = item.partition("=")
            hit = set()
            for uid in uids:
                try:
                    axes = CellDir.of(study_dir, uid).read_cell().axes
                except UserError:  # unreadable cell.json: it matches no axis value
                    continue
                if axis.strip() in axes and axis_match(axes[axis.strip()], value.strip()):
                    hit.add(uid)
        else:
            hit = {u for u in uids if u.startswith(item.strip())}
        if not hit:
            raise UserError(
                f"--only {item}: matches no cell of the study (give a uid, a uid prefix or axis=value)"
            )
        chosen |= hit
    return chosen
