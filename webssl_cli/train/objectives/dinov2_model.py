"""DINOv2's student and teacher (backbone + DINO head + iBOT head) and their forward passes.

FSDP2 determines its root by the first module whose forward runs, and DDP synchronises only
through its own forward: each side's whole forward is therefore one module call
(``StudentStep``, ``TeacherStep``), and those are what ``distributed.wrap`` spreads.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from webssl_cli.specs.registry import ModelSpec
from webssl_cli.specs.train import TrainConfig
from webssl_cli.train.heads import DINOHead
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
        blk.drop_path = 0.0  # type: ignore[assignment]
    teacher.requires_grad_(False).eval()
    return student, teacher


class StudentStep(nn.Module):
    """The student's forward on all crops: CLS of the global crops, DINO logits of every crop
    (2 globals, then the locals), iBOT logits of the masked global patch tokens."""

    def __init__(self, model: SSLModel, packed: bool = True) -> None:
        super().__init__()
        self.model = model
        self.packed = packed

    def forward(
        self, g: Tensor, loc: Tensor | None, masks: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        bb = self.model.backbone
        cls_l: Tensor | None
        if loc is not None and self.packed:  # one pass: globals and locals share token-wise layers
            (cls_g, patches), (cls_l, _) = bb.forward_picked([g, loc], [masks, None], [masks, None])
        else:
            ((cls_g, patches),) = bb.forward_picked([g], [masks], [masks])
            cls_l = bb.forward_picked([loc], [None], [None])[0][0] if loc is not None else None
        cls = cls_g if cls_l is None else torch.cat([cls_g, cls_l])
        dino = self.model.dino_head(cls)  # ((2+L)B, K)
        ibot = self.model.ibot_head(patches)  # (M, K)
        return cls_g, dino, ibot


class TeacherStep(nn.Module):
    """The teacher's forward on the unmasked global crops: DINO logits (2B, K) and iBOT logits
    of the patch tokens the student sees masked (M, K)."""

    def __init__(self, model: SSLModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, g: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        ((cls, patches),) = self.model.backbone.forward_picked([g], [None], [masks])
        return self.model.dino_head(cls), self.model.ibot_head(patches)


def shard_units(model: SSLModel) -> list[nn.Module]:
    """What FSDP2 shards on its own: every block and both heads (the root gets the rest)."""
    return [*model.backbone.blocks, model.dino_head, model.ibot_head]
