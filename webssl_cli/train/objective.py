"""What a self-supervised objective provides to the training loop.

The loop (``train.loop``) owns everything an objective does not care about: the data lanes,
micro-batches and gradient accumulation, the optimiser and its lr / weight-decay schedule,
per-group gradient clipping, the divergence check, checkpoints, metrics and the run directory.
An objective owns its models (student, teacher, heads), how they are spread over the ranks,
its losses, its targets and schedules, and what it exports for evaluation.

One step, as the loop runs it::

    inputs = objective.step_inputs(batch, it)     # device tensors per micro-batch, plus any
                                                  # whole-step no-grad work (teacher targets)
    for j, micro in enumerate(inputs):
        with objective.no_sync(last=j == len(inputs) - 1):
            loss, metrics = objective.loss(micro, it)
            (loss / len(inputs)).backward()
    clip each of objective.clip_groups(); optimizer.step()
    metrics |= objective.after_step(it)           # EMA teacher, step-level metrics

``batch`` is this rank's slice of the global batch (``batches.Batch``); an objective that needs
more of a sample (captions for CLIP) reads it from there. An objective without a teacher (MAE)
has nothing to do in ``after_step`` and exports its encoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from webssl_cli.train.batches import Batch


@dataclass(frozen=True)
class RunContext:
    """Where and how an objective runs: what it needs beyond the model spec and TrainConfig."""

    device: torch.device
    amp: torch.dtype | None  # autocast dtype (None: fp32)
    seed: int
    iterations: int  # the run's length (schedules are functions of it)
    rank: int = 0
    world: int = 1
    micro: int = 0  # images per micro-batch on this rank
    accum: int = 1  # micro-batches per step
    strategy: str = "ddp"  # "ddp" | "fsdp"
    method: str = "webdino"  # the cell's method (specs.cell.METHODS)
    shards: tuple[str, ...] = ()  # the training shard URLs (CLIP learns its tokenizer from them)
    run_dir: str | None = None  # the cell directory (CLIP keeps its tokenizer and text tower there)


class Objective(Protocol):
    def trainable(self) -> nn.Module:
        """The module whose parameters the optimiser updates (keys of its optimiser state)."""
        ...

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser groups (``optim.param_groups``' keys: lr_mult, wd_mult, is_last_layer)."""
        ...

    def clip_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        """(metric name, parameters): each group is clipped to ``clip_grad`` on its own."""
        ...

    def step_inputs(self, batch: Batch, it: int) -> list[Any]:
        """One entry per micro-batch, ready for ``loss``."""
        ...

    def loss(self, inputs: Any, it: int) -> tuple[Tensor, dict[str, Tensor]]:
        """The micro-batch's loss (its mean) and metrics (averaged over micro-batches and
        ranks by the loop)."""
        ...

    def no_sync(self, last: bool) -> AbstractContextManager[Any]:
        """Skip the gradient all-reduce on all but the last micro-batch (DDP)."""
        ...

    def after_step(self, it: int) -> dict[str, float]:
        """After the optimiser step (EMA teacher); step-level metrics, the same on every rank."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything to resume besides the optimiser, as torch.distributed.checkpoint stores
        it (sharded tensors allowed). Also the template ``load_state_dict`` fills."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

    def export_backbone(self) -> dict[str, Tensor]:
        """The encoder evaluation uses, as a full (gathered) state dict on CPU. Collective."""
        ...
