"""The Web-DINO Vision Transformer, built from a registry ``ModelSpec``.

Pre-norm blocks with LayerScale and stochastic depth, SwiGLU (fused ``w12`` + ``w3``) or MLP
FFN, biases on qkv/proj/ffn, a learned CLS token, learned position embeddings interpolated
(bicubic, fp32, DINOv2's scale factor) to any crop size, a mask token for iBOT and a final
LayerNorm. State-dict names and the ``forward_features`` / ``get_intermediate_layers`` API
follow DINOv2, so its checkpoints (and renamed Hugging Face ``Dinov2Model`` weights) load into it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from webssl_cli import device as dev
from webssl_cli.specs.registry import ModelSpec
from webssl_cli.train.vit_residual import (
    Picked,
    cat_rows,
    picked_attention,
    picked_residual,
    residual,
    residual_packed,
)

LN_EPS = 1e-6  # DINOv2 and Hugging Face Dinov2 both use 1e-6
# DINOv2 resizes the position-embedding grid M -> g by the scale factor (g + 0.1) / M rather
# than to the size g: the bicubic sampling points (and so the embeddings of a 98 px local crop)
# differ slightly from a plain resize, and its checkpoints were trained with them.
# Hugging Face's Dinov2Model resizes to the size; 0.0 selects that (same at the native size).
INTERPOLATE_OFFSET = 0.1


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, N, D)
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, D = x.shape
        impl = dev.attention_impl()
        xops = dev.xformers_ops() if (impl in ("auto", "xformers") and x.is_cuda) else None
        if impl == "xformers" and xops is None:
            raise RuntimeError("attention 'xformers' requested but xformers is not usable here")
        # One product for q, k and v (fewer, larger matmuls; a weight-slice product per part
        # costs a zero-filled full-size gradient per part in backward); attention reads the
        # three as strided views.
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, D // self.heads).unbind(2)  # (B, N, H, hd)
        if xops is not None:  # xformers takes (B, N, H, hd)
            out = xops.memory_efficient_attention(q, k, v)
            return self.proj(out.reshape(B, N, D))
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, N, hd)
        if impl == "math":
            attn = (q * (q.shape[-1] ** -0.5)) @ k.transpose(-2, -1)
            out = attn.softmax(dim=-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))

    def forward_packed(self, x: Tensor, shapes: list[torch.Size]) -> Tensor:
        """Attention over the tokens of several crop sizes packed in one (T, D) tensor.

        ``shapes`` are the (B_i, N_i, D) of the crops packed in order; a token attends only to
        its own image. qkv and proj run once on all T tokens; attention runs per crop size
        (SDPA / math), or in one call with xformers' block-diagonal mask on CUDA when installed.
        """
        T, D = x.shape
        H, hd = self.heads, D // self.heads
        impl = dev.attention_impl()
        xops = dev.xformers_ops() if (impl in ("auto", "xformers") and x.is_cuda) else None
        if impl == "xformers" and xops is None:
            raise RuntimeError("attention 'xformers' requested but xformers is not usable here")
        qkv = self.qkv(x).view(T, 3, H, hd)
        if xops is not None:
            from xformers.ops import fmha  # type: ignore[import-not-found]

            lens = [int(s[1]) for s in shapes for _ in range(int(s[0]))]
            bias = fmha.BlockDiagonalMask.from_seqlens(lens)
            q, k, v = qkv.unsqueeze(0).unbind(2)  # (1, T, H, hd)
            out = xops.memory_efficient_attention(q, k, v, attn_bias=bias)
            return self.proj(out.reshape(T, D))
        sizes = [int(s[0] * s[1]) for s in shapes]
        outs = []
        for part, s in zip(qkv.split(sizes), shapes, strict=True):
            qkv_i = part.view(int(s[0]), int(s[1]), 3, H, hd)
            qi, ki, vi = (t.transpose(1, 2) for t in qkv_i.unbind(2))  # (B, H, N, hd)
            if impl == "math":
                o = ((qi * hd**-0.5) @ ki.transpose(-2, -1)).softmax(dim=-1) @ vi
            else:
                o = F.scaled_dot_product_attention(qi, ki, vi)
            outs.append(o.transpose(1, 2).reshape(-1, D))
        return self.proj(cat_rows(outs))


class SwiGLUFFN(nn.Module):
    """DINOv2's SwiGLUFFNFused: one matmul for gate and up (``w12``), then ``w3`` down."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        # Two products on row slices of ``w12`` (contiguous outputs, no backward concatenation).
        h = self.w3.in_features
        w, b = self.w12.weight, self.w12.bias
        gate, up = F.linear(x, w[:h], b[:h]), F.linear(x, w[h:], b[h:])
        return self.w3(F.silu(gate) * up)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, spec: ModelSpec, drop_path: float, layerscale: float | None) -> None:
        super().__init__()
        d = spec.width
        self.norm1 = nn.LayerNorm(d, eps=LN_EPS)
        self.attn = Attention(d, spec.heads)
        self.ls1: nn.Module = LayerScale(d, layerscale) if layerscale else nn.Identity()
        self.norm2 = nn.LayerNorm(d, eps=LN_EPS)
        self.mlp: nn.Module = (
            SwiGLUFFN(d, spec.ffn_hidden) if spec.ffn == "swiglu" else Mlp(d, spec.ffn_hidden)
        )
        self.ls2: nn.Module = LayerScale(d, layerscale) if layerscale else nn.Identity()
        self.drop_path = drop_path

    def forward(
        self, x: Tensor | list[Tensor], picked: list[Picked] | None = None
    ) -> Tensor | list[Tensor]:  # (B, N, D) -> (B, N, D)
        # one entry point for every form: FSDP2 gathers the parameters in the module's call
        if isinstance(x, list):
            return self.forward_packed(x) if picked is None else self.forward_picked(x, picked)
        drop = self.drop_path if self.training else 0.0
        x = residual(x, self._attn_branch, self._gamma(self.ls1), drop)
        return residual(x, self._ffn_branch, self._gamma(self.ls2), drop)

    @staticmethod
    def _gamma(ls: nn.Module) -> Tensor | None:  # LayerScale is applied by the residual
        return ls.gamma if isinstance(ls, LayerScale) else None

    def forward_packed(self, xs: list[Tensor]) -> list[Tensor]:
        """Crops of several sizes in one pass (DINOv2's list forward): the token-wise layers
        (norms, qkv, proj, FFN, LayerScale) run once on the concatenated (T, D) tokens;
        attention runs per image. With drop-path in training, each residual draws its sample
        subset per crop size and runs its branch once on the packed subsets."""
        g1, g2 = self._gamma(self.ls1), self._gamma(self.ls2)
        if self.training and self.drop_path > 0.0:
            attn = lambda t, sh: self.attn.forward_packed(self.norm1(t), sh)  # noqa: E731
            xs = residual_packed(xs, attn, g1, self.drop_path)
            return residual_packed(xs, lambda t, sh: self._ffn_branch(t), g2, self.drop_path)
        shapes = [x.shape for x in xs]
        flat = cat_rows([x.reshape(-1, x.shape[-1]) for x in xs])  # (T, D)
        flat = residual(flat, lambda t: self.attn.forward_packed(self.norm1(t), shapes), g1, 0.0)
        flat = residual(flat, self._ffn_branch, g2, 0.0)  # same ops as per crop
        parts = flat.split([int(s[0] * s[1]) for s in shapes])
        return [p.view(s) for p, s in zip(parts, shapes, strict=True)]

    def forward_picked(self, xs: list[Tensor], picked: list[Picked]) -> list[Tensor]:
        """``forward_packed`` computed at the ``picked`` tokens only: flat (S_i, D) rows per
        group. Queries, projection, FFN and LayerScale run on those rows, keys and values on
        every token; drop-path draws the same subsets as ``forward_packed``."""
        drop = self.drop_path if self.training else 0.0
        D = xs[0].shape[-1]
        ys = [x.reshape(-1, D).index_select(0, p.take) for x, p in zip(xs, picked, strict=True)]

        def attn(kept: list[Tensor | None], _: list[Tensor | None]) -> list[Tensor]:
            sub = [x if i is None else x.index_select(0, i) for x, i in zip(xs, kept, strict=True)]
            h = self.norm1(cat_rows([t.reshape(-1, D) for t in sub]))
            hs = [a.view(t.shape) for a, t in zip(h.split([t.shape[0] * t.shape[1] for t in sub]), sub, strict=True)]  # fmt: skip
            sels = [p.sel if i is None else p.sel[i] for p, i in zip(picked, kept, strict=True)]
            valid = [p.valid if i is None else p.valid[i] for p, i in zip(picked, kept, strict=True)]  # fmt: skip
            out = picked_attention(self.attn.qkv, self.attn.proj, self.attn.heads, hs, sels, valid)
            return list(out.split([int(v.sum()) for v in valid]))

        def ffn(_: list[Tensor | None], rows: list[Tensor | None]) -> list[Tensor]:
            sub = [y if r is None else y.index_select(0, r) for y, r in zip(ys, rows, strict=True)]  # fmt: skip
            return list(self._ffn_branch(cat_rows(sub)).split([len(t) for t in sub]))

        ys = picked_residual(ys, picked, attn, self._gamma(self.ls1), drop)
        return picked_residual(ys, picked, ffn, self._gamma(self.ls2), drop)

    def _attn_branch(self, x: Tensor) -> Tensor:
        return self.attn(self.norm1(x))

    def _ffn_branch(self, x: Tensor) -> Tensor:
        return self.mlp(self.norm2(x))


