"""MAE / Web-MAE as an ``Objective``: the registry's ViT encodes the visible patches of one
view, a light decoder predicts every removed patch's (normalised) pixels, ``losses.mae_loss``.

Split invariance and exact resume: the masks are a function of (seed, step, the image's place
in the global batch) only, drawn from a generator seeded with (seed, step), so every world size
and micro-batch split sees the same masks, and a resumed run redraws them exactly. Every image
keeps the same number of patches, so the mean over a micro-batch's removed patches is the mean
over the global batch's. No teacher: ``after_step`` has nothing to do; the export is the encoder.
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
from webssl_cli.specs.compute import mae_visible_tokens
from webssl_cli.specs.registry import ModelSpec
from webssl_cli.specs.train import TrainConfig
from webssl_cli.train import losses as L
from webssl_cli.train.batches import Batch, to_model_input
from webssl_cli.train.distributed import no_sync, wrap
from webssl_cli.train.objective import RunContext
from webssl_cli.train.objectives.mae_model import MAEModel, MAEStep, patchify, shard_units
from webssl_cli.train.optim import param_groups

MASK_STREAM = 0x6D6165  # separates MAE's mask draws from every other use of the seed


@dataclass
class MicroInputs:
    x: Tensor  # (mb, 3, G, G) normalised images
    ids_keep: Tensor  # (mb, keep) visible patch indices
    ids_restore: Tensor  # (mb, N) where each patch sits in [visible..., removed...]
    mask: Tensor  # (mb, N) 1 = removed


def random_masks(
    seed: int, it: int, batch_size: int, rows: np.ndarray, n_patches: int, keep: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids_keep, ids_restore, mask) of the global batch's images ``rows`` at step ``it``:
    MAE's per-sample random masking (keep the ``keep`` patches of lowest noise)."""
    rng = np.random.default_rng([seed, it, MASK_STREAM])
    noise = rng.random((batch_size, n_patches), dtype=np.float32)[rows]
    ids_shuffle = np.argsort(noise, axis=1, kind="stable")
    ids_restore = np.argsort(ids_shuffle, axis=1, kind="stable")
    mask = (ids_restore >= keep).astype(np.float32)
    return ids_shuffle[:, :keep], ids_restore, mask


class MAE:
    """The MAE recipe behind the ``Objective`` interface (see ``train.objective``)."""

    def __init__(self, spec: ModelSpec, cfg: TrainConfig, ctx: RunContext) -> None:
        self.spec, self.cfg, self.ctx = spec, cfg, ctx
        g = cfg.crops.global_size
        if g % spec.patch:
            raise UserError(
                f"train.crops.global_size: {g} is not a multiple of {spec.name}'s patch "
                f"{spec.patch}; MAE reconstructs whole patches"
            )
        self.n_patches, self.keep = spec.n_patches(g), mae_visible_tokens(spec, cfg)
        torch.manual_seed(ctx.seed)  # every rank builds the same initial weights
        self.model = MAEModel(spec, cfg).to(ctx.device)
        self.model.train()
        self.model.backbone.grad_checkpointing = bool(cfg.dist.activation_checkpointing)
        if cfg.dist.compile:
            for blk in [*self.model.backbone.blocks, *self.model.decoder_blocks]:
                blk.compile()
        self.step = wrap(MAEStep(self.model), shard_units(self.model), ctx.strategy, ctx.device,
                         trainable=True)  # fmt: skip

    # ---- optimisation -----------------------------------------------------------------------
    def trainable(self) -> nn.Module:
        return self.model

    def param_groups(self) -> list[dict[str, Any]]:
        return param_groups(self.model, self.cfg, self.model.backbone.n_blocks)

    def clip_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        m = self.model
        encoder = [p for p in m.backbone.parameters() if p.requires_grad]
        decoder = [p for n, p in m.named_parameters() if not n.startswith("backbone.")]
        return [("grad_norm", encoder), ("decoder_grad_norm", decoder)]

    def no_sync(self, last: bool) -> AbstractContextManager[Any]:
        return no_sync(self.step, last)

    # ---- one step ------------------------------------------------------------------------------
    def step_inputs(self, batch: Batch, it: int) -> list[MicroInputs]:
        ctx, mb = self.ctx, self.ctx.micro
        per_rank = mb * ctx.accum
        rows = np.arange(per_rank) + ctx.rank * per_rank
        keep, restore, mask = random_masks(
            ctx.seed, it, self.cfg.batch_size, rows, self.n_patches, self.keep
        )
        keep_t, restore_t = torch.from_numpy(keep).to(ctx.device), torch.from_numpy(restore).to(ctx.device)  # fmt: skip
        mask_t = torch.from_numpy(mask).to(ctx.device)
        out = []
        for j in range(ctx.accum):
            sl = slice(j * mb, (j + 1) * mb)
            x = to_model_input(batch.globals_u8[:1, sl], ctx.device)
            out.append(MicroInputs(x, keep_t[sl], restore_t[sl], mask_t[sl]))
        return out

    def loss(self, inputs: MicroInputs, it: int) -> tuple[Tensor, dict[str, Tensor]]:
        x = inputs
        with dev.autocast(self.ctx.device, self.ctx.amp):
            pred = self.step(x.x, x.ids_keep, x.ids_restore)
        target = patchify(x.x, self.spec.patch)
        loss = L.mae_loss(pred.float(), target, x.mask, self.cfg.mae.norm_pix_loss)
        return loss, {"mae_loss": loss.detach(), "mask_ratio": x.mask.mean()}

    def after_step(self, it: int) -> dict[str, float]:
        return {}

    # ---- checkpoints and export -----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"model": get_model_state_dict(self.model)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        set_model_state_dict(self.model, state["model"])

    def export_backbone(self) -> dict[str, Tensor]:
        full = get_model_state_dict(
            self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        return {
            k.removeprefix("backbone."): v
            for k, v in full.items()
            if k.startswith("backbone.") and isinstance(v, Tensor)
        }
