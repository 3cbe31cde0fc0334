"""Save-now requests: a signal handler asks the training loop to checkpoint at the next step
boundary, and every rank of the job saves at the same step.

A preempted or timed-out SLURM job gets USR2 on every task. A distributed checkpoint is written
by all ranks together, so a rank cannot save on its own when the signal arrives: each rank's
handler only sets a flag here (safe inside a signal handler), and the loop calls ``agreed``
after every step, a collective that all-reduces the flags (max). When any rank was asked, every
rank learns it at the same step, saves, and the loop returns ``PREEMPTED``; the job then
requeues itself once (``launch.jobs``).

``request`` tells the signal handler whether a loop is listening. When none is (the job is
still building the model or already exporting), the handler requeues at once and the next
attempt resumes from the newest checkpoint.

No torch at module level: the launch layer installs the handler before the trainer is imported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

PREEMPTED = "preempted"
"""What a training loop returns after it checkpointed on request and stopped early."""

_requested = False
_listening = 0


def request() -> bool:
    """Ask the listening loop to checkpoint and stop; False when no loop is listening.

    Only sets flags: callable from a signal handler at any point of the loop.
    """
    global _requested
    if _listening:
        _requested = True
        return True
    return False


def pending() -> bool:
    """This process was asked to checkpoint (not yet agreed with the other ranks)."""
    return _requested


def clear() -> None:
    global _requested
    _requested = False


def start_listening() -> None:
    """The training loop starts its steps: requests from now on are answered by the loop."""
    global _listening
    _listening += 1


def stop_listening() -> None:
    """The loop left its steps (finished, stopped or failed): a pending request is dropped."""
    global _listening
    _listening = max(0, _listening - 1)
    if not _listening:
        clear()


@contextlib.contextmanager
def listening() -> Iterator[None]:
    """``start_listening`` ... ``stop_listening`` around a block."""
    start_listening()
    try:
        yield
    finally:
        stop_listening()


def agreed(device: Any = "cpu") -> bool:
    """Collective over the default process group (every rank calls it after the same step):
    True on every rank when any rank was asked to checkpoint; clears the request.

    A one-rank or absent group decides alone.
    """
    import torch
    import torch.distributed as dist

    flag = 1.0 if _requested else 0.0
    if dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor([flag], dtype=torch.float32, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        flag = float(t.item())
    if flag > 0:
        clear()
        return True
    return False
