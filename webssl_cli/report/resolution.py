"""Resolution as a curve family: where a study varies ``resolution``, each base cell and the
cells adapted from it form one curve of score against image side.

A cell's resolution is its cell.json ``resolution`` (the axis), else its global crop size; an
adaptation cell belongs to the curve of the base cell it continues from (``init_from``), so a
curve is one model, budget, data filter and seed seen at every resolution it was adapted to.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from webssl_cli.report import plots
from webssl_cli.report.tables import Table, fmt_count, fmt_est


def resolutions(study_dir: Path, study: str) -> dict[str, tuple[int, str]]:
    """uid -> (resolution, uid of the curve's base cell) for every cell of ``study``."""
    from webssl_cli.results import queries

    out: dict[str, tuple[int, str]] = {}
    with queries.connect(study_dir) as con:
        rows = con.execute("SELECT uid, spec FROM cell_specs WHERE study = ?", [study]).fetchall()
    for uid, text in rows:
        spec = json.loads(text) if isinstance(text, str) else (text or {})
        size = spec.get("resolution") or ((spec.get("train") or {}).get("crops") or {}).get(
            "global_size"
        )
        if size is None:
            continue
        base = (spec.get("init_from") or {}).get("uid") or uid
        out[uid] = (int(size), str(base))
    return out


def resolution_blocks(
    study_dir: Path, study: str, main: Any, out_dir: Path, est: dict[Any, Any]
) -> list[Any]:
    """The report's Resolution section (a table and a plot); nothing where every cell of the
    study has the same resolution. ``main``: the study's encoder scores (%), ``est``:
    (uid, label) -> Estimate."""
    import polars as pl

    res = resolutions(study_dir, study)
    sizes = sorted({r for r, _ in res.values()})
    labels = plots.headline_labels(main)
    if len(sizes) < 2 or not labels:
        return []
    s = main.filter(pl.col("uid").is_in(list(res)) & pl.col("label").is_in(labels))
    value = {(r["uid"], r["label"]): r["value"] for r in s.iter_rows(named=True)}
    first = {r["uid"]: r for r in s.iter_rows(named=True)}
    curves: dict[str, dict[int, str]] = {}
    for uid, (size, base) in res.items():
        if uid in first:
            curves.setdefault(base, {})[size] = uid
    curves = {b: c for b, c in curves.items() if len(c) > 1 or b in first}

    def name(base: str) -> str:
        r = first.get(base) or first[next(iter(curves[base].values()))]
        return f"{r['model']}, {fmt_count(r['samples_seen'])} samples, {r['data_filter']}"

    rows = []
    for base in sorted(curves, key=name):
        for lab in labels:
            cells = [curves[base].get(size) for size in sizes]
            if not any(u is not None and (u, lab) in value for u in cells):
                continue
            rows.append([name(base), lab] + [
                fmt_est(est.get((u, lab)), value.get((u, lab))) if u else "—" for u in cells
            ])  # fmt: skip
    table = Table(
        "Scores per resolution",
        ["cell (base resolution)", "score", *[f"{size} px" for size in sizes]],
        rows,
        "Cells above a curve's lowest resolution continue from its final checkpoint "
        "(high-resolution adaptation) and are evaluated at their own resolution; 95% intervals "
        "where the evaluation left per-example outcomes.",
    )
    blocks: list[Any] = [("h2", "Resolution"), table]
    png = _plot(curves, labels, sizes, value, est, out_dir, study, name)
    if png is not None:
        blocks.append(("img", png.name, "Score vs resolution, a line per cell and its adaptations"))
    return blocks


def _plot(curves: dict[str, dict[int, str]], labels: list[str], sizes: list[int],
          value: dict[Any, Any], est: dict[Any, Any], out: Path, study: str,
          name: Any) -> Path | None:  # fmt: skip
    plt = plots._plt()
    nr, nc = plots._grid(len(labels))
    fig, axes = plt.subplots(nr, nc, figsize=(4.2 * nc, 3.3 * nr), squeeze=False)
    colors = plots._colors(len(curves))
    drawn = False
    for ax, lab in zip(axes.flat, labels, strict=False):
        for (base, curve), color in zip(sorted(curves.items()), colors, strict=True):
            xs = [x for x in sizes if x in curve and (curve[x], lab) in value]
            if not xs:
                continue
            ys = [float(value[(curve[x], lab)]) for x in xs]
            keys = [(curve[x], lab) for x in xs]
            ax.errorbar(xs, ys, yerr=plots._yerr(est, keys, ys), marker="o", capsize=3,
                        color=color, label=name(base))  # fmt: skip
            drawn = True
        ax.set_title(lab)
        ax.set_xlabel("resolution (px)")
        ax.set_xticks(sizes)
    for ax in list(axes.flat)[len(labels) :]:
        ax.set_visible(False)
    if not drawn:
        plt.close(fig)
        return None
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{study}: score vs resolution")
    fig.tight_layout()
    return plots._save(fig, out, "score_vs_resolution")
