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
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from webssl_cli.errors import UserError

if TYPE_CHECKING:
    from webssl_cli.specs.cell import CellSpec

STATES = ("pending", "queued", "running", "done", "failed", "diverged", "cancelled")
# Not a state a stage is ever put in: what an unreadable status file reads as, so that one
# damaged cell is reported and skipped while the rest of the study goes on.
CORRUPT = "corrupt"
TERMINAL_STATES = ("done", "failed", "diverged", "cancelled")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` can only set it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    The file gets the mode a plain ``open`` would give it (0666 less the umask): ``mkstemp``
    makes it 0600, which would hide results from the user's group.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
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


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number here")


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

    @property
    def status_backup(self) -> Path:
        return self.root / "status.json.bak"

    @staticmethod
    def _parse_status(path: Path) -> dict[str, Any]:
        """The status document at ``path``; ValueError (why) when it is not one."""
        try:
            status = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_no_constant)
        except UnicodeDecodeError:
            raise ValueError("not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(status, dict) or not isinstance(status.get("stages"), dict):
            raise ValueError('not a status document (no "stages" object)')
        if not all(isinstance(v, dict) for v in status["stages"].values()):
            raise ValueError("a stage entry is not an object")
        for entry in status["stages"].values():
            for key in ("attempts", "samples_seen", "samples_target", "step"):
                value = entry.get(key)
                if value is not None and (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or not math.isfinite(value)
                    or abs(value) >= 1e18
                ):
                    raise ValueError(f"{key} is not a count ({value!r})")
        return status

    def read_status(self) -> dict[str, Any]:
        """``{"stages": {stage: {...}}}``; an absent file reads as no stages.

        A damaged file (truncated, not UTF-8, not JSON) is never read as "no stages", which
        would forget the job history and run everything again: the copy written beside it
        (``status.json.bak``, the same content) stands in; when that is damaged too, a one-line
        UserError names the file.
        """
        try:
            return self._parse_status(self.status_json)
        except FileNotFoundError:
            if not self.status_backup.exists():
                return {"stages": {}}
            why = "missing"
        except OSError as exc:
            why = exc.strerror or str(exc)
        except ValueError as exc:
            why = str(exc)
        try:
            return self._parse_status(self.status_backup)
        except (OSError, ValueError):
            pass
        raise UserError(
            f"{self.status_json}: unreadable status file ({why}) and no usable "
            f"{self.status_backup.name}; move both away to start this cell's stages over"
        )

    def stage_status(self, stage: str) -> dict[str, Any]:
        stage_state: dict[str, Any] = self.read_status()["stages"].get(stage, {})
        return stage_state

    def stage_status_or_corrupt(self, stage: str) -> dict[str, Any]:
        """Like ``stage_status``, but a damaged status file reads as the ``corrupt`` state
        (its message in ``error``) so that a whole-study command can go on with other cells."""
        try:
            return self.stage_status(stage)
        except UserError as exc:
            return {"state": CORRUPT, "error": exc.message}

    def _write_status(self, status: dict[str, Any]) -> None:
        atomic_write_json(self.status_json, status)
        atomic_write_json(self.status_backup, status)

    def update_stage(self, stage: str, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the status of ``stage`` (e.g. ``train``, ``eval/knn``).

        ``state`` must be one of STATES. Returns the stage's new status. Every update bumps
        the stage's ``rev``, the version ``claim_stage`` compares.
        """
        state = fields.get("state")
        if state is not None and state not in STATES:
            raise ValueError(f"unknown state {state!r}; valid: {', '.join(STATES)}")
        with self._status_lock():
            return self._update_locked(stage, fields)

    def _update_locked(self, stage: str, fields: dict[str, Any]) -> dict[str, Any]:
        # flock is per open file: taking the lock again here would wait on ourselves.
        status = self.read_status()
        entry = dict(status["stages"].get(stage, {}))
        entry.update(fields)
        entry["rev"] = int(entry.get("rev") or 0) + 1
        entry["updated"] = now_iso()
        status["stages"][stage] = entry
        status["cell"] = self.uid
        self._write_status(status)
        return entry

    def claim_stage(self, stage: str, rev: int | None, **fields: Any) -> dict[str, Any] | None:
        """Compare-and-set: apply ``fields`` only if the stage is still at version ``rev`` (the
        one its caller decided on; None or 0 for a stage never written). Returns the new entry,
        or None when anyone else changed the stage since, so that two submitters, a retry and a
        manual re-run can never both submit it."""
        with self._status_lock():
            current = self.read_status()["stages"].get(stage, {})
            if int(current.get("rev") or 0) != int(rev or 0):
                return None
            return self._update_locked(stage, fields)

    def record_job(self, stage: str, job_id: str, **fields: Any) -> dict[str, Any]:
        """Record a submitted job: its id becomes ``job`` and is appended to ``job_ids`` (the
        stage's history of attempts), read and written under the lock."""
        with self._status_lock():
            current = self.read_status()["stages"].get(stage, {})
            history = [str(j) for j in current.get("job_ids") or []]
            if job_id not in history:
                history.append(job_id)
            return self._update_locked(stage, {"job": job_id, "job_ids": history, **fields})
