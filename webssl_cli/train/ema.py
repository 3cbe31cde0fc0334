"""The EMA update of a frozen copy: teacher = m * teacher + (1 - m) * student.

It runs on each rank's local shards with ``_foreach`` ops: unsharded tensors are their own
local shard, and under FSDP2 teacher and student are sharded identically, so no all-gather.
One ``lerp`` pass (teacher + (1 - m) * (student - teacher)) reads each tensor once and writes
the teacher once, where a multiply then an add reads and writes the teacher twice.
"""

from __future__ import annotations

import torch
from torch import nn

from webssl_cli.train.distributed import local


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    t = [local(p) for p in teacher.parameters()]
    s = [local(p) for p in student.parameters()]
    if len(t) != len(s):
        raise ValueError("teacher and student have different parameter lists")
    torch._foreach_lerp_(t, s, 1.0 - momentum)
