"""The recipe's schedules as pure functions of the iteration (no state to checkpoint).

lr: linear warmup from 0, then cosine to ``min_lr``; peak scaled by the batch (sqrt in DINOv2).
weight decay and teacher momentum: cosine from start to end over the run. Teacher temperature:
linear warmup, then constant. The prototype layers' lr is 0 for ``freeze_last_layer_iters``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from webssl_cli.specs.train import TrainConfig


def cosine(start: float, end: float, it: int, total: int) -> float:
    if total <= 0:
        return end
    t = min(max(it, 0), total) / total
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * t))


@dataclass(frozen=True)
class Hyper:
    lr: float
    last_layer_lr: float
    weight_decay: float
    momentum: float
    teacher_temp: float


@dataclass(frozen=True)
class Schedules:
    cfg: TrainConfig
    iterations: int
    width: int | None = None  # the backbone's, for TrainConfig.lr_width_ref

    def at(self, it: int) -> Hyper:
        c, total = self.cfg, self.iterations
        warmup = min(c.warmup_iters, total)
        peak = c.peak_lr(self.width)
        if it < warmup:
            lr = peak * it / warmup
        else:
            lr = cosine(peak, c.min_lr, it - warmup, total - warmup)
        t_warm = min(c.teacher_temp_warmup_iters, total)
        if it < t_warm:
            temp = c.teacher_temp + (c.teacher_temp_end - c.teacher_temp) * it / t_warm
        else:
            temp = c.teacher_temp_end
        return Hyper(
            lr=lr,
            last_layer_lr=0.0 if it < c.freeze_last_layer_iters else lr,
            weight_decay=cosine(c.weight_decay, c.weight_decay_end, it, total),
            momentum=cosine(c.momentum_teacher, c.momentum_teacher_end, it, total),
            teacher_temp=temp,
        )
