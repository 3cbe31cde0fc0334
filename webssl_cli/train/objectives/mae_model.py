"""MAE's encoder and decoder (He et al. 2022) around the registry's ViT.

The encoder is the same ``train.vit`` backbone DINOv2 trains (its patch embedding, CLS token,
position embeddings, blocks and final norm), run on the visible patches only; its iBOT mask
token stays unused. The decoder embeds the encoder's tokens to ``decoder_width``, puts the
shared mask token at every removed patch, adds fixed 2-D sine-cosine positions and runs
``decoder_layers`` pre-norm blocks (MLP ratio 4) before a linear map to the patch's pixels.
The whole forward is one module call (``MAEStep``) so that DDP and FSDP2 see it as one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from webssl_cli.specs.registry import ModelSpec
from webssl_cli.specs.train import TrainConfig
from webssl_cli.train.vit import LN_EPS, Block, VisionTransformer, build_backbone


def sincos_positions(dim: int, side: int) -> Tensor:
    """(1, 1 + side^2, dim) fixed 2-D sine-cosine positions, a zero row for the CLS token:
    half the channels encode the row, half the column, each as sin/cos of geometric
    frequencies 1 / 10000^(2i/(dim/2))."""
    if dim % 4:
        raise ValueError(
            f"decoder width {dim} must be a multiple of 4 for 2-D sine-cosine positions"
        )
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coords = torch.arange(side, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def enc(p: Tensor) -> Tensor:
        angles = p.reshape(-1, 1) * omega.reshape(1, -1)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    grid = torch.cat([enc(rows), enc(cols)], dim=1)  # (side^2, dim)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), grid]).float().unsqueeze(0)


def patchify(x: Tensor, patch: int) -> Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, p * p * C), patches in row-major order (as the encoder's
    tokens), each patch's values ordered (row, column, channel)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


class MAEModel(nn.Module):
    def __init__(self, spec: ModelSpec, cfg: TrainConfig) -> None:
        super().__init__()
        m, d = cfg.mae, spec.width
        self.patch = spec.patch
        self.backbone: VisionTransformer = build_backbone(
            spec, drop_path=cfg.drop_path, layerscale=cfg.layerscale
        )
        self.backbone.mask_token.requires_grad_(False)  # MAE's encoder never sees mask tokens
        self.decoder_embed = nn.Linear(d, m.decoder_width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, m.decoder_width))
        side = cfg.crops.global_size // spec.patch
        self.register_buffer(
            "decoder_pos", sincos_positions(m.decoder_width, side), persistent=False
        )
        dec = ModelSpec("mae-decoder", m.decoder_width, m.decoder_layers, m.decoder_heads, "mlp",
                        4 * m.decoder_width, patch=spec.patch)  # fmt: skip
        self.decoder_blocks = nn.ModuleList(Block(dec, 0.0, None) for _ in range(dec.depth))
        self.decoder_norm = nn.LayerNorm(m.decoder_width, eps=LN_EPS)
        self.decoder_pred = nn.Linear(m.decoder_width, spec.patch**2 * spec.in_chans)
        nn.init.normal_(self.mask_token, std=0.02)
        for mod in [self.decoder_embed, self.decoder_pred, *self.decoder_blocks.modules()]:
            if isinstance(mod, nn.Linear):
                nn.init.xavier_uniform_(mod.weight)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)

    def encode(self, x: Tensor, ids_keep: Tensor) -> Tensor:
        """Normed encoder tokens (B, 1 + keep, D): CLS and the visible patches ``ids_keep``."""
        bb = self.backbone
        h, w = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        pos = bb.interpolate_pos_encoding(h, w)
        t = bb.patch_embed(x) + pos[:, 1:]
        t = torch.gather(t, 1, ids_keep.unsqueeze(-1).expand(-1, -1, t.shape[-1]))
        cls = (bb.cls_token + pos[:, :1]).expand(t.shape[0], -1, -1)
        t, _ = bb._run_blocks(torch.cat([cls, t], dim=1))
        return bb.norm(t)

    def decode(self, tokens: Tensor, ids_restore: Tensor) -> Tensor:
        """Pixel predictions (B, N, p*p*C) of every patch from the encoder's tokens."""
        y = self.decoder_embed(tokens)
        b, n = ids_restore.shape
        filler = self.mask_token.to(y.dtype).expand(b, n + 1 - y.shape[1], -1)
        patches = torch.cat([y[:, 1:], filler], dim=1)
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, y.shape[-1]))
        pos: Tensor = self.decoder_pos  # type: ignore[assignment]
        y = torch.cat([y[:, :1], patches], dim=1) + pos.to(y.dtype)
        for blk in self.decoder_blocks:
            y = blk(y)
        return self.decoder_pred(self.decoder_norm(y)[:, 1:])


class MAEStep(nn.Module):
    """One forward of MAE: (images, visible ids, restoring permutation) -> predicted pixels."""

    def __init__(self, model: MAEModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, ids_keep: Tensor, ids_restore: Tensor) -> Tensor:
        return self.model.decode(self.model.encode(x, ids_keep), ids_restore)


def shard_units(model: MAEModel) -> list[nn.Module]:
    """What FSDP2 shards on its own: every encoder and decoder block."""
    return [*model.backbone.blocks, *model.decoder_blocks]
