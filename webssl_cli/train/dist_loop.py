"""Multi-process training of one cell (one process per GPU, or gloo processes on CPU).

The recipe is ``loop.train_step``'s; what changes with several ranks and micro-batches:

1. The rank reads its slice of the global batch (``dist_data``) and cuts it into micro-batches.
2. Teacher targets for the whole step come first (no grad), centred over the *global* batch:
   Sinkhorn-Knopp (or the EMA centre) sums over every micro-batch of every rank, so targets
   do not depend on how the batch is split.
3. Student forward/backward per micro-batch; each micro-batch's loss is its share of the rank's
   mean, gradients are averaged over ranks (DDP all-reduce / FSDP2 reduce-scatter) on the last
   micro-batch only: the gradient is that of the mean loss over the global batch.
   iBOT is normalised per image (then averaged over images), KoLeo per group of
   ``dist.koleo_group`` images (DINOv2: per rank), so both are independent of the split.
4. Clip each module's global gradient norm, AdamW on the (sharded) parameters, EMA of the
   (sharded) teacher on local shards.

Known deviation: DINOv2's batch-subset drop-path draws its subset per forward call (per
micro-batch and rank), so with ``drop_path > 0`` runs at different splits are equal in
distribution, not bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from webssl_cli.data.stream import Position
from webssl_cli.errors import UserError
from webssl_cli.rundir import CellDir, now_iso
from webssl_cli.specs.registry import ModelSpec, get_model
from webssl_cli.specs.train import TrainConfig
from webssl_cli.train import device as dev
from webssl_cli.train import dist_checkpoint as dckpt
from webssl_cli.train import losses as L
from webssl_cli.train import preemption
from webssl_cli.train.batches import to_model_input
from webssl_cli.train.dist_data import LaneLoader, RankBatch, lanes_for, micro_batches_for
from webssl_cli.train.distributed import (
    DistEnv,
    Parallel,
    all_reduce_mean,
    all_reduce_sum,
    clip_grad_norm,
    detect_env,
    device_for,
    init_process_group,
    parallelize,
    peak_memory_bytes,
    resolve_strategy,
    sharded_ema,
    state_bytes,
)
from webssl_cli.train.loop import truncate_metrics, write_backbone
from webssl_cli.train.masking import block_mask
from webssl_cli.train.preemption import PREEMPTED
from webssl_cli.train.schedules import Schedules
from webssl_cli.train.ssl_model import Centers, apply_hyper, build_models, param_groups


@dataclasses.dataclass
class DistState:
    par: Parallel
    optimizer: torch.optim.Optimizer
    centers: Centers
    cfg: TrainConfig
    spec: ModelSpec
    schedules: Schedules
    device: torch.device
    amp: torch.dtype | None
    seed: int
    rank: int
    world: int
    micro: int  # images per micro-batch
    accum: int  # micro-batches per step
    koleo_group: int


def rank_masks(state: DistState, it: int) -> np.ndarray:
    """iBOT masks of this rank's crops at ``it``: (2, B_rank, N).

    Distributed like ``masking.batch_masks`` over the global batch (a ``mask_prob`` fraction of
    the 2 x batch global crops masked, ratios spread evenly over ``mask_ratio``), but drawn per
    crop from (seed, it, global crop index): any world size gives the same mask to the same
    crop, and a rank draws only its own.
    """
    c, b = state.cfg, state.cfg.batch_size
    side = c.crops.global_size // state.spec.patch
    n = side * side
    n_crops = 2 * b
    n_masked = int(n_crops * c.mask_prob)
    edges = np.linspace(c.mask_ratio[0], c.mask_ratio[1], n_masked + 1)
    slot = np.random.default_rng([state.seed, it, 0x1B07]).permutation(n_crops)  # crop -> slot
    per_rank = state.micro * state.accum
    out = np.zeros((2, per_rank, n), dtype=bool)
    for v in range(2):
        for i in range(per_rank):
            crop = v * b + state.rank * per_rank + i  # view-major global crop index
            if slot[crop] < n_masked:
                rng = np.random.default_rng([state.seed, it, 0x1B07, crop])
                ratio = rng.uniform(edges[slot[crop]], edges[slot[crop] + 1])
                out[v, i] = block_mask(rng, (side, side), int(n * ratio)).reshape(n)
    return out


def koleo_grouped(cls_g: Tensor, group: int) -> Tensor:
    """KoLeo of each global view over groups of ``group`` images, averaged over groups, summed
    over the 2 views (DINOv2 sums its two per-view terms). cls_g: (2B, D), view-major."""
    total = cls_g.new_zeros(())
    for view in cls_g.chunk(2):
        total = total + torch.stack([L.koleo_loss(x) for x in view.split(group)]).mean()
    return total


def dist_train_step(state: DistState, rb: RankBatch, it: int) -> dict[str, float]:
    cfg, h, par = state.cfg, state.schedules.at(it), state.par
    apply_hyper(state.optimizer, h)  # 1. schedules
    # drop-path draws: a pure function of (seed, rank, it), so a resume redoes them exactly
    torch.manual_seed(state.seed * 1_000_003 + it * 4099 + state.rank)
    per_rank, mb = state.micro * state.accum, state.micro
    masks_all = torch.from_numpy(rank_masks(state, it)).to(state.device)  # (2, B_rank, N)
    micro = []
    for j in range(state.accum):
        sl = slice(j * mb, (j + 1) * mb)
        g = to_model_input(rb.globals_u8[:, sl], state.device)  # (2mb, 3, G, G), view-major
        loc = to_model_input(rb.locals_u8[:, sl], state.device) if rb.locals_u8.shape[0] else None
        micro.append((g, loc, masks_all[:, sl].reshape(2 * mb, -1), sl))

    def center(logits: Tensor, which: str) -> Tensor:  # over the global batch
        if cfg.centering == "sinkhorn":
            return L.sinkhorn_knopp(logits, h.teacher_temp, cfg.sinkhorn_iters, all_reduce_sum)
        c = getattr(state.centers, which)
        c = torch.zeros(1, logits.shape[-1], device=logits.device) if c is None else c
        probs = L.softmax_center(logits, c, h.teacher_temp)
        setattr(
            state.centers, which, L.updated_center(c, logits, cfg.center_momentum, all_reduce_sum)
        )
        return probs

    with torch.no_grad(), dev.autocast(state.device, state.amp):  # 2. teacher targets, whole step
        outs = [par.teacher_step(g, m) for g, _, m, _ in micro]
    par.reshard_teacher()
    k = outs[0][0].shape[-1]
    t_dino = torch.cat([o[0].view(2, mb, k) for o in outs], dim=1)  # (2, B_rank, K)
    p_dino = center(t_dino.reshape(-1, k), "dino").view(2, per_rank, k)
    p_ibot = center(torch.cat([o[1] for o in outs]), "ibot").split([o[1].shape[0] for o in outs])
    del outs, t_dino

    state.optimizer.zero_grad(set_to_none=True)  # 3. student, one micro-batch at a time
    sums = torch.zeros(4, dtype=torch.float64, device=state.device)  # synced once, below
    for j, (g, loc, m, sl) in enumerate(micro):
        with par.no_sync(last_micro_batch=j == state.accum - 1):
            with dev.autocast(state.device, state.amp):
                cls_g, s_dino, s_ibot = par.student_step(g, loc, m)
                dino = L.dino_loss(s_dino.view(-1, mb, k), p_dino[:, sl], cfg.student_temp)
                weights = (1.0 / m.sum(dim=1).clamp(min=1)).unsqueeze(1).expand_as(m)[m]
                ibot = L.ibot_loss(s_ibot, p_ibot[j], weights, g.shape[0], cfg.student_temp)
                koleo = koleo_grouped(cls_g, state.koleo_group)
                loss = cfg.dino_weight * dino + cfg.ibot_weight * ibot + cfg.koleo_weight * koleo
            (loss / state.accum).backward()
        sums += torch.stack([x.detach().double() for x in (loss, dino, ibot, koleo)])
    p = p_dino.float()
    entropy = float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())
    loss_m, dino_m, ibot_m, koleo_m, entropy = all_reduce_mean(
        [*(sums / state.accum).tolist(), entropy], state.device
    )
    if not math.isfinite(loss_m):  # the same verdict on every rank: the mean is all-reduced
        return {"loss": loss_m, "diverged": 1.0}
    norms = [  # 4. per-module clip (global norms), AdamW, EMA on local shards
        clip_grad_norm(list(mod.parameters()), cfg.clip_grad, par.sharded)
        for mod in par.student.children()
    ]
    state.optimizer.step()
    sharded_ema(par.teacher, par.student, h.momentum)
    return {
        "loss": loss_m, "dino_loss": dino_m, "ibot_loss": ibot_m, "koleo_loss": koleo_m,
        "lr": h.lr, "wd": h.weight_decay, "momentum": h.momentum, "teacher_temp": h.teacher_temp,
        "student_temp": cfg.student_temp, "grad_norm": float(norms[0]),
        "dino_head_grad_norm": float(norms[1]), "ibot_head_grad_norm": float(norms[2]),
        "teacher_entropy": entropy, "masked_tokens": float(all_reduce_sum(masks_all.sum().float())),
        "world_size": float(state.world), "micro_batch": float(mb), "accumulation": float(state.accum),
        "effective_batch": float(state.world * mb * state.accum),
    }  # fmt: skip


def _gather(obj: Any) -> list[Any]:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _data_state(rb: RankBatch) -> dict[str, Any]:
    """Every lane's position and skipped counts (gathered from all ranks)."""
    mine = {
        str(lane): {"position": [p.chunk, p.offset], "problems": dict(rb.problems.get(lane, {}))}
        for lane, p in rb.positions.items()
    }
    merged: dict[str, Any] = {}
    for part in _gather(mine):
        merged.update(part)
    return merged


