"""Training checkpoints: atomic files ``ckpt-<iteration>.pt``, the last K kept, newest valid wins.

A checkpoint holds everything an exact resume needs: student, teacher, optimizer, the EMA
centres, the iteration (the schedules are pure functions of it), samples seen, the data stream
position, skipped-sample counts and the RNG states. A file that does not load (truncated,
corrupted) is skipped in favour of the previous one.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path
from typing import Any

import torch

from webssl_cli.rundir import atomic_write_bytes

log = logging.getLogger(__name__)
_NAME = re.compile(r"^ckpt-(\d{8,})\.pt$")


def checkpoint_path(directory: Path, iteration: int) -> Path:
    return directory / f"ckpt-{iteration:08d}.pt"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(iteration, path) of the checkpoints in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(directory: Path, iteration: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` atomically as the checkpoint of ``iteration``; prune to the last ``keep``."""
    buf = io.BytesIO()
    torch.save({**state, "iteration": iteration, "rng": rng_state()}, buf)
    path = checkpoint_path(directory, iteration)
    atomic_write_bytes(path, buf.getvalue())
    for _, old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_latest(directory: Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The newest checkpoint that loads, or None; unreadable newer files are logged and skipped."""
    for iteration, path in reversed(list_checkpoints(directory)):
        try:
            state: dict[str, Any] = torch.load(path, map_location=map_location, weights_only=False)
        except Exception as exc:  # noqa: BLE001 - truncated/corrupt: fall back to an older one
            log.warning("checkpoint %s does not load (%s); trying the previous one", path.name, exc)
            continue
        if state.get("iteration") != iteration:
            log.warning(
                "checkpoint %s holds iteration %s; skipped", path.name, state.get("iteration")
            )
            continue
        state["path"] = str(path)
        return state
    return None
