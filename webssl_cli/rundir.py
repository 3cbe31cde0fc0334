"""The run-directory contract: the only interface between stages and across the submit boundary.

A job reads its cell spec from ``cells/<uid>/cell.json`` and writes status, metrics and
checkpoints below the same directory. Nothing else crosses the submit boundary; jobs never
open ``results.duckdb``. Layout (stable, documented in the README)::

    <study-dir>/study.json                     the resolved study (all cells), written by `run`
    <study-dir>/cells/<uid>/cell.json          the resolved cell spec, written before any work
                           /status.json        per-stage state, attempts, job ids, timings, error
                           /train/metrics.jsonl
                           /train/checkpoints/
                           /train/teacher_backbone.pt   final teacher backbone (export)
                           /eval/<task>.json
                           /logs/
    <study-dir>/filters/<key>/                 filter outputs shared by the cells that use them
    <study-dir>/results.duckdb                 built by `webssl results ingest`

Every write is atomic: a temporary file in the same directory, fsync, then ``os.replace``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from webssl_cli.specs.cell import CellSpec

STATES = ("pending", "queued", "running", "done", "failed", "diverged", "cancelled")
TERMINAL_STATES = ("done", "failed", "diverged", "cancelled")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class CellDir:
    """Paths of one cell's run directory. Creating the object touches nothing on disk."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @classmethod
    def of(cls, study_dir: str | os.PathLike[str], uid: str) -> CellDir:
        return cls(Path(study_dir) / "cells" / uid)

    @property
    def uid(self) -> str:
        return self.root.name

    @property
    def study_dir(self) -> Path:
        return self.root.parent.parent

    cell_json = property(lambda self: self.root / "cell.json")
    status_json = property(lambda self: self.root / "status.json")
    train_dir = property(lambda self: self.root / "train")
    metrics_jsonl = property(lambda self: self.root / "train" / "metrics.jsonl")
    checkpoints_dir = property(lambda self: self.root / "train" / "checkpoints")
    backbone_export = property(lambda self: self.root / "train" / "teacher_backbone.pt")
    eval_dir = property(lambda self: self.root / "eval")
    logs_dir = property(lambda self: self.root / "logs")

    def eval_json(self, task: str) -> Path:
        return self.eval_dir / f"{task}.json"

    def read_cell(self) -> CellSpec:
        """The cell's typed spec; a one-line UserError names cell.json and the bad field."""
        from webssl_cli.specs.cell import read_cell

        return read_cell(self.cell_json)

    def read_spec(self) -> dict[str, Any]:
        """The validated cell spec in its JSON form (for code that passes it on as data)."""
        spec: dict[str, Any] = self.read_cell().model_dump(mode="json")
        return spec

    def write_cell(self, spec: CellSpec) -> None:
        atomic_write_text(self.cell_json, spec.to_json())

    # ---- status -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _status_lock(self) -> Iterator[None]:
        # Stages of one cell (and the submitting process) may update status.json at the same
        # time; the lock serialises read-modify-write. The write itself stays atomic, so a
        # reader without the lock still sees a whole file.
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".status.lock", "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def read_status(self) -> dict[str, Any]:
        """``{"stages": {stage: {...}}}``; an absent or unreadable file reads as no stages."""
        try:
            status = read_json(self.status_json)
        except (FileNotFoundError, json.JSONDecodeError):
            return {"stages": {}}
        if not isinstance(status, dict) or not isinstance(status.get("stages"), dict):
            return {"stages": {}}
        return status

    def stage_status(self, stage: str) -> dict[str, Any]:
        stage_state: dict[str, Any] = self.read_status()["stages"].get(stage, {})
        return stage_state

    def update_stage(self, stage: str, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the status of ``stage`` (e.g. ``train``, ``eval/knn``).

        ``state`` must be one of STATES. Returns the stage's new status.
        """
        state = fields.get("state")
        if state is not None and state not in STATES:
            raise ValueError(f"unknown state {state!r}; valid: {', '.join(STATES)}")
        with self._status_lock():
            status = self.read_status()
            entry = dict(status["stages"].get(stage, {}))
            entry.update(fields)
            entry["updated"] = now_iso()
            status["stages"][stage] = entry
            status["cell"] = self.uid
            atomic_write_json(self.status_json, status)
        return entry
