"""The training loop of one cell, at any world size (a single process is world size 1).

``train_cell(cell_dir)`` is the job entry point (run-directory contract in docs/architecture.md)
and what every rank of a multi-process job (torchrun, SLURM tasks) calls; ``train(...)`` is the
same loop for a directory and a config given directly. The pieces: ``cell.load_cell`` (the
cell's spec), ``batches.LaneLoader`` (this rank's slice of every global batch), the objective
(``objectives.build_objective``: models, losses, teacher), ``step.train_step``,
``checkpoint.Checkpointer`` (torch.distributed.checkpoint) and ``metrics.RunLog``.

Preemption (signal-driven checkpoint): while ``train`` runs it handles SIGUSR2 (what SLURM sends
before a time limit or preemption, ``--signal=USR2@90``; also ``scancel --signal=USR2``) by
setting a flag, and ``request_checkpoint()`` sets the same flag from code. At every step boundary the ranks all-reduce the flag; when any rank has it
set, every rank saves a checkpoint of that step collectively, the train stage is recorded as
"queued", and ``train`` returns "preempted". The handler that was installed before (submitit's
requeue handler) is then called with SIGUSR2 on every rank (also where only another rank
received the signal: submitit requeues from rank 0), so a submitit job requeues after, not
before, the collective save, and the requeued job resumes from that step.
"""

from __future__ import annotations

import functools
import math
import signal
import threading
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from webssl_cli import device as dev
from webssl_cli.errors import UserError
from webssl_cli.rundir import CellDir, now_iso
from webssl_cli.specs.registry import ModelSpec
from webssl_cli.specs.train import TrainConfig, resolve_strategy
from webssl_cli.train import distributed as D
from webssl_cli.train.batches import (
    Batch,
    LaneLoader,
    lanes_for,
    micro_batches_for,
    single_view_scale,
)
from webssl_cli.train.cell import base_checkpoint, load_cell
from webssl_cli.train.checkpoint import Checkpointer, Resumed
from webssl_cli.train.metrics import Progress, RunLog, write_backbone
from webssl_cli.train.objective import RunContext
from webssl_cli.train.objectives import build_objective
from webssl_cli.train.optim import build_optimizer
from webssl_cli.train.posembed import init_from_checkpoint
from webssl_cli.train.schedules import Schedules
from webssl_cli.train.step import Step, train_step

_REQUESTED = threading.Event()


def request_checkpoint() -> None:
    """Ask the running loop to checkpoint at the next step boundary and stop ("preempted")."""
    _REQUESTED.set()


class Preemption:
    """SIGUSR2 -> the checkpoint flag, for the duration of a run (main thread only)."""

    def __init__(self) -> None:
        _REQUESTED.clear()
        self.previous: Any = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGUSR2, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        request_checkpoint()

    def agreed(self, device: torch.device) -> bool:
        return D.any_rank(_REQUESTED.is_set(), device)

    def close(self, stopped: bool) -> None:
        """Restore the previous handler; after a stop, hand it the signal we held back."""
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGUSR2, self.previous or signal.SIG_DFL)
        if stopped and callable(self.previous):  # also where another rank got the signal:
            self.previous(signal.SIGUSR2, None)  # rank 0 is the one that requeues a submitit job