def export_teacher_backbone(path: Path, spec: ModelSpec, par: Parallel, rank: int) -> None:
    """The teacher backbone's full state dict (gathered from shards), written by rank 0."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(
        par.teacher, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    if rank != 0:
        return
    state = {
        k.removeprefix("backbone."): v
        for k, v in full.items()
        if k.startswith("backbone.") and isinstance(v, torch.Tensor)
    }
    write_backbone(path, spec, state)


def train_distributed(
    run: CellDir,
    spec: ModelSpec,
    cfg: TrainConfig,
    shards: list[str],
    samples_target: int,
    seed: int,
    *,
    env: DistEnv | None = None,
    stop_after: int | None = None,
    progress: Any = None,
) -> str:
    """Train (or resume) in ``run`` as one rank of ``env``; "done", "diverged" or "running"
    (stopped by ``stop_after``). Every rank of the job calls it; rank 0 writes the run files."""
    env = env or detect_env()
    device = device_for(env, dev.pick_device())
    dev.set_threads(cfg.threads)
    owns_group = not dist.is_initialized()
    init_process_group(env, device)
    try:
        return _train(run, spec, cfg, shards, samples_target, seed, device, stop_after, progress)
    finally:
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(run: CellDir, spec: ModelSpec, cfg: TrainConfig, shards: list[str], samples_target: int,
           seed: int, device: torch.device, stop_after: int | None, progress: Any) -> str:  # fmt: skip
    rank, W = dist.get_rank(), dist.get_world_size()
    main = rank == 0
    lanes = lanes_for(cfg, W)
    mb, accum = micro_batches_for(cfg, W)
    group = cfg.dist.koleo_group or mb
    if mb % group:
        raise UserError(
            f"train.dist.koleo_group: {group} does not divide the micro-batch {mb}; choose a divisor"
        )
    iterations = max(1, math.ceil(samples_target / cfg.batch_size))
    torch.manual_seed(seed)  # every rank builds the same initial weights
    student, teacher = build_models(spec, cfg, device)
    student.train()
    strategy = resolve_strategy(cfg.dist.strategy, spec.backbone_params())
    par = parallelize(student, teacher, strategy, device,
                      activation_checkpointing=cfg.dist.activation_checkpointing,
                      compile_blocks=cfg.dist.compile, packed=cfg.dist.packed_crops)  # fmt: skip
    optimizer = torch.optim.AdamW(param_groups(student, cfg), lr=0.0, betas=(0.9, 0.999))
    state = DistState(par, optimizer, Centers(), cfg, spec, Schedules(cfg, iterations), device,
                      dev.autocast_dtype(device, cfg.dtype), seed, rank, W, mb, accum, group)  # fmt: skip
    prototypes = {"dino": cfg.dino_head.n_prototypes, "ibot": cfg.ibot_head.n_prototypes}
    meta = dckpt.load_latest(
        run.checkpoints_dir, student, teacher, optimizer, state.centers, prototypes
    )
    start_it, positions, problems = 0, {}, {}
    if meta is not None:
        if meta["lanes"] != lanes:
            raise UserError(
                f"train.dist.data_lanes: the checkpoint {meta['path']} was written with {meta['lanes']} "
                f"data lanes, this run has {lanes}; set train.dist.data_lanes: {meta['lanes']}"
            )
        start_it = meta["iteration"]
        for lane, d in meta["data"].items():
            positions[int(lane)] = Position(*d["position"])
            problems[int(lane)] = Counter(d["problems"])
        for which in ("dino", "ibot"):
            if getattr(state.centers, which) is not None:
                setattr(state.centers, which, getattr(state.centers, which).to(device))
    if main:
        truncate_metrics(run.metrics_jsonl, start_it)
        run.update_stage("train", state="running", samples_target=iterations * cfg.batch_size,
                         iterations=iterations, step=start_it, samples_seen=start_it * cfg.batch_size,
                         host=socket.gethostname(), started=now_iso(), world_size=W, strategy=strategy,
                         resumed_from=meta["path"] if meta else None)  # fmt: skip
        run.train_dir.mkdir(parents=True, exist_ok=True)
    loader = LaneLoader(shards, seed, cfg.crops, cfg.batch_size, lanes, rank, W, positions,
                        problems, cfg.num_workers)  # fmt: skip
    batches = iter(loader)
    it, t_last, n_last = start_it, time.perf_counter(), 0
    last: dict[str, Any] = {}
    metrics_file = open(run.metrics_jsonl, "a", encoding="utf-8") if main else None  # noqa: SIM115
    preemption.start_listening()
    try:
        while it < iterations and (stop_after is None or it < stop_after):
            rb = next(batches)
            metrics = dist_train_step(state, rb, it)
            if metrics.get("diverged"):
                if main:
                    run.update_stage("train", state="diverged", diverged_at=it, step=it, ended=now_iso(),
                                     error=f"non-finite loss {metrics['loss']} at step {it}")  # fmt: skip
                return "diverged"
            it += 1
            n_last += cfg.batch_size
            if it % cfg.metrics_every == 0 or it == iterations:
                dev.synchronize(device)
                now = time.perf_counter()
                metrics["images_per_s"] = n_last / max(now - t_last, 1e-9)
                metrics["state_bytes"] = float(state_bytes(student, optimizer))  # this rank's
                metrics["peak_memory_bytes"] = float(peak_memory_bytes(device))
                t_last, n_last = now, 0
                skipped, epochs = all_reduce_mean(
                    [float(sum(sum(c.values()) for c in rb.problems.values())), loader.epochs()],
                    device,
                )
                last = {"step": it, "samples_seen": it * cfg.batch_size, "time": time.time(), **metrics,
                        "skipped_samples": int(round(skipped * W)), "data_epochs": epochs * W}  # fmt: skip
                if metrics_file is not None:
                    metrics_file.write(json.dumps(last) + "\n")
                    metrics_file.flush()
            if progress is not None and main:
                progress(
                    {
                        "step": it,
                        "iterations": iterations,
                        "samples_seen": it * cfg.batch_size,
                        **metrics,
                    }
                )
            # USR2 on any rank (preemption, time limit): every rank saves now and stops.
            stop = it < iterations and preemption.agreed(device)
            if it % cfg.checkpoint_every == 0 or it == iterations or stop:
                data = _data_state(rb)
                dckpt.save(run.checkpoints_dir, it, student, teacher, optimizer, state.centers, {
                    "samples_seen": it * cfg.batch_size, "model": spec.name, "world_size": W,
                    "strategy": strategy, "lanes": lanes, "data": data,
                }, cfg.keep_checkpoints)  # fmt: skip
                if main:
                    run.update_stage("train", step=it, samples_seen=it * cfg.batch_size,
                                     images_per_s=last.get("images_per_s"))  # fmt: skip
            if stop:
                return PREEMPTED
    finally:
        preemption.stop_listening()
        loader.close()
        if metrics_file is not None:
            metrics_file.close()
    if it < iterations:
        return "running"
    export_teacher_backbone(run.backbone_export, spec, par, rank)
    if main:
        run.update_stage("train", state="done", step=it, samples_seen=it * cfg.batch_size, ended=now_iso(),
                         images_per_s=last.get("images_per_s"))  # fmt: skip
    dist.barrier()
    return "done"


def train_cell_distributed(
    cell_dir: Path, *, env: DistEnv | None = None, progress: Any = None
) -> str:
    """Job entry point for every rank of a multi-process training job (torchrun or SLURM tasks).

    Same contract as ``loop.train_cell``: returns "done"/"diverged", raises on failure (rank 0
    records the error in status.json).
    """
    from webssl_cli.train.loop import cell_shards

    run = CellDir(cell_dir)
    spec = run.read_spec()
    env = env or detect_env()
    try:
        cfg = TrainConfig.model_validate(spec.get("train") or {})
        model = get_model(spec["model"])
        seed = int(spec.get("seed", cfg.seed))
        return train_distributed(run, model, cfg, cell_shards(spec), int(spec["samples_seen"]), seed,
                                 env=env, progress=progress)  # fmt: skip
    except BaseException as exc:
        if env.rank == 0:
            msg = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
            run.update_stage("train", state="failed", error=msg, ended=now_iso())
        raise
