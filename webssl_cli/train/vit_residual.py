"""Residual branches of the ViT blocks with DINOv2's batch-subset stochastic depth, and the
token selection and attention of a last block that computes only the tokens read downstream.

With drop-path the branch runs on a random ``1 - drop`` fraction of the samples only, its
output scaled by ``B / kept``: the expectation of per-sample drop-path at a fraction of the
compute (drop-path 0.4 skips 40% of the block FLOPs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from webssl_cli import device as dev


def cat_rows(parts: list[Tensor]) -> Tensor:
    """``torch.cat(parts)`` without the copy when there is one part (a single crop size)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def kept_samples(b: int, drop: float, device: torch.device) -> Tensor:
    """The random subset of ``b`` samples a branch runs on at drop-path rate ``drop``."""
    return torch.randperm(b, device=device)[: max(int(b * (1.0 - drop)), 1)]


def residual(
    x: Tensor, branch: Callable[[Tensor], Tensor], gamma: Tensor | None, drop: float
) -> Tensor:
    """x + gamma * branch(x) (LayerScale inside one ``addcmul``), with batch-subset drop-path
    when ``drop`` > 0."""
    if drop <= 0.0:
        out = branch(x)
        return torch.addcmul(x, out, gamma) if gamma is not None else x + out
    b = x.shape[0]
    idx = kept_samples(b, drop, x.device)
    out = branch(x.index_select(0, idx))
    out = out * gamma if gamma is not None else out
    return torch.index_add(
        x.flatten(1), 0, idx, out.to(x.dtype).flatten(1), alpha=b / len(idx)
    ).view_as(x)


def residual_packed(
    xs: list[Tensor],
    branch: Callable[[Tensor, list[torch.Size]], Tensor],
    gamma: Tensor | None,
    drop: float,
) -> list[Tensor]:
    """``residual`` for crops of several sizes at once: a subset of ``1 - drop`` of each crop
    size's samples (drawn in list order), packed into one (T, D) tensor for
    ``branch(tokens, shapes)``, added back scaled by B / kept."""
    idxs = [kept_samples(x.shape[0], drop, x.device) for x in xs]
    shapes = [torch.Size((len(i), *x.shape[1:])) for x, i in zip(xs, idxs, strict=True)]
    flat = torch.cat([x.index_select(0, i).reshape(-1, x.shape[-1]) for x, i in zip(xs, idxs, strict=True)])  # fmt: skip
    out = branch(flat, shapes)
    out = out * gamma if gamma is not None else out
    parts = out.split([s[0] * s[1] for s in shapes])
    return [
        torch.index_add(
            x.flatten(1), 0, i, p.reshape(len(i), -1).to(x.dtype), alpha=x.shape[0] / len(i)
        ).view_as(x)
        for x, i, p in zip(xs, idxs, parts, strict=True)
    ]


