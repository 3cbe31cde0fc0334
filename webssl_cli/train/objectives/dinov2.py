"""DINOv2 / Web-DINO as an ``Objective``: a student and an EMA teacher (ViT + DINO head + iBOT
head), DINO, iBOT and KoLeo losses, Sinkhorn-Knopp or EMA centring, the teacher temperature and
momentum schedules, iBOT block masks.

What changes with several ranks and micro-batches, and why the numbers do not:

1. Teacher targets for the whole step come first (``step_inputs``, no grad), centred over the
   *global* batch: Sinkhorn-Knopp (or the EMA centre) sums over every micro-batch of every
   rank, so targets do not depend on how the batch is split.
2. iBOT is normalised per image (then averaged over images), KoLeo per group of
   ``dist.koleo_group`` images (DINOv2: per rank), so both are independent of the split.
3. iBOT masks are a function of (seed, step, global crop index).
4. The EMA of the (sharded) teacher runs on local shards.

Known deviation: DINOv2's batch-subset drop-path draws its subset per forward call (per
micro-batch and rank), so with ``drop_path > 0`` runs at different splits are equal in
distribution, not bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    set_model_state_dict,
)

from webssl_cli import device as dev
from webssl_cli.errors import UserError
from webssl_cli.specs.registry import ModelSpec
from webssl_cli.specs.train import TrainConfig
from webssl_cli.train import losses as L
from webssl_cli.train.batches import Batch, to_model_input
from webssl_cli.train.distributed import all_reduce_sum, no_sync, reshard, wrap
from webssl_cli.train.ema import ema_update
from webssl_cli.train.masking import crop_masks
from webssl_cli.train.objective import RunContext
from webssl_cli.train.objectives.dinov2_model import (
    StudentStep,
    TeacherStep,
    build_models,
    shard_units,
)
from webssl_cli.train.optim import param_groups
from webssl_cli.train.schedules import Schedules


@dataclass
class MicroInputs:
    g: Tensor  # (2mb, 3, G, G) global crops, view-major
    loc: Tensor | None  # (L*mb, 3, S, S) local crops
    masks: Tensor  # (2mb, N) bool
    t_dino: Tensor  # (2, mb, K) teacher targets of the global crops
    t_ibot: Tensor  # (M, K) teacher targets of the masked patch tokens


def koleo_grouped(cls_g: Tensor, group: int) -> Tensor:
    """KoLeo of each global view over groups of ``group`` images, averaged over groups, summed
    over the 2 views (DINOv2 sums its two per-view terms). cls_g: (2B, D), view-major."""
    total = cls_g.new_zeros(())
    for view in cls_g.chunk(2):
        total = total + torch.stack([L.koleo_loss(x) for x in view.split(group)]).mean()
    return total


def entropy(p: Tensor) -> Tensor:
    return -(p * p.clamp_min(1e-12).log()).sum(-1)


class DINOv2:
    """The DINOv2 recipe behind the ``Objective`` interface (see ``train.objective``)."""

    def __init__(self, spec: ModelSpec, cfg: TrainConfig, ctx: RunContext) -> None:
        self.spec, self.cfg, self.ctx = spec, cfg, ctx
        self.koleo_group = cfg.dist.koleo_group or ctx.micro
        if ctx.micro % self.koleo_group:
            raise UserError(
                f"train.dist.koleo_group: {self.koleo_group} does not divide the micro-batch "
                f"{ctx.micro}; choose a divisor"
            )
        torch.manual_seed(ctx.seed)  # every rank builds the same initial weights
        self.student, self.teacher = build_models(spec, cfg, ctx.device)
        self.student.train()
        self.student.backbone.grad_checkpointing = bool(cfg.dist.activation_checkpointing)
        if cfg.dist.compile:
            for m in (self.student, self.teacher):
                for blk in m.backbone.blocks:
                    blk.compile()
        self.student_step = wrap(StudentStep(self.student, cfg.dist.packed_crops),
                                 shard_units(self.student), ctx.strategy, ctx.device, trainable=True)  # fmt: skip
        self.teacher_step = wrap(TeacherStep(self.teacher), shard_units(self.teacher),
                                 ctx.strategy, ctx.device, trainable=False)  # fmt: skip
        self.centers: dict[str, Tensor] = {}
        if cfg.centering == "ema":  # a zero centre before the first batch, as DINO starts
            k = {"dino": cfg.dino_head.n_prototypes, "ibot": cfg.ibot_head.n_prototypes}
            self.centers = {n: torch.zeros(1, k[n], device=ctx.device) for n in k}
        self.schedules = Schedules(cfg, ctx.iterations, spec.width)
        self._step_metrics: dict[str, float] = {}

    # ---- optimisation -----------------------------------------------------------------------
    def trainable(self) -> nn.Module:
        return self.student

    def param_groups(self) -> list[dict[str, Any]]:
        return param_groups(self.student, self.cfg, self.student.backbone.n_blocks)

    def clip_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        s = self.student  # clipped one module at a time, as DINOv2 does
        return [("grad_norm", list(s.backbone.parameters())),
                ("dino_head_grad_norm", list(s.dino_head.parameters())),
                ("ibot_head_grad_norm", list(s.ibot_head.parameters()))]  # fmt: skip

    def no_sync(self, last: bool) -> AbstractContextManager[Any]:
        return no_sync(self.student_step, last)

    # ---- one step ------------------------------------------------------------------------------
    def masks(self, it: int) -> np.ndarray:
        """(2, B_rank, N) iBOT masks of this rank's global crops at step ``it``."""
        c, b, per_rank = self.cfg, self.cfg.batch_size, self.ctx.micro * self.ctx.accum
        side = c.crops.global_size // self.spec.patch
        mine = np.arange(per_rank) + self.ctx.rank * per_rank
        crops = np.concatenate([mine, mine + b])  # view-major global crop indices
        m = crop_masks(self.ctx.seed, it, 2 * b, crops, (side, side), c.mask_prob, c.mask_ratio)
        return m.reshape(2, per_rank, side * side)

    def _center(self, logits: Tensor, which: str, temp: float) -> Tensor:
        """Targets centred over the global batch (all-reduce hooks sum over ranks)."""
        cfg = self.cfg
        if cfg.centering == "sinkhorn":
            return L.sinkhorn_knopp(logits, temp, cfg.sinkhorn_iters, all_reduce_sum)
        c = self.centers[which]
        probs = L.softmax_center(logits, c, temp)
        self.centers[which] = L.updated_center(c, logits, cfg.center_momentum, all_reduce_sum)
        return probs

    def step_inputs(self, batch: Batch, it: int) -> list[MicroInputs]:
        ctx, mb = self.ctx, self.ctx.micro
        masks = torch.from_numpy(self.masks(it)).to(ctx.device)
        crops = []
        for j in range(ctx.accum):
            sl = slice(j * mb, (j + 1) * mb)
            g = to_model_input(batch.globals_u8[:, sl], ctx.device)
            has_loc = batch.locals_u8.shape[0] > 0
            loc = to_model_input(batch.locals_u8[:, sl], ctx.device) if has_loc else None
            crops.append((g, loc, masks[:, sl].reshape(2 * mb, -1)))
        return self.prepare(crops, it)

    def prepare(
        self, crops: list[tuple[Tensor, Tensor | None, Tensor]], it: int
    ) -> list[MicroInputs]:
        """Teacher targets of a whole step, from (globals (2mb, 3, G, G) view-major, locals
        (L*mb, 3, S, S) or None, masks (2mb, N)) per micro-batch: what ``loss`` takes. Public
        so that a benchmark can time ``prepare`` + ``loss`` on given tensors."""
        ctx, h = self.ctx, self.schedules.at(it)
        mb = crops[0][0].shape[0] // 2
        with torch.no_grad(), dev.autocast(ctx.device, ctx.amp):  # teacher: the whole step
            outs = [self.teacher_step(g, m) for g, _, m in crops]
        reshard(self.teacher_step)
        k = outs[0][0].shape[-1]
        t_dino = torch.cat([o[0].view(2, mb, k) for o in outs], dim=1)  # (2, B_rank, K)
        p_dino = self._center(t_dino.reshape(-1, k), "dino", h.teacher_temp).view(2, -1, k)
        p_ibot = self._center(torch.cat([o[1] for o in outs]), "ibot", h.teacher_temp)
        p_ibot_micro = p_ibot.split([o[1].shape[0] for o in outs])
        # Collapse monitor: the entropy of the mean target (low = every image on the same few
        # prototypes); the per-image entropy comes from ``loss``.
        n = all_reduce_sum(
            torch.tensor(float(p_dino.shape[0] * p_dino.shape[1]), device=ctx.device)
        )
        marginal = all_reduce_sum(p_dino.float().sum((0, 1))) / n
        masked = sum(m.sum() for _, _, m in crops)
        self._step_metrics = {
            "momentum": h.momentum, "teacher_temp": h.teacher_temp,
            "student_temp": self.cfg.student_temp,
            "teacher_marginal_entropy": float(entropy(marginal)),
            "masked_tokens": float(all_reduce_sum(torch.as_tensor(masked, dtype=torch.float32))),
        }  # fmt: skip
        return [
            MicroInputs(g, loc, m, p_dino[:, j * mb : (j + 1) * mb], p_ibot_micro[j])
            for j, (g, loc, m) in enumerate(crops)
        ]

    def loss(self, inputs: MicroInputs, it: int) -> tuple[Tensor, dict[str, Tensor]]:
        cfg, x = self.cfg, inputs
        with dev.autocast(self.ctx.device, self.ctx.amp):
            cls_g, s_dino, s_ibot = self.student_step(x.g, x.loc, x.masks)
            mb, k = x.t_dino.shape[1], x.t_dino.shape[-1]
            dino = L.dino_loss(s_dino.view(-1, mb, k), x.t_dino, cfg.student_temp)
            per_image = 1.0 / x.masks.sum(dim=1).clamp(min=1)
            weights = per_image.unsqueeze(1).expand_as(x.masks)[x.masks]
            ibot = L.ibot_loss(s_ibot, x.t_ibot, weights, x.g.shape[0], cfg.student_temp)
            koleo = koleo_grouped(cls_g, self.koleo_group)
            loss = cfg.dino_weight * dino + cfg.ibot_weight * ibot + cfg.koleo_weight * koleo
        teacher_entropy = entropy(x.t_dino.float()).mean()
        return loss, {"dino_loss": dino, "ibot_loss": ibot, "koleo_loss": koleo,
                      "teacher_entropy": teacher_entropy}  # fmt: skip

    def after_step(self, it: int) -> dict[str, float]:
        ema_update(self.teacher, self.student, self.schedules.at(it).momentum)
        return self._step_metrics

    # ---- checkpoints and export -----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "student": get_model_state_dict(self.student),
            "teacher": get_model_state_dict(self.teacher),
        }
        if self.centers:
            state["centers"] = dict(self.centers)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        set_model_state_dict(self.student, state["student"])
        set_model_state_dict(self.teacher, state["teacher"])
        for k, v in (state.get("centers") or {}).items():
            if v is not None and k in self.centers:
                self.centers[k] = v.to(self.ctx.device)

    def export_backbone(self) -> dict[str, Tensor]:
        full = get_model_state_dict(
            self.teacher, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        return {
            k.removeprefix("backbone."): v
            for k, v in full.items()
            if k.startswith("backbone.") and isinstance(v, Tensor)
        }
