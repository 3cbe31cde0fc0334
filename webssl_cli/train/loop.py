"""The training loop of one cell: a commented DINOv2 recipe around a one-screen ``train_step``.

``train_cell(cell_dir)`` is the job entry point (run-directory contract in docs/architecture.md);
``train(...)`` is the same loop for a directory and a config outside a study (``webssl train
--config``). The step: apply schedules -> teacher targets -> student losses -> backward ->
per-module clip -> AdamW step -> EMA teacher.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from webssl_cli import device as dev
from webssl_cli.data.stream import Position, ShardStream, expand_urls
from webssl_cli.errors import UserError
from webssl_cli.rundir import CellDir, atomic_write_bytes, atomic_write_text, now_iso
from webssl_cli.specs.registry import ModelSpec, get_model
from webssl_cli.specs.train import TrainConfig
from webssl_cli.train import checkpoint as ckpt
from webssl_cli.train.batches import Batch, BatchLoader, to_model_input
from webssl_cli.train.ema import ema_update
from webssl_cli.train.masking import batch_masks
from webssl_cli.train.schedules import Schedules
from webssl_cli.train.ssl_model import (
    Centers,
    SSLModel,
    apply_hyper,
    build_models,
    forward_losses,
    param_groups,
)

Progress = Callable[[dict[str, Any]], None]


@dataclasses.dataclass
class State:
    student: SSLModel
    teacher: SSLModel
    optimizer: torch.optim.Optimizer
    centers: Centers
    cfg: TrainConfig
    schedules: Schedules
    device: torch.device
    amp: torch.dtype | None
    seed: int
    rank: int = 0


def make_masks(state: State, it: int, n_images: int) -> torch.Tensor:
    """iBOT masks of iteration ``it``: a pure function of (seed, rank, it)."""
    c = state.cfg
    side = c.crops.global_size // state.student.backbone.patch_size
    rng = np.random.default_rng([state.seed, state.rank, it, 0x1B07])
    m = batch_masks(rng, n_images, (side, side), c.mask_prob, c.mask_ratio)
    return torch.from_numpy(m).to(state.device)


def train_step(state: State, batch: Batch, it: int) -> dict[str, float]:
    """One optimiser step; returns the step's metrics (floats)."""
    cfg, h = state.cfg, state.schedules.at(it)
    apply_hyper(state.optimizer, h)  # 1. schedules: lr, wd, last-layer freeze
    g = to_model_input(batch.globals_u8, state.device)  # (2B, 3, G, G), view-major
    loc = to_model_input(batch.locals_u8, state.device) if batch.locals_u8.shape[0] else None
    masks = make_masks(state, it, g.shape[0])  # (2B, N)
    with dev.autocast(state.device, state.amp):  # 2. teacher targets + student losses
        out = forward_losses(state.student, state.teacher, g, loc, masks, h, cfg, state.centers)
    loss = out["loss"]
    if not torch.isfinite(loss):
        return {"loss": float(loss.detach()), "diverged": 1.0}
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()  # 3. backward, then clip each module on its own as DINOv2 does
    norms = [
        torch.nn.utils.clip_grad_norm_(m.parameters(), cfg.clip_grad)
        for m in state.student.children()
    ]
    state.optimizer.step()  # 4. AdamW
    ema_update(state.teacher, state.student, h.momentum)  # 5. EMA teacher
    p = out["teacher_probs"].float()
    return {
        "loss": float(loss.detach()),
        **{k: float(out[k].detach()) for k in ("dino_loss", "ibot_loss", "koleo_loss")},
        "lr": h.lr,
        "wd": h.weight_decay,
        "momentum": h.momentum,
        "teacher_temp": h.teacher_temp,
        "student_temp": cfg.student_temp,
        "grad_norm": float(norms[0]),  # the backbone's (dino/iBOT heads: *_grad_norm)
        "dino_head_grad_norm": float(norms[1]),
        "ibot_head_grad_norm": float(norms[2]),
        # Collapse monitors: per-image entropy of the targets (low = confident) and the entropy
        # of their batch mean (low = every image on the same few prototypes).
        "teacher_entropy": float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean()),
        "teacher_marginal_entropy": float(
            -(p.mean((0, 1)) * p.mean((0, 1)).clamp_min(1e-12).log()).sum()
        ),
        "masked_tokens": float(masks.sum()),
    }


