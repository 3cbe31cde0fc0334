"""One optimiser step of any objective, at any world size and number of micro-batches.

schedules (lr, weight decay) -> the objective's step inputs (teacher targets for the whole
step) -> per micro-batch: loss, backward (each micro-batch's loss is its share of the rank's
mean; DDP / FSDP2 average over ranks on the last micro-batch, so the gradient is that of the
mean loss over the global batch) -> the mean loss over ranks: non-finite stops the step before
any update, with the same verdict on every rank -> per-group clip on global norms -> AdamW ->
the objective's ``after_step`` (EMA teacher).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from webssl_cli.specs.train import TrainConfig
from webssl_cli.train.batches import Batch
from webssl_cli.train.distributed import all_reduce_mean, clip_grad_norm
from webssl_cli.train.objective import Objective, RunContext
from webssl_cli.train.optim import apply_hyper
from webssl_cli.train.schedules import Schedules


@dataclass
class Step:
    objective: Objective
    optimizer: torch.optim.Optimizer
    schedules: Schedules
    cfg: TrainConfig
    ctx: RunContext


def train_step(s: Step, batch: Batch, it: int) -> dict[str, float]:
    """Step ``it`` on this rank's slice ``batch``; its metrics (means over the global batch),
    or ``{"loss": ..., "diverged": 1.0}`` with nothing updated."""
    ctx, obj, h = s.ctx, s.objective, s.schedules.at(it)
    apply_hyper(s.optimizer, h)
    # drop-path draws: a pure function of (seed, rank, it), so a resume redoes them exactly
    torch.manual_seed(ctx.seed * 1_000_003 + it * 4099 + ctx.rank)
    inputs = obj.step_inputs(batch, it)
    s.optimizer.zero_grad(set_to_none=True)
    names: list[str] = ["loss"]
    sums = torch.zeros((), dtype=torch.float64, device=ctx.device)
    for j, micro in enumerate(inputs):
        with obj.no_sync(last=j == len(inputs) - 1):
            loss, metrics = obj.loss(micro, it)
            (loss / len(inputs)).backward()
        names = ["loss", *metrics]
        sums = sums + torch.stack([loss.detach().double(), *(v.detach().double() for v in metrics.values())])  # fmt: skip
    out = dict(zip(names, all_reduce_mean((sums / len(inputs)).tolist(), ctx.device), strict=True))
    if not math.isfinite(out["loss"]):
        return {"loss": out["loss"], "diverged": 1.0}
    sharded = ctx.strategy == "fsdp"
    for name, params in obj.clip_groups():
        out[name] = float(clip_grad_norm(params, s.cfg.clip_grad, sharded))
    s.optimizer.step()
    out.update(obj.after_step(it))
    out.update(lr=h.lr, wd=h.weight_decay, world_size=float(ctx.world),
               micro_batch=float(ctx.micro), accumulation=float(ctx.accum),
               effective_batch=float(ctx.world * ctx.micro * ctx.accum))  # fmt: skip
    return out
