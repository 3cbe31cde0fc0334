"""DINOv2 projection heads: MLP -> bottleneck -> L2 norm -> weight-normalised prototypes.

The DINO head (on CLS tokens) and the iBOT head (on masked patch tokens) are separate
instances of the same class in Web-DINO. The prototype layer keeps DINOv2's ``weight_g`` /
``weight_v`` parameters (g initialised to 1) without the deprecated ``nn.utils.weight_norm``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from webssl_cli.specs.train import HeadConfig


class WeightNormLinear(nn.Module):
    """Bias-free linear layer with weight = g * v / ||v|| (row-wise): the prototypes."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1))
        nn.init.trunc_normal_(self.weight_v, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        # torch's fused weight-norm kernel (what nn.utils' weight norm runs): one pass forward
        # and backward instead of the norm, divide and scale of normalize-then-multiply.
        return F.linear(x, torch._weight_norm(self.weight_v, self.weight_g, 0))


class DINOHead(nn.Module):
    def __init__(self, in_dim: int, cfg: HeadConfig) -> None:
        super().__init__()
        dims = [in_dim] + [cfg.hidden] * (cfg.layers - 1) + [cfg.bottleneck]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.last_layer = WeightNormLinear(cfg.bottleneck, cfg.n_prototypes)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:  # (..., in_dim) -> (..., K) logits
        z = F.normalize(self.mlp(x), dim=-1, eps=1e-6 if x.dtype == torch.float16 else 1e-12)
        return self.last_layer(z)
