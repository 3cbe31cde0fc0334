"""The DINOv2 linear protocol on frozen features: one linear classifier per (last n blocks,
avgpool, lr) setting, all trained together on the same features (SGD, momentum 0.9, cosine
schedule, lr scaled by batch / 256, weights ~ N(0, 0.01)), best top-1 on val reported.

Features are computed once per image without augmentation (DINOv2 uses random-resized crops
and flips while training its classifiers): a cheaper, slightly weaker variant of the protocol.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product

import torch
from torch import Tensor, nn

from webssl_cli import device as dev
from webssl_cli.eval.features import Features


def linear_input(f: Features, n_blocks: int, avgpool: bool) -> Tensor:
    """DINOv2's ``create_linear_input``: CLS of the last ``n_blocks`` (+ mean patch token)."""
    x = f.cls[:, -n_blocks:].flatten(1)
    return torch.cat([x, f.avgpool], dim=1) if avgpool else x


@dataclass(frozen=True)
class Setting:
    n_blocks: int
    avgpool: bool
    lr: float

    @property
    def label(self) -> str:
        return f"blocks{self.n_blocks}_avgpool{int(self.avgpool)}_lr{self.lr:g}"


def linear_probe(
    train: Features,
    train_labels: Tensor,
    val: Features,
    val_labels: Tensor,
    *,
    lrs: tuple[float, ...],
    n_last_blocks: tuple[int, ...],
    avgpool: tuple[bool, ...],
    epochs: int = 10,
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device | None = None,
) -> tuple[Setting, float, dict[str, float], Tensor]:
    """(best setting, its val top-1, top-1 of every setting, the best setting's per-image
    outcome on val: 1.0 correct, 0.0 wrong; its mean is the reported top-1). The classifiers train on ``device`` (default: the
    device module's choice); their initial weights and the batch order come from a CPU
    generator, so a seed gives the same start on every device."""
    device = device or dev.pick_device()
    available = train.cls.shape[1]
    settings = [
        Setting(n, a, lr) for n, a, lr in product(n_last_blocks, avgpool, lrs) if n <= available
    ]
    n_classes = int(max(train_labels.max(), val_labels.max())) + 1
    gen = torch.Generator().manual_seed(seed)
    heads = nn.ModuleList()
    for s in settings:
        head = nn.Linear(linear_input(train, s.n_blocks, s.avgpool).shape[1], n_classes)
        with torch.no_grad():
            head.weight.normal_(0, 0.01, generator=gen)
            head.bias.zero_()
        heads.append(head)
    heads.to(device)
    train_labels = train_labels.to(device)
    bs = min(batch_size, len(train_labels))
    scale = bs / 256
    groups = [
        {"params": h.parameters(), "lr": s.lr * scale, "base": s.lr * scale}
        for h, s in zip(heads, settings, strict=True)
    ]
    opt = torch.optim.SGD(groups, momentum=0.9, weight_decay=0.0)
    inputs = {
        (s.n_blocks, s.avgpool): linear_input(train, s.n_blocks, s.avgpool).to(device)
        for s in settings
    }
    steps = epochs * math.ceil(len(train_labels) / bs)
    step = 0
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        order = torch.randperm(len(train_labels), generator=gen)
        for i in range(0, len(order), bs):
            idx = order[i : i + bs].to(device)
            for g in opt.param_groups:
                g["lr"] = g["base"] * 0.5 * (1 + math.cos(math.pi * step / steps))
            loss = sum(
                loss_fn(h(inputs[(s.n_blocks, s.avgpool)][idx]), train_labels[idx])
                for h, s in zip(heads, settings, strict=True)
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            opt.step()
            step += 1
    scores: dict[str, float] = {}
    correct: dict[str, Tensor] = {}
    with torch.no_grad():
        for h, s in zip(heads, settings, strict=True):
            pred = h(linear_input(val, s.n_blocks, s.avgpool).to(device)).argmax(1).cpu()
            correct[s.label] = (pred == val_labels.cpu()).double()
            scores[s.label] = float(correct[s.label].mean())
    best = max(settings, key=lambda s: scores[s.label])
    return best, scores[best.label], scores, correct[best.label]
