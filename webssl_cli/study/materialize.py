"""Write a loaded study to its output directory: study.json and every cells/<uid>/cell.json.

Writes are atomic and idempotent: an existing file with the same content is left untouched
(its mtime too), so re-running a study does not look like a change to incremental ingest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from webssl_cli.errors import UserError
from webssl_cli.rundir import CellDir, atomic_write_text
from webssl_cli.study.loader import LoadedStudy


def _write_if_changed(path: Path, obj: Any) -> bool:
    return _write_text_if_changed(
        path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    )


def _write_text_if_changed(path: Path, text: str) -> bool:
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    atomic_write_text(path, text)
    return True


def study_record(loaded: LoadedStudy) -> dict[str, Any]:
    return {
        "name": loaded.study.name,
        "study_file": str(loaded.path),
        "description": loaded.study.description,
        "cluster": loaded.study.cluster,
        "cells": [c.uid for c in loaded.cells],
        "axes": list(loaded.study.grid),
        "filters": {
            k: {
                "name": j.name,
                "source": j.source,
                "filter": j.filter,
                "classifier": j.classifier,
                "out_dir": str(j.out_dir),
            }
            for k, j in loaded.filters.items()
        },
        "evals": loaded.evals,
        "sources": loaded.sources,
    }


def write_cells(loaded: LoadedStudy) -> int:
    """Write study.json and each cell.json; returns how many files changed."""
    try:
        loaded.output_dir.mkdir(parents=True, exist_ok=True)
        changed = int(_write_if_changed(loaded.output_dir / "study.json", study_record(loaded)))
        for cell in loaded.cells:
            changed += _write_text_if_changed(
                CellDir.of(loaded.output_dir, cell.uid).cell_json, cell.spec.to_json()
            )
    except PermissionError as exc:
        raise UserError(
            f"{loaded.path}: output_dir {loaded.output_dir} is not writable ({exc.strerror}); choose another output_dir"
        ) from None
    return changed