@dataclass
class Picked:
    """The tokens of one crop group that a last block computes: each image's CLS and its
    picked patch tokens, as flat rows image by image (CLS, then the picked patches in patch
    order). Attention queries run on (B, m) slots, padded by repeating CLS."""

    sel: Tensor  # (B, m) token index of each slot (0 = CLS)
    valid: Tensor  # (B, m) bool: the slot holds a picked token (not padding)
    row: Tensor  # (B, m) the flat row of each valid slot
    take: Tensor  # (S,) each row's token in the (B * N) flattened tokens
    n_cls: int  # B

    @staticmethod
    def of(picks: Tensor | None, b: int, n: int, device: torch.device) -> Picked:
        """Selection of (B, N) tokens: CLS plus the patches where ``picks`` (B, N-1) is set."""
        first = torch.arange(b, device=device) * n
        if picks is None:
            col = torch.zeros(b, 1, dtype=torch.long, device=device)
            return Picked(col, col == 0, torch.arange(b, device=device)[:, None], first, b)
        count = picks.sum(1)
        m = 1 + int(count.max())
        # picked patches first, in ascending patch order (stable sort of 0 = picked, 1 = not)
        order = torch.sort((~picks).to(torch.uint8), dim=1, stable=True).indices[:, : m - 1]
        valid = torch.arange(m, device=device) < (1 + count)[:, None]
        sel = torch.cat([torch.zeros_like(order[:, :1]), 1 + order], 1) * valid
        row = torch.zeros(b, m, dtype=torch.long, device=device)
        row[valid] = torch.arange(int(valid.sum()), device=device)
        return Picked(sel, valid, row, (first[:, None] + sel)[valid], b)

    def split(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """(CLS (B, D), picked patch tokens (M, D)) of the flat rows (S, D)."""
        patches = self.row[:, 1:][self.valid[:, 1:]]
        return rows.index_select(0, self.row[:, 0]), rows.index_select(0, patches)


def picked_residual(
    xs: list[Tensor],
    picked: list[Picked],
    branch: Callable[[list[Tensor | None], list[Tensor | None]], list[Tensor]],
    gamma: Tensor | None,
    drop: float,
) -> list[Tensor]:
    """``residual_packed`` on the flat picked tokens xs[i] (S_i, D) of each group, with the
    same subset draws. ``branch(kept, rows)`` gets each group's kept images (None: all) and
    their output rows (None: all rows) and returns the branch output of those rows."""
    kept = [kept_samples(p.n_cls, drop, x.device) if drop > 0.0 else None
            for x, p in zip(xs, picked, strict=True)]  # fmt: skip
    rows = [None if i is None else p.row[i][p.valid[i]] for p, i in zip(picked, kept, strict=True)]
    outs = branch(kept, rows)
    res = []
    for x, p, i, r, out in zip(xs, picked, kept, rows, outs, strict=True):
        if i is None or r is None:  # every row, in row order
            res.append(torch.addcmul(x, out, gamma) if gamma is not None else x + out)
            continue
        out = out * gamma if gamma is not None else out
        res.append(torch.index_add(x, 0, r, out.to(x.dtype), alpha=p.n_cls / len(i)))
    return res


def picked_attention(
    qkv: nn.Linear, proj: nn.Linear, heads: int,
    xs: list[Tensor], sels: list[Tensor], valid: list[Tensor],
) -> Tensor:  # fmt: skip
    """Attention outputs (after ``proj``) of the valid (B_i, m_i) query slots ``sels`` of the
    normed tokens xs[i] (B_i, N_i, D), flat in slot order: queries on those slots only, keys
    and values on every token (row slices of the fused ``qkv``)."""
    D = xs[0].shape[-1]
    H, hd = heads, D // heads
    w, b = qkv.weight, qkv.bias
    kv = F.linear(cat_rows([x.reshape(-1, D) for x in xs]), w[D:], b[D:])
    flat = [(torch.arange(len(x), device=x.device)[:, None] * x.shape[1] + s).flatten()
            for x, s in zip(xs, sels, strict=True)]  # fmt: skip
    q_in = [x.reshape(-1, D).index_select(0, i) for x, i in zip(xs, flat, strict=True)]
    q = F.linear(cat_rows(q_in), w[:D], b[:D])
    outs = []
    parts = zip(kv.split([x.shape[0] * x.shape[1] for x in xs]), q.split([s.numel() for s in sels]),
                xs, sels, valid, strict=True)  # fmt: skip
    for kv_i, q_i, x, s, v in parts:
        ki, vi = (t.transpose(1, 2) for t in kv_i.view(*x.shape[:2], 2, H, hd).unbind(2))
        qi = q_i.view(*s.shape, H, hd).transpose(1, 2)  # (B, H, m, hd)
        if dev.attention_impl() == "math":
            o = ((qi * hd**-0.5) @ ki.transpose(-2, -1)).softmax(dim=-1) @ vi
        else:
            o = F.scaled_dot_product_attention(qi, ki, vi)
        outs.append(o.transpose(1, 2).reshape(*s.shape, D)[v])
    return proj(cat_rows(outs))
