"""The ``fits`` table: a study's scaling-law fits, replaced on every report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from webssl_cli.report.fits import Fit


def store_fits(db: Path, study: str, fits: list[Fit]) -> str | None:
    """Replace this study's rows in the ``fits`` table; a note instead if the DB is busy."""
    import duckdb
    import pyarrow as pa

    rows: list[dict[str, Any]] = []
    for f in fits:
        base = {
            "study": study,
            "target": f.target,
            "form": f.form,
            "slice": f.slice,
            "n_points": f.n,
            "note": f.note,
        }
        if f.ok:
            ivs = f.intervals() or {}
            for k, v in f.estimate().items():
                lo, hi = ivs.get(k, (None, None))
                rows.append(base | {"param": k, "estimate": float(v), "lo": lo, "hi": hi})
            if f.holdout is not None:
                h = f.holdout
                rows.append(base | {"param": "holdout_error", "estimate": h.error,
                                    "lo": None if h.lo is None else h.lo - h.actual,
                                    "hi": None if h.hi is None else h.hi - h.actual})  # fmt: skip
        else:
            rows.append(base | {"param": "-", "estimate": None, "lo": None, "hi": None})
    try:
        con = duckdb.connect(str(db))
    except duckdb.Error as exc:
        return f"fits not stored in the database ({' '.join(str(exc).split())[:120]})"
    try:
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM fits WHERE study = ?", [study])
        if rows:
            cols = [
                "study",
                "target",
                "form",
                "slice",
                "param",
                "estimate",
                "lo",
                "hi",
                "n_points",
                "note",
            ]
            con.register("_fits", pa.Table.from_pylist(rows).select(cols))
            con.execute(f"INSERT INTO fits BY NAME SELECT {', '.join(cols)} FROM _fits")
        con.execute("COMMIT")
    finally:
        con.close()
    return None
