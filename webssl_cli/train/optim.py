"""The optimiser of any objective: DINOv2-style parameter groups and a fast AdamW.

Parameter groups: no decay on biases, norms and LayerScale; lr x ``patch_embed_lr_mult`` on the
patch embedding, x ``layerwise_decay``^(depth - layer) in the backbone; prototype layers
(``last_layer``) flagged so the schedule can freeze them. AdamW runs fused (one pass over each
parameter and its state, on CPU and CUDA): the single-tensor loop costs a launch per op and
tensor, and CPU ``foreach`` runs every op as its own pass over memory (4x the fused time).
"""

from __future__ import annotations

import torch
from torch import nn

from webssl_cli.specs.train import TrainConfig
from webssl_cli.train.schedules import Hyper


def param_groups(model: nn.Module, cfg: TrainConfig, depth: int) -> list[dict]:
    """Groups of ``model``'s parameters; names under ``backbone.`` get layer-wise lr decay over a
    backbone of ``depth`` blocks."""
    groups: dict[tuple[float, float, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = name.endswith(".bias") or "norm" in name or "gamma" in name
        lr_mult = 1.0
        if name.startswith("backbone."):
            layer = depth + 1
            if "blocks." in name:
                layer = int(name.split("blocks.")[1].split(".")[0]) + 1
            elif any(k in name for k in ("patch_embed", "pos_embed", "cls_token", "mask_token")):
                layer = 0
            lr_mult = cfg.layerwise_decay ** (depth + 1 - layer)
            if "patch_embed" in name:
                lr_mult *= cfg.patch_embed_lr_mult
        key = (lr_mult, 0.0 if no_decay else 1.0, "last_layer" in name)
        groups.setdefault(key, []).append(p)
    return [
        {"params": ps, "lr_mult": lr_mult, "wd_mult": wd_mult, "is_last_layer": last}
        for (lr_mult, wd_mult, last), ps in groups.items()
    ]


def build_optimizer(
    groups: list[dict],
    device: torch.device,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW (the recipe's ``train.adam_betas`` / ``adam_eps``; DINOv2: 0.9, 0.999 and 1e-8)
    with the fused kernel (``device`` where it has none: foreach)."""
    fused = device.type in ("cpu", "cuda")
    fast = {"fused": True} if fused else {"foreach": True}
    return torch.optim.AdamW(groups, lr=0.0, betas=betas, eps=eps, **fast)


def apply_hyper(optimizer: torch.optim.Optimizer, h: Hyper) -> None:
    """Set this step's lr and weight decay in every group (frozen prototypes get lr 0)."""
    for g in optimizer.param_groups:
        g["lr"] = (h.last_layer_lr if g["is_last_layer"] else h.lr) * g["lr_mult"]
        g["weight_decay"] = h.weight_decay * g["wd_mult"]
