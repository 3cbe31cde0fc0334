"""The VQA evaluation over the job's ranks: who am I, what is my share, how do we meet.

Ranks and rendezvous come from the trainer's launcher (``train.distributed``: torchrun's
variables, SLURM's or submitit's local ones; NCCL on CUDA, gloo on CPU). One process gets a
one-rank group too, so that the same code (collectives, distributed checkpoints) runs at every
world size. Work is split so that every rank computes exactly what one process would have
computed for the same items, in the same batches:

- features: batch ``b`` of the sorted images (memory cache), or shard ``s`` of the on-disk
  cache, belongs to rank ``b % world`` (``s % world``);
- training: stage 1 and 2 over the ranks (``eval.vqa_train``);
- answers: batch ``b`` of the unanswered questions to rank ``b % world``, gathered round by
  round on rank 0, which alone writes files.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from webssl_cli import device as dev
from webssl_cli.train import distributed as D

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int
    device: torch.device
    source: str = "single"  # where the ranks came from: torchrun | slurm | single

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def mine(self, n: int) -> list[int]:
        """Indices ``0..n-1`` of the units (batches, shards) this rank computes."""
        return list(range(self.rank, n, self.world))


SINGLE = Ranks(0, 1, torch.device("cpu"))


def job_rank() -> int:
    """This process's rank in the job, from the environment alone (before any group exists)."""
    return D.detect_env().rank


@contextlib.contextmanager
def joined(requested: str | None = None) -> Iterator[Ranks]:
    """The job's ranks, with the process group joined for the duration (left again when this
    call created it); the device is this rank's GPU on CUDA machines, else the CPU."""
    env = D.detect_env()
    device = D.device_for(env, dev.pick_device(requested))
    created = not dist.is_initialized()
    if created:
        D.init_process_group(env, device)
    try:
        yield Ranks(dist.get_rank(), dist.get_world_size(), device, env.source)
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        dist.barrier()


def share(ranks: Ranks, obj: T) -> T:
    """Rank 0's ``obj`` on every rank."""
    if ranks.world == 1:
        return obj
    box: list[Any] = [obj if ranks.lead else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[no-any-return]


def gather(ranks: Ranks, obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order, on every rank."""
    return D.gather_objects(obj) if ranks.world > 1 else [obj]


def gather_dicts(ranks: Ranks, part: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for d in gather(ranks, part):
        out.update(d)
    return out


@contextlib.contextmanager
def file_lock(path: Path, ranks: Ranks, poll_s: float = 0.5) -> Iterator[None]:
    """An exclusive lock on ``path`` for the whole job: rank 0 holds the file lock (released
    on exit, or by the kernel if the job dies), the other ranks wait with it. Rank 0 tries
    without blocking and the ranks agree on each try, so that no rank sits in a collective
    (whose timeout is finite) while another job holds the lock for hours."""
    f = open(path, "a") if ranks.lead else None  # noqa: SIM115 - closed below
    try:
        while True:
            got = True
            if f is not None:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    got = False
            if share(ranks, got):
                break
            time.sleep(poll_s)
        yield
    finally:
        if f is not None:
            f.close()


def round_robin(items: Sequence[T], size: int, ranks: Ranks) -> Iterator[list[T]]:
    """Rounds of answering: batch ``b`` (``size`` items in order) goes to rank ``b % world``;
    each round yields this rank's batch (empty when the batches have run out for it), and
    every rank sees the same number of rounds."""
    batches = [list(items[i : i + size]) for i in range(0, len(items), size)]
    for start in range(0, len(batches), ranks.world):
        j = start + ranks.rank
        yield batches[j] if j < len(batches) else []
