"""Starting a high-resolution adaptation from its base cell: position embeddings resized, every
other tensor of the objective (student, teacher, heads, centres) loaded as it was.

The adaptation's backbone is built at its resolution (``img_size`` = the cell's resolution), so
its position-embedding grid is resolution / patch on a side. The base checkpoint's grid is
resized to it once, bicubically, exactly as the ViT resizes its grid in the forward pass
(``VisionTransformer.interpolate_pos_encoding``: fp32, DINOv2's scale factor (g + offset) / M,
no antialiasing). At step 0 the adapted network therefore computes, at its resolution, what the
base network computed at that resolution. The optimiser state is not carried over: AdamW
starts fresh, as the adaptation's schedules do.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import Tensor

from webssl_cli.errors import UserError
from webssl_cli.train.objective import Objective
from webssl_cli.train.safe_load import SafeLoadPlanner, SafeReader
from webssl_cli.train.vit import INTERPOLATE_OFFSET, resize_pos_grid


def resize_pos_embed(pos: Tensor, side: int, offset: float = INTERPOLATE_OFFSET) -> Tensor:
    """(1, 1 + M*M, D) position embeddings (CLS first) -> (1, 1 + side*side, D)."""
    n = pos.shape[1] - 1
    m = math.isqrt(n)
    if m * m != n:
        raise ValueError(f"position embeddings of {n} patches are not a square grid")
    if m == side:
        return pos.clone()
    return resize_pos_grid(pos, side, side, offset)


def init_from_checkpoint(objective: Objective, path: Path) -> list[str]:
    """Load the base cell's checkpoint ``path`` (a ``dcp-<step>/`` directory) into
    ``objective``, resizing every position-embedding tensor whose grid differs. Collective
    (every rank calls it). Returns the names of the resized tensors."""
    reader = SafeReader(str(path))
    stored = reader.read_metadata().state_dict_metadata
    state = objective.state_dict()
    resized: dict[tuple[str, str], Any] = {}  # (part, key) -> the template it replaces
    for part in ("student", "teacher"):
        for key, value in (state.get(part) or {}).items():
            meta = stored.get(f"{part}.{key}")
            size = getattr(meta, "size", None)
            if not key.endswith("pos_embed") or size is None or tuple(size) == tuple(value.shape):
                continue
            local = value.to_local() if hasattr(value, "to_local") else value
            resized[(part, key)] = value
            state[part][key] = torch.empty(tuple(size), dtype=value.dtype, device=local.device)
    try:
        dcp.load(state, storage_reader=reader, planner=SafeLoadPlanner())
    except Exception as exc:  # noqa: BLE001 - a missing or damaged base checkpoint: one line
        raise UserError(
            f"{path}: the base cell's checkpoint does not load into this cell "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); retrain the base cell"
        ) from None
    for (part, key), template in resized.items():
        side = math.isqrt(template.shape[1] - 1)  # a DTensor's shape is the global one
        full = resize_pos_embed(state[part][key], side)
        if hasattr(template, "device_mesh"):  # a sharded (FSDP) parameter: shard it the same way
            from torch.distributed.tensor import distribute_tensor

            full = distribute_tensor(full, template.device_mesh, template.placements)
        state[part][key] = full
    objective.load_state_dict(state)
    return [f"{part}.{key}" for part, key in resized]
