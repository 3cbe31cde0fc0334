"""Student and teacher (backbone + DINO head + iBOT head), the optimizer's parameter groups,
and the forward pass that turns a multi-crop batch into the three losses.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from webssl_cli.specs.registry import ModelSpec
from webssl_cli.specs.train import TrainConfig
from webssl_cli.train import losses as L
from webssl_cli.train.heads import DINOHead
from webssl_cli.train.schedules import Hyper
from webssl_cli.train.vit import VisionTransformer, build_backbone


class SSLModel(nn.Module):
    def __init__(self, spec: ModelSpec, cfg: TrainConfig, drop_path: float) -> None:
        super().__init__()
        self.backbone: VisionTransformer = build_backbone(
            spec, drop_path=drop_path, layerscale=cfg.layerscale
        )
        self.dino_head = DINOHead(spec.width, cfg.dino_head)
        self.ibot_head = DINOHead(spec.width, cfg.ibot_head)


def build_models(
    spec: ModelSpec, cfg: TrainConfig, device: torch.device
) -> tuple[SSLModel, SSLModel]:
    """(student, teacher): the teacher starts as a copy of the student, without drop-path."""
    student = SSLModel(spec, cfg, cfg.drop_path).to(device)
    teacher = copy.deepcopy(student)
    for blk in teacher.backbone.blocks:
        blk.drop_path = 0.0
    teacher.requires_grad_(False).eval()
    return student, teacher


def param_groups(student: SSLModel, cfg: TrainConfig) -> list[dict]:
    """One group per parameter, DINOv2-style: no decay on biases, norms and LayerScale; lr x
    ``patch_embed_lr_mult`` on the patch embedding, x ``layerwise_decay``^(depth - layer) in the
    backbone; prototype layers flagged so the schedule can freeze them."""
    depth = student.backbone.n_blocks
    groups: dict[tuple[float, float, bool], list[nn.Parameter]] = {}
    for name, p in student.named_parameters():
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


def apply_hyper(optimizer: torch.optim.Optimizer, h: Hyper) -> None:
    for g in optimizer.param_groups:
        g["lr"] = (h.last_layer_lr if g["is_last_layer"] else h.lr) * g["lr_mult"]
        g["weight_decay"] = h.weight_decay * g["wd_mult"]


@dataclass
class Centers:
    """EMA centres of the teacher logits (``centering: ema`` only)."""

    dino: Tensor | None = None
    ibot: Tensor | None = None


def forward_losses(
    student: SSLModel,
    teacher: SSLModel,
    g: Tensor,
    loc: Tensor | None,
    masks: Tensor,
    h: Hyper,
    cfg: TrainConfig,
    centers: Centers,
    reduce: L.Reduce | None = None,
) -> dict[str, Tensor]:
    """The DINO, iBOT and KoLeo losses of one batch.

    g: (2B, 3, G, G) global crops, view-major; loc: (L*B, 3, S, S) or None; masks: (2B, N).
    """
    B = g.shape[0] // 2

    def center(logits: Tensor, which: str) -> Tensor:
        if cfg.centering == "sinkhorn":
            return L.sinkhorn_knopp(logits, h.teacher_temp, cfg.sinkhorn_iters, reduce)
        c = getattr(centers, which)
        c = torch.zeros(1, logits.shape[-1], device=logits.device) if c is None else c
        probs = L.softmax_center(logits, c, h.teacher_temp)
        setattr(centers, which, L.updated_center(c, logits, cfg.center_momentum, reduce))
        return probs

    with torch.no_grad():  # teacher targets on the unmasked global crops
        t = teacher.backbone.forward_features(g)
        t_dino = center(teacher.dino_head(t["x_norm_clstoken"]), "dino").view(2, B, -1)  # (2, B, K)
        t_ibot = center(teacher.ibot_head(t["x_norm_patchtokens"][masks]), "ibot")  # (M, K)

    s = student.backbone.forward_features(g, masks=masks)
    cls = [s["x_norm_clstoken"]]  # (2B, D) then (L*B, D)
    if loc is not None and loc.shape[0]:
        cls.append(student.backbone.forward_features(loc)["x_norm_clstoken"])
    s_dino = student.dino_head(torch.cat(cls)).view(-1, B, t_dino.shape[-1])  # (2+L, B, K)
    s_ibot = student.ibot_head(s["x_norm_patchtokens"][masks])  # (M, K)
    weights = (1.0 / masks.sum(dim=1).clamp(min=1)).unsqueeze(1).expand_as(masks)[masks]

    dino = L.dino_loss(s_dino, t_dino, cfg.student_temp)
    ibot = L.ibot_loss(s_ibot, t_ibot, weights, g.shape[0], cfg.student_temp)
    koleo = sum(L.koleo_loss(c) for c in s["x_norm_clstoken"].chunk(2))
    assert isinstance(koleo, Tensor)
    loss = cfg.dino_weight * dino + cfg.ibot_weight * ibot + cfg.koleo_weight * koleo
    return {
        "loss": loss,
        "dino_loss": dino,
        "ibot_loss": ibot,
        "koleo_loss": koleo,
        "teacher_probs": t_dino,
    }
