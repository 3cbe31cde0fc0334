"""Reader of the single-file checkpoints ``ckpt-<iteration>.pt`` an earlier single-process
trainer wrote, so that a cell it started resumes in today's loop.

Such a file is one ``torch.save`` of: student, teacher (module state dicts), optimizer
(``Optimizer.state_dict()``, parameters in ``named_parameters`` order), centers
({"dino", "ibot"}: EMA centres or None), data (the one stream's Position: chunk, offset),
problems (skipped-sample counts), samples_seen, model, iteration, rng. Its single stream is
lane 0 of a one-lane run (the same shard and crop draws), so the data order continues exactly.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)
_NAME = re.compile(r"^ckpt-(\d{8,})\.pt$")


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(iteration, path) of the single-file checkpoints in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(
        (int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.fullmatch(p.name))
    )


def read(path: Path, iteration: int, device: torch.device) -> dict[str, Any] | None:
    """The checkpoint as the loop resumes it: {"student", "teacher", "centers", "optimizer"
    (torch's format), "meta": {..., "lanes": 1, "data": {"0": {position, problems}}}}, or None
    when the file does not load (truncated, corrupt) or holds another iteration."""
    try:
        # Weights only: a planted file must not run code (it reads as damaged instead).
        raw: dict[str, Any] = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt: the caller tries an older one
        log.warning("checkpoint %s does not load (%s); trying the previous one", path.name, exc)
        return None
    if raw.get("iteration") != iteration:
        log.warning("checkpoint %s holds iteration %s; skipped", path.name, raw.get("iteration"))
        return None
    data = raw["data"]
    meta = {
        "iteration": iteration,
        "samples_seen": raw.get("samples_seen"),
        "model": raw.get("model"),
        "world_size": 1,
        "lanes": 1,
        "data": {"0": {"position": [data["chunk"], data["offset"]], "problems": dict(raw["problems"])}},
    }  # fmt: skip
    return {
        "student": raw["student"],
        "teacher": raw["teacher"],
        "centers": raw.get("centers") or {},
        "optimizer": raw["optimizer"],
        "meta": meta,
    }
