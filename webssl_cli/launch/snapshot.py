"""A snapshot of the code and the resolved configuration, taken per study run.

Jobs import ``webssl_cli`` from ``<study>/.launch/code/<hash>/`` (submission sets cwd and
PYTHONPATH there, see ``executors.submission_env``), so editing the working tree after
submitting cannot change a queued or requeued job. Snapshots are content-addressed: a run
with unchanged code reuses the previous one. The resolved study, profile and command line of
each run go to ``<study>/.launch/runs/<time>-<pid>/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

from webssl_cli.rundir import atomic_write_json, atomic_write_text

_SUFFIXES = (".py", ".yaml", ".yml", ".ttf", ".json", ".typed")


def _package_root() -> Path:
    import webssl_cli

    return Path(webssl_cli.__file__).resolve().parent


def _files(root: Path) -> list[Path]:
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in _SUFFIXES and "__pycache__" not in p.parts:
            out.append(p)
    return out


def code_hash(root: Path | None = None) -> str:
    root = root or _package_root()
    h = hashlib.sha256()
    for p in _files(root):
        h.update(str(p.relative_to(root)).encode())
        h.update(b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def snapshot_code(study_dir: Path) -> Path:
    """Copy the ``webssl_cli`` package into the study; returns the directory to put on PYTHONPATH."""
    root = _package_root()
    digest = code_hash(root)
    dest = study_dir / ".launch" / "code" / digest
    if (dest / "webssl_cli" / "__init__.py").exists():
        return dest
    tmp = dest.with_name(f".{digest}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for p in _files(root):
        target = tmp / "webssl_cli" / p.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, target)
    try:
        os.replace(tmp, dest)
    except OSError:  # another run made the same snapshot meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def record_run(
    study_dir: Path, study_file: Path, profile: dict[str, Any], args: dict[str, Any]
) -> Path:
    """Save the study file as submitted, the resolved profile and the command-line choices."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    run_dir = study_dir / ".launch" / "runs" / f"{stamp}-{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        atomic_write_text(run_dir / "study.yaml", study_file.read_text(encoding="utf-8"))
    atomic_write_json(run_dir / "profile.json", profile)
    atomic_write_json(run_dir / "run.json", args)
    return run_dir
