"""Distributed checkpoints (torch.distributed.checkpoint) that resume at another world size.

A checkpoint is a directory ``dcp-<iteration>/``: DCP's shard files and ``.metadata`` (each
rank writes its own shards of the student, teacher and AdamW state, in parallel; tensors are
stored with their global shapes, so any number of ranks, sharded or not, can load them), and
``meta.json`` written by rank 0 after every rank finished — the marker of a complete checkpoint.
meta.json holds the iteration, samples seen, the run's world size and strategy, every data
lane's stream position and skipped-sample counts (so a resume at another world size reads the
same global batches), and whether EMA centres are stored. The newest complete checkpoint that
loads wins; the last K are kept.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from webssl_cli.rundir import atomic_write_json
from webssl_cli.train.ssl_model import Centers, SSLModel

log = logging.getLogger(__name__)
_NAME = re.compile(r"^dcp-(\d{8,})$")


def checkpoint_dir(directory: Path, iteration: int) -> Path:
    return directory / f"dcp-{iteration:08d}"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(iteration, path) of the complete checkpoints (with meta.json), oldest first."""
    if not directory.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in directory.iterdir()
        if (m := _NAME.match(p.name)) and (p / "meta.json").exists()
    ]
    return sorted(found)


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _state(
    student: SSLModel, teacher: SSLModel, optimizer: torch.optim.Optimizer, centers: Centers | None
) -> dict[str, Any]:
    state: dict[str, Any] = {
        "student": get_model_state_dict(student),
        "teacher": get_model_state_dict(teacher),
        "optimizer": get_optimizer_state_dict(student, optimizer),
    }
    if centers is not None:
        state["centers"] = {k: v for k, v in vars(centers).items() if v is not None}
    return state


def save(
    directory: Path,
    iteration: int,
    student: SSLModel,
    teacher: SSLModel,
    optimizer: torch.optim.Optimizer,
    centers: Centers,
    meta: dict[str, Any],
    keep: int,
) -> Path:
    """Collective: every rank calls it. Returns the checkpoint directory."""
    path = checkpoint_dir(directory, iteration)
    if _rank() == 0:
        directory.mkdir(parents=True, exist_ok=True)
        if path.exists():  # an incomplete attempt at the same iteration (no meta.json)
            shutil.rmtree(path)
    _barrier()
    dcp.save(_state(student, teacher, optimizer, centers), checkpoint_id=str(path))
    _barrier()
    if _rank() == 0:
        stored = sorted(k for k, v in vars(centers).items() if v is not None)
        atomic_write_json(path / "meta.json", {**meta, "iteration": iteration, "centers": stored})
        for _, old in list_checkpoints(directory)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return path


def load_latest(
    directory: Path,
    student: SSLModel,
    teacher: SSLModel,
    optimizer: torch.optim.Optimizer,
    centers: Centers,
    n_prototypes: dict[str, int],
) -> dict[str, Any] | None:
    """Load the newest complete checkpoint into the (already parallelised) models; its meta, or
    None. Collective. ``n_prototypes``: {'dino': K, 'ibot': K} for the EMA-centre templates."""
    for iteration, path in reversed(list_checkpoints(directory)):
        meta = json.loads((path / "meta.json").read_text())
        tmpl = Centers(**{k: torch.zeros(1, n_prototypes[k]) for k in meta.get("centers", [])})
        state = _state(student, teacher, optimizer, tmpl if meta.get("centers") else None)
        try:
            dcp.load(state, checkpoint_id=str(path))
        except Exception as exc:  # noqa: BLE001 - damaged: fall back to an older one
            log.warning("checkpoint %s does not load (%s); trying the previous one", path.name, exc)
            continue
        set_model_state_dict(student, state["student"])
        set_model_state_dict(teacher, state["teacher"])
        set_optimizer_state_dict(student, optimizer, state["optimizer"])
        for k, v in state.get("centers", {}).items():
            setattr(centers, k, v)
        meta["iteration"], meta["path"] = iteration, str(path)
        return meta
    return None
