"""Checkpoints (torch.distributed.checkpoint) that resume at another world size.

A checkpoint is a directory ``dcp-<iteration>/``: DCP's shard files and ``.metadata`` (each
rank writes its own shards of the objective's state and the AdamW state, in parallel; tensors
are stored with their global shapes, so any number of ranks, sharded or not, can load them),
and ``meta.json`` written by rank 0 after every rank finished — the marker of a complete
checkpoint. meta.json holds the iteration, samples seen, the run's world size and strategy,
every data lane's stream position and skipped-sample counts (so a resume at another world size
reads the same global batches). The newest checkpoint that loads wins (a damaged newest one
falls back to the previous); the last K are kept.

Single-file ``ckpt-*.pt`` checkpoints of the earlier single-process trainer are read too
(``legacy_checkpoint``): a cell it started resumes here and continues with DCP checkpoints.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from webssl_cli.data.stream import Position
from webssl_cli.errors import UserError
from webssl_cli.rundir import atomic_write_json
from webssl_cli.train import legacy_checkpoint
from webssl_cli.train.objective import Objective
from webssl_cli.train.safe_load import SafeLoadPlanner, SafeReader

log = logging.getLogger(__name__)
_NAME = re.compile(r"^dcp-(\d{8,})$")


@dataclass
class Resumed:
    iteration: int
    path: str
    lanes: int
    positions: dict[int, Position] = field(default_factory=dict)
    problems: dict[int, Counter[str]] = field(default_factory=dict)


def checkpoint_dir(directory: Path, iteration: int) -> Path:
    return directory / f"dcp-{iteration:08d}"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(iteration, path) of the complete checkpoints (with meta.json), oldest first."""
    if not directory.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in directory.iterdir()
        if (m := _NAME.fullmatch(p.name)) and (p / "meta.json").exists()
    ]
    return sorted(found)


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _state(objective: Objective, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    opt = get_optimizer_state_dict(objective.trainable(), optimizer)
    return {**objective.state_dict(), "optimizer": opt}


class Checkpointer:
    """Saves and finds the checkpoints of one run directory. ``save`` and ``load_latest`` are
    collective: every rank calls them."""

    def __init__(self, directory: Path, keep: int) -> None:
        self.directory, self.keep = directory, keep

    def save(self, iteration: int, objective: Objective, optimizer: torch.optim.Optimizer,
             meta: dict[str, Any]) -> Path:  # fmt: skip
        path = checkpoint_dir(self.directory, iteration)
        if _rank() == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            if path.exists():  # an incomplete attempt at the same iteration (no meta.json)
                shutil.rmtree(path)
        _barrier()
        dcp.save(_state(objective, optimizer), checkpoint_id=str(path))
        _barrier()
        if _rank() == 0:
            atomic_write_json(path / "meta.json", {**meta, "iteration": iteration})
            everything = sorted(
                list_checkpoints(self.directory)
                + legacy_checkpoint.list_checkpoints(self.directory)
            )
            for _, old in everything[: -self.keep]:
                shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
        _barrier()
        return path

    def load_latest(self, objective: Objective, optimizer: torch.optim.Optimizer,
                    sharded: bool) -> Resumed | None:  # fmt: skip
        """Load the newest checkpoint that loads into ``objective`` and ``optimizer``."""
        found = [(it, 1, p) for it, p in list_checkpoints(self.directory)]
        found += [(it, 0, p) for it, p in legacy_checkpoint.list_checkpoints(self.directory)]
        fast = [{k: g.get(k) for k in ("foreach", "fused")} for g in optimizer.param_groups]
        for iteration, is_dcp, path in sorted(found, reverse=True):
            meta = self._load_dcp(path, objective, optimizer) if is_dcp else None
            if not is_dcp:
                meta = self._load_legacy(path, iteration, objective, optimizer, sharded)
            if meta is None:
                continue
            for g, flags in zip(optimizer.param_groups, fast, strict=True):
                g.update(flags)  # a loaded state carries the writer's kernel choice
            data = meta["data"]
            return Resumed(
                iteration, str(path), int(meta["lanes"]),
                {int(lane): Position(*d["position"]) for lane, d in data.items()},
                {int(lane): Counter(d["problems"]) for lane, d in data.items()},
            )  # fmt: skip
        if found:  # a failed load may have filled some tensors: never train on from there
            raise UserError(
                f"{self.directory}: no checkpoint loads (see the warnings); move them away to "
                "start the cell over"
            )
        return None

    @staticmethod
    def _load_dcp(path: Path, objective: Objective,
                  optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:  # fmt: skip
        meta: dict[str, Any] = json.loads((path / "meta.json").read_text())
        state = _state(objective, optimizer)
        try:
            dcp.load(state, storage_reader=SafeReader(str(path)), planner=SafeLoadPlanner())
        except (Exception, CheckpointException) as exc:  # noqa: BLE001 - damaged: try an older one
            log.warning("checkpoint %s does not load (%s); trying the previous one", path.name, exc)
            return None
        objective.load_state_dict(state)
        set_optimizer_state_dict(objective.trainable(), optimizer, state["optimizer"])
        return meta

    @staticmethod
    def _load_legacy(path: Path, iteration: int, objective: Objective,
                     optimizer: torch.optim.Optimizer, sharded: bool) -> dict[str, Any] | None:  # fmt: skip
        if sharded:
            raise UserError(
                f"{path}: a single-process checkpoint resumes with train.dist.strategy: ddp; "
                "set it for this cell (DCP checkpoints written from then on load under fsdp)"
            )
        device = next(objective.trainable().parameters()).device
        state = legacy_checkpoint.read(path, iteration, device)
        if state is None:
            return None
        objective.load_state_dict(state)
        optimizer.load_state_dict(state["optimizer"])
        meta: dict[str, Any] = state["meta"]
        return meta