def write_backbone(path: Path, spec: ModelSpec, state: dict[str, torch.Tensor]) -> None:
    """train/teacher_backbone.pt: {"model", "spec", "state_dict"} (what evaluation loads)."""
    state = {k: v.detach().cpu() for k, v in state.items()}
    buf = io.BytesIO()
    torch.save({"model": spec.name, "spec": dataclasses.asdict(spec), "state_dict": state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def export_backbone(path: Path, spec: ModelSpec, teacher: SSLModel) -> None:
    write_backbone(path, spec, teacher.backbone.state_dict())


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from (they will be redone)."""
    if not path.exists():
        return
    kept = []
    for ln in path.read_text(errors="replace").splitlines():
        try:
            if json.loads(ln).get("step", 0) <= last_step:
                kept.append(ln)
        except ValueError:  # a line cut by a kill mid-write
            continue
    atomic_write_text(path, "".join(ln + "\n" for ln in kept))


def train(
    run: CellDir,
    spec: ModelSpec,
    cfg: TrainConfig,
    shards: list[str],
    samples_target: int,
    seed: int,
    *,
    progress: Progress | None = None,
    stop_after: int | None = None,
) -> str:
    """Train to ``samples_target`` samples in ``run`` (resuming when it holds checkpoints).

    Returns "done" or "diverged"; ``stop_after`` ends the process's work early (tests).
    """
    device = dev.pick_device()
    dev.set_threads(cfg.threads)
    iterations = max(1, math.ceil(samples_target / cfg.batch_size))
    torch.manual_seed(seed)
    student, teacher = build_models(spec, cfg, device)
    optimizer = torch.optim.AdamW(param_groups(student, cfg), lr=0.0, betas=(0.9, 0.999))
    state = State(student, teacher, optimizer, Centers(), cfg, Schedules(cfg, iterations), device,
                  dev.autocast_dtype(device, cfg.dtype), seed)  # fmt: skip
    start_it, position, problems = 0, Position(), {}
    resumed = ckpt.load_latest(run.checkpoints_dir, map_location=device)
    if resumed is not None:
        student.load_state_dict(resumed["student"])
        teacher.load_state_dict(resumed["teacher"])
        optimizer.load_state_dict(resumed["optimizer"])
        state.centers = Centers(**resumed["centers"])
        start_it, position, problems = (
            resumed["iteration"],
            Position(**resumed["data"]),
            resumed["problems"],
        )
        ckpt.set_rng_state(resumed["rng"])
    truncate_metrics(run.metrics_jsonl, start_it)
    run.update_stage("train", state="running", samples_target=iterations * cfg.batch_size, iterations=iterations,
                     step=start_it, samples_seen=start_it * cfg.batch_size, host=socket.gethostname(),
                     started=now_iso(), resumed_from=resumed["path"] if resumed else None)  # fmt: skip

    stream = ShardStream(shards, seed=seed, start=position)
    stream.problems.update(
        {k: v for k, v in problems.items() if k != "undecodable" and k != "no_image"}
    )
    loader = BatchLoader(stream, cfg.crops, cfg.batch_size, cfg.num_workers)
    loader.problems.update({k: v for k, v in problems.items() if k in ("undecodable", "no_image")})
    batches = iter(loader)
    run.train_dir.mkdir(parents=True, exist_ok=True)
    student.train()
    it, t_last, n_last, last_metrics = start_it, time.perf_counter(), 0, {}
    try:
        with open(run.metrics_jsonl, "a", encoding="utf-8") as metrics_file:
            while it < iterations and (stop_after is None or it < stop_after):
                batch = next(batches)
                metrics = train_step(state, batch, it)
                if metrics.get("diverged"):
                    run.update_stage("train", state="diverged", diverged_at=it, step=it, ended=now_iso(),
                                     error=f"non-finite loss {metrics['loss']} at step {it}")  # fmt: skip
                    return "diverged"
                it += 1
                n_last += cfg.batch_size
                if it % cfg.metrics_every == 0 or it == iterations:
                    dev.synchronize(device)
                    now = time.perf_counter()
                    metrics["images_per_s"] = n_last / max(now - t_last, 1e-9)
                    t_last, n_last = now, 0
                    skipped = sum(batch.problems.values())
                    last_metrics = {"step": it, "samples_seen": it * cfg.batch_size, "time": time.time(), **metrics,
                                    "skipped_samples": skipped, "data_epochs": stream.epochs()}  # fmt: skip
                    metrics_file.write(json.dumps(last_metrics) + "\n")
                    metrics_file.flush()
                if progress is not None:
                    progress(
                        {
                            "step": it,
                            "iterations": iterations,
                            "samples_seen": it * cfg.batch_size,
                            **metrics,
                        }
                    )
                if it % cfg.checkpoint_every == 0 or it == iterations:
                    ckpt.save(run.checkpoints_dir, it, {
                        "student": student.state_dict(), "teacher": teacher.state_dict(),
                        "optimizer": optimizer.state_dict(), "centers": dataclasses.asdict(state.centers),
                        "data": dataclasses.asdict(batch.position), "problems": dict(batch.problems),
                        "samples_seen": it * cfg.batch_size, "model": spec.name,
                    }, cfg.keep_checkpoints)  # fmt: skip
                    run.update_stage("train", step=it, samples_seen=it * cfg.batch_size,
                                     images_per_s=last_metrics.get("images_per_s"))  # fmt: skip
    finally:
        loader.close()
    if it < iterations:
        return "running"  # stopped early on request (stop_after)
    export_backbone(run.backbone_export, spec, teacher)
    run.update_stage("train", state="done", step=it, samples_seen=it * cfg.batch_size, ended=now_iso(),
                     images_per_s=last_metrics.get("images_per_s"))  # fmt: skip
    return "done"


def cell_shards(spec: dict[str, Any]) -> list[str]:
    """Shard URLs of a cell: the filtered subset when a filter ran, else the source pattern."""
    data = spec.get("data") or {}
    if data.get("filter_dir"):
        from webssl_cli.data.filtering import filtered_sources

        sources = filtered_sources(Path(data["filter_dir"]))
        return expand_urls(sources if isinstance(sources, str | list | tuple) else list(sources))
    if not data.get("shards"):
        raise UserError(
            "cell.json: data.shards: missing; the study layer must name the cell's shards"
        )
    return expand_urls(data["shards"])


def train_cell(cell_dir: Path, *, progress: Progress | None = None) -> str:
    """Job entry point: train the cell in ``cell_dir``; returns "done" or "diverged"."""
    from webssl_cli.train import dist_checkpoint, distributed

    if distributed.detect_env().world_size > 1 or dist_checkpoint.list_checkpoints(
        CellDir(cell_dir).checkpoints_dir
    ):  # one rank of a multi-process job, or a cell a multi-process job checkpointed
        from webssl_cli.train.dist_loop import train_cell_distributed

        return train_cell_distributed(cell_dir, progress=progress)
    run = CellDir(cell_dir)
    spec = run.read_spec()
    try:
        cfg = TrainConfig.model_validate(spec.get("train") or {})
        model = get_model(spec["model"])
        seed = int(spec.get("seed", cfg.seed))
        return train(
            run, model, cfg, cell_shards(spec), int(spec["samples_seen"]), seed, progress=progress
        )
    except BaseException as exc:
        msg = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        run.update_stage("train", state="failed", error=msg, ended=now_iso())
        raise
