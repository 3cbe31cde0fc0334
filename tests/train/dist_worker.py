"""Run ``loop.train`` as rank ``rank`` of ``world`` gloo processes (tests and benchmarks).

Used with ``launch(world, cell, *phases)``, or as a script:
``python tests/train/dist_worker.py WORLD CELL_DIR [STOP_AFTER ... end]``.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_rank(rank: int, world: int, ports: list[int], cell: str, phases: list[int | None]) -> None:
    """Train ``cell`` as ``rank``, once per phase (stop after that many steps; None: to the
    end), each phase a fresh process group: a stop followed by a resume, in one process."""
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
        WEBSSL_DEVICE="cpu", OMP_NUM_THREADS="1",
    )  # fmt: skip
    import torch

    torch.set_num_threads(1)
    from webssl_cli.rundir import CellDir
    from webssl_cli.train.cell import load_cell
    from webssl_cli.train.loop import train

    run = CellDir(Path(cell))
    for port, stop_after in zip(ports, phases, strict=True):
        os.environ["MASTER_PORT"] = str(port)
        train(run, *load_cell(run), stop_after=stop_after)


def preempt_rank(rank: int, world: int, port: int, cell: str, who: int, at: int, out: str) -> None:
    """Train ``cell`` as ``rank``; rank ``who`` alone asks for a checkpoint during step ``at``
    (as if only its process got SIGUSR2). Writes what ``train`` returned to ``out``.rank."""
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port), WEBSSL_DEVICE="cpu", OMP_NUM_THREADS="1",
    )  # fmt: skip
    import torch

    torch.set_num_threads(1)
    from webssl_cli.rundir import CellDir
    from webssl_cli.train import loop
    from webssl_cli.train.cell import load_cell

    real = loop.train_step

    def step(s, batch, it):
        if rank == who and it == at:
            loop.request_checkpoint()
        return real(s, batch, it)

    loop.train_step = step  # type: ignore[assignment]
    run = CellDir(Path(cell))
    Path(f"{out}.{rank}").write_text(loop.train(run, *load_cell(run)))


def launch_preempted(world: int, cell: Path, who: int, at: int, out: Path) -> None:
    import torch.multiprocessing as tmp

    args = (world, free_port(), str(cell), who, at, str(out))
    tmp.spawn(preempt_rank, args=args, nprocs=world, join=True)


def launch(world: int, cell: Path, *phases: int | None) -> None:
    """``world`` ranks on this machine, through ``phases`` (default: one run to the end);
    returns when all finished (raises if one failed)."""
    import torch.multiprocessing as tmp

    phases_l = list(phases) or [None]
    ports = [free_port() for _ in phases_l]
    tmp.spawn(run_rank, args=(world, ports, str(cell), phases_l), nprocs=world, join=True)


if __name__ == "__main__":
    launch(
        int(sys.argv[1]), Path(sys.argv[2]), *[int(x) if x != "end" else None for x in sys.argv[3:]]
    )