def resize_pos_grid(pos: Tensor, h: int, w: int, offset: float) -> Tensor:
    """(1, 1 + M*M, D) position embeddings (CLS first) -> (1, 1 + h*w, D), bicubic in fp32.

    With ``offset`` > 0 (DINOv2) the M x M grid is resized by the scale factors
    ((h + offset) / M, (w + offset) / M), without antialiasing; with 0, to the size (h, w).
    """
    m = math.isqrt(pos.shape[1] - 1)
    grid = pos[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2).float()
    if offset:
        scale = ((h + offset) / m, (w + offset) / m)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
    else:
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
    grid = grid.to(pos.dtype).permute(0, 2, 3, 1).reshape(1, h * w, -1)
    return torch.cat([pos[:, :1], grid], dim=1)


class VisionTransformer(nn.Module):
    def __init__(
        self,
        spec: ModelSpec,
        *,
        drop_path: float = 0.0,
        layerscale: float | None = 1e-5,
        interpolate_offset: float = INTERPOLATE_OFFSET,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.interpolate_offset = interpolate_offset
        d = spec.width
        self.embed_dim = d
        self.patch_size = spec.patch
        self.n_blocks = spec.depth
        self.patch_embed = PatchEmbed(spec.patch, spec.in_chans, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, spec.n_patches() + 1, d))
        self.mask_token = nn.Parameter(torch.zeros(1, d))
        # DINOv2 ViT-g uses a uniform drop-path rate over blocks.
        self.blocks = nn.ModuleList(Block(spec, drop_path, layerscale) for _ in range(spec.depth))
        self.norm = nn.LayerNorm(d, eps=LN_EPS)
        self.grad_checkpointing = False
        self.init_weights()

    def init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def interpolate_pos_encoding(self, h: int, w: int) -> Tensor:
        """Position embeddings for an (h, w) patch grid (``resize_pos_grid``)."""
        side = math.isqrt(self.pos_embed.shape[1] - 1)
        if h == side and w == side:
            return self.pos_embed
        return resize_pos_grid(self.pos_embed, h, w, self.interpolate_offset)

    def prepare_tokens(self, x: Tensor, masks: Tensor | None = None) -> Tensor:
        _, _, H, W = x.shape
        x = self.patch_embed(x)  # (B, N, D)
        if masks is not None:  # (B, N) bool: iBOT replaces masked patches by the mask token
            x = torch.where(masks.unsqueeze(-1), self.mask_token.to(x.dtype).unsqueeze(0), x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1+N, D)
        return x + self.interpolate_pos_encoding(H // self.patch_size, W // self.patch_size)

    def _run_blocks(
        self, x: Tensor, keep: set[int] | None = None, upto: int | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        outputs = []
        for i, blk in enumerate(self.blocks[:upto]):
            if self.grad_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
            if keep is not None and i in keep:
                outputs.append(x)
        return x, outputs

    def forward_picked(
        self, xs: list[Tensor], masks: list[Tensor | None], picks: list[Tensor | None]
    ) -> list[tuple[Tensor, Tensor]]:
        """Per crop group: the normed CLS (B, D) and the normed patch tokens where picks[i]
        (B, N) is set (M, D), as ``x_norm_patchtokens[picks]`` (none when picks[i] is None).
        Crops of several sizes go in one packed pass; the last block computes only these
        tokens (its keys and values from all tokens), the rest being unread downstream."""
        tokens = [self.prepare_tokens(x, m) for x, m in zip(xs, masks, strict=True)]
        out, _ = self._run_blocks(tokens, upto=-1)  # type: ignore[arg-type]
        picked = [Picked.of(p, t.shape[0], t.shape[1], t.device) for t, p in zip(tokens, picks, strict=True)]  # fmt: skip
        last = self.blocks[-1]
        if self.grad_checkpointing and self.training:
            rows = torch.utils.checkpoint.checkpoint(last, out, picked, use_reentrant=False)  # fmt: skip
        else:
            rows = last(out, picked)
        normed = self.norm(cat_rows(rows)).split([len(r) for r in rows])
        return [p.split(r) for p, r in zip(picked, normed, strict=True)]

    def forward_features(self, x: Tensor, masks: Tensor | None = None) -> dict[str, Tensor | None]:
        x, _ = self._run_blocks(self.prepare_tokens(x, masks))
        x_norm = self.norm(x)
        return {
            "x_norm_clstoken": x_norm[:, 0],  # (B, D)
            "x_norm_patchtokens": x_norm[:, 1:],  # (B, N, D)
            "x_prenorm": x,
            "masks": masks,
        }

    def forward_features_list(
        self, xs: list[Tensor], masks: list[Tensor | None]
    ) -> list[dict[str, Tensor | None]]:
        """``forward_features`` of several crop sizes in one packed pass through the blocks."""
        tokens = [self.prepare_tokens(x, m) for x, m in zip(xs, masks, strict=True)]
        outs, _ = self._run_blocks(tokens)  # type: ignore[arg-type]
        results = []
        for x, m in zip(outs, masks, strict=True):  # type: ignore[call-overload]
            x_norm = self.norm(x)
            results.append(
                {
                    "x_norm_clstoken": x_norm[:, 0],
                    "x_norm_patchtokens": x_norm[:, 1:],
                    "x_prenorm": x,
                    "masks": m,
                }  # fmt: skip
            )
        return results

    def get_intermediate_layers(
        self,
        x: Tensor,
        n: int | list[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        norm: bool = True,
    ) -> tuple:
        """Outputs of the last ``n`` blocks (or of the blocks listed in ``n``), DINOv2-style."""
        _, _, H, W = x.shape
        keep = set(range(self.n_blocks - n, self.n_blocks)) if isinstance(n, int) else set(n)
        _, outs = self._run_blocks(self.prepare_tokens(x), keep)
        if norm:
            outs = [self.norm(o) for o in outs]
        cls = [o[:, 0] for o in outs]
        patches = [o[:, 1:] for o in outs]
        if reshape:
            h, w = H // self.patch_size, W // self.patch_size
            patches = [
                p.reshape(p.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous() for p in patches
            ]
        if return_class_token:
            return tuple(zip(patches, cls, strict=True))
        return tuple(patches)

    def forward(self, x: Tensor) -> Tensor:
        out = self.forward_features(x)["x_norm_clstoken"]
        assert out is not None
        return out


def build_backbone(
    spec: ModelSpec,
    *,
    drop_path: float = 0.0,
    layerscale: float | None = 1e-5,
    interpolate_offset: float = INTERPOLATE_OFFSET,
    device: torch.device | str | None = None,
) -> VisionTransformer:
    """A ViT for ``spec``; ``device='meta'`` builds it without memory (parameter counts)."""

    def make() -> VisionTransformer:
        return VisionTransformer(
            spec, drop_path=drop_path, layerscale=layerscale, interpolate_offset=interpolate_offset
        )

    if device is None:
        return make()
    with torch.device(device):
        return make()


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