def train(run: CellDir, spec: ModelSpec, cfg: TrainConfig, shards: list[str], samples_target: int,
          seed: int, method: str = "webdino", *, env: D.DistEnv | None = None,
          progress: Progress | None = None, stop_after: int | None = None,
          init_from: Path | None = None) -> str:  # fmt: skip
    """Train (or resume) in ``run`` as one rank of ``env`` (default: from the environment), with
    the objective of ``method`` (webdino, clip, mae).

    Returns "done", "diverged", "preempted" (checkpointed on request) or "running" (stopped by
    ``stop_after``, for tests). Every rank of the job calls it; rank 0 writes the run files.
    ``init_from``: a base cell's checkpoint to start from when the run has none of its own.
    """
    env = env or D.detect_env()
    device = D.device_for(env, dev.pick_device())
    dev.set_threads(cfg.threads)
    owns_group = not dist.is_initialized()
    D.init_process_group(env, device)
    try:
        return _train(run, spec, cfg, shards, samples_target, seed, method, device, progress,
                      stop_after, init_from)  # fmt: skip
    finally:
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(run: CellDir, spec: ModelSpec, cfg: TrainConfig, shards: list[str], samples_target: int,
           seed: int, method: str, device: torch.device, progress: Progress | None,
           stop_after: int | None, init_from: Path | None = None) -> str:  # fmt: skip
    rank, world = dist.get_rank(), dist.get_world_size()
    iterations = max(1, math.ceil(samples_target / cfg.batch_size))
    mb, accum = micro_batches_for(cfg, world)
    strategy = resolve_strategy(cfg.dist.strategy, spec.backbone_params())
    ctx = RunContext(device, dev.autocast_dtype(device, cfg.dtype), seed, iterations, rank, world,
                     mb, accum, strategy, method, tuple(shards), str(run.root))  # fmt: skip
    objective = build_objective(spec, cfg, ctx)
    optimizer = build_optimizer(objective.param_groups(), device, cfg.adam_betas, cfg.adam_eps)
    step = Step(objective, optimizer, Schedules(cfg, iterations, spec.width), cfg, ctx)
    ckpt = Checkpointer(run.checkpoints_dir, cfg.keep_checkpoints)
    resumed = ckpt.load_latest(objective, optimizer, sharded=strategy == "fsdp")
    if resumed is None and init_from is not None:  # the run's own checkpoints take precedence
        init_from_checkpoint(objective, init_from)
    lanes = _lanes(cfg, world, resumed)
    it = resumed.iteration if resumed else 0
    log = RunLog(run, cfg.batch_size, iterations, cfg.metrics_every, rank == 0, progress)
    log.start(it, world_size=world, strategy=strategy, resumed_from=resumed and resumed.path,
              initialised_from=str(init_from) if init_from else None)  # fmt: skip
    loader = LaneLoader(shards, seed, cfg.crops, cfg.batch_size, lanes, rank, world,
                        resumed.positions if resumed else None,
                        resumed.problems if resumed else None, cfg.num_workers,
                        single_view_scale(cfg, method), captions=method == "clip")  # fmt: skip
    batches, preemption, stopped = iter(loader), Preemption(), False
    try:
        while it < iterations and (stop_after is None or it < stop_after):
            batch = next(batches)
            metrics = train_step(step, batch, it)
            if metrics.get("diverged"):
                log.status(state="diverged", diverged_at=it, step=it, ended=now_iso(),
                           error=f"non-finite loss {metrics['loss']} at step {it}")  # fmt: skip
                return "diverged"
            it += 1
            log.step(it, metrics, functools.partial(_rare_metrics, step, batch, loader, world))
            stopped = preemption.agreed(device)
            if it % cfg.checkpoint_every == 0 or it == iterations or stopped:
                ckpt.save(it, objective, optimizer, {
                    "samples_seen": it * cfg.batch_size, "model": spec.name, "world_size": world,
                    "strategy": strategy, "lanes": lanes, "data": _data_state(batch),
                })  # fmt: skip
                log.checkpointed(it)
            if stopped and it < iterations:
                log.status(state="queued", step=it, note=f"checkpointed at step {it} on a "
                           "preemption request; the next run resumes from there")  # fmt: skip
                return "preempted"
    finally:
        loader.close()
        log.close()
        preemption.close(stopped and it < iterations)
    if it < iterations:
        return "running"
    backbone = objective.export_backbone()  # collective (gathers shards)
    if rank == 0:
        write_backbone(run.backbone_export, spec, backbone)
    log.status(state="done", step=it, samples_seen=it * cfg.batch_size, ended=now_iso(),
               images_per_s=log.last.get("images_per_s"))  # fmt: skip
    D.barrier()
    return "done"


def _lanes(cfg: TrainConfig, world: int, resumed: Resumed | None) -> int:
    lanes = lanes_for(cfg, world, resumed.lanes if resumed else None)
    if resumed is not None and resumed.lanes != lanes:
        raise UserError(
            f"train.dist.data_lanes: the checkpoint {resumed.path} was written with {resumed.lanes} "
            f"data lanes, this run has {lanes}; set train.dist.data_lanes: {resumed.lanes}"
        )
    return lanes


def _rare_metrics(step: Step, batch: Batch, loader: LaneLoader, world: int) -> dict[str, Any]:
    """Fields of a metrics line that cost a collective: skipped samples and passes over the data
    (summed over ranks), this rank's state and peak memory."""
    skipped = float(sum(sum(c.values()) for c in batch.problems.values()))
    skipped, epochs = D.all_reduce_mean([skipped, loader.epochs()], step.ctx.device)
    return {
        "skipped_samples": int(round(skipped * world)),
        "data_epochs": epochs * world,
        "state_bytes": float(D.state_bytes(step.objective.trainable(), step.optimizer)),
        "peak_memory_bytes": float(D.peak_memory_bytes(step.ctx.device)),
    }


def _data_state(batch: Batch) -> dict[str, Any]:
    """Every lane's position and skipped counts (gathered from all ranks)."""
    mine = {
        str(lane): {"position": [p.chunk, p.offset], "problems": dict(batch.problems.get(lane, {}))}
        for lane, p in batch.positions.items()
    }
    merged: dict[str, Any] = {}
    for part in D.gather_objects(mine):
        merged.update(part)
    return merged


def train_cell(
    cell_dir: Path, *, env: D.DistEnv | None = None, progress: Progress | None = None
) -> str:
    """Job entry point for every rank: train the cell in ``cell_dir``; returns "done",
    "diverged" or "preempted", raises on failure (rank 0 records the error in status.json)."""
    run = CellDir(cell_dir)
    env = env or D.detect_env()
    try:
        return train(run, *load_cell(run), env=env, progress=progress,
                     init_from=base_checkpoint(run))  # fmt: skip
    except BaseException as exc:
        # SystemExit: submitit's requeue handler, after a preemption checkpoint (launch records it)
        if env.rank == 0 and not isinstance(exc, SystemExit):
            msg = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
            run.update_stage("train", state="failed", error=msg, ended=now_iso())
        raise
