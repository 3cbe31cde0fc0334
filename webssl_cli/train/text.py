"""CLIP's text tower and the two-tower model: a causal transformer over caption tokens and the
registry ViT, each projected into the joint embedding, with a learnt logit scale.

The text tower follows CLIP / OpenCLIP: token + learnt positional embeddings, pre-LayerNorm
blocks with causal self-attention and a GELU MLP (4x), a final LayerNorm, the features of the
end token, a bias-free projection. The image side is the ViT's normed CLS token through a
bias-free projection. Initialisation as OpenCLIP: token embeddings N(0, 0.02), positions
N(0, 0.01), attention in-projections N(0, width^-0.5), out-projections and the MLP's second
layer N(0, (2 * layers * width)^-0.5 * width^-0.5), its first N(0, (2 width)^-0.5), the
projections N(0, width^-0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from webssl_cli.specs.methods import ClipConfig, resolved_text_tower
from webssl_cli.specs.registry import ModelSpec
from webssl_cli.train.vit import build_backbone


@dataclass(frozen=True)
class TextDims:
    width: int
    layers: int
    heads: int
    embed_dim: int
    context_length: int
    vocab_size: int


def text_dims(cfg: ClipConfig, vision_width: int, vocab_size: int) -> TextDims:
    """The text tower of a CLIP cell (``specs.methods.resolved_text_tower``)."""
    width, layers, heads, embed = resolved_text_tower(cfg, vision_width)
    return TextDims(width, layers, heads, embed, cfg.context_length, vocab_size)


class CausalBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"text width {width} is not a multiple of {heads} heads")
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TextTransformer(nn.Module):
    def __init__(self, dims: TextDims) -> None:
        super().__init__()
        self.dims = dims
        w = dims.width
        self.token_embedding = nn.Embedding(dims.vocab_size, w)
        self.positional_embedding = nn.Parameter(torch.empty(dims.context_length, w))
        self.blocks = nn.ModuleList(CausalBlock(w, dims.heads) for _ in range(dims.layers))
        self.norm_final = nn.LayerNorm(w)
        self.projection = nn.Linear(w, dims.embed_dim, bias=False)
        self.init_weights()

    def init_weights(self) -> None:
        w, layers = self.dims.width, self.dims.layers
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std = (w**-0.5) * ((2 * layers) ** -0.5)
        for blk in self.blocks:
            assert isinstance(blk, CausalBlock)
            nn.init.normal_(blk.qkv.weight, std=w**-0.5)
            nn.init.normal_(blk.proj.weight, std=proj_std)
            nn.init.normal_(blk.fc1.weight, std=(2 * w) ** -0.5)
            nn.init.normal_(blk.fc2.weight, std=proj_std)
            for lin in (blk.qkv, blk.proj, blk.fc1, blk.fc2):
                nn.init.zeros_(lin.bias)
        nn.init.normal_(self.projection.weight, std=w**-0.5)

    def forward(self, tokens: Tensor, ends: Tensor) -> Tensor:
        """(N, L) token ids and (N,) end-token indices -> (N, embed_dim) unnormalised."""
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]]
        for blk in self.blocks:
            x = blk(x)
        x = self.norm_final(x)
        return self.projection(x[torch.arange(x.shape[0], device=x.device), ends])


class CLIPModel(nn.Module):
    """Vision tower (``backbone``, the registry ViT), its projection, the text tower and the
    log logit scale; ``forward`` returns L2-normalised features and the multiplier."""

    def __init__(self, spec: ModelSpec, dims: TextDims, init_logit_scale: float,
                 layerscale: float | None = None, drop_path: float = 0.0) -> None:  # fmt: skip
        super().__init__()
        self.backbone = build_backbone(spec, drop_path=drop_path, layerscale=layerscale)
        self.backbone.mask_token.requires_grad_(False)  # no masked inputs: the token is unused
        self.visual_projection = nn.Linear(spec.width, dims.embed_dim, bias=False)
        nn.init.normal_(self.visual_projection.weight, std=spec.width**-0.5)
        self.text = TextTransformer(dims)
        # one element, not a scalar: FSDP2 shards only parameters with a dimension
        self.logit_scale = nn.Parameter(torch.tensor([float(init_logit_scale)]))

    def encode_image(self, images: Tensor) -> Tensor:
        return F.normalize(self.visual_projection(self.backbone(images)), dim=-1)

    def encode_text(self, tokens: Tensor, ends: Tensor) -> Tensor:
        return F.normalize(self.text(tokens, ends), dim=-1)

    def forward(
        self, images: Tensor, tokens: Tensor, ends: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        return self.encode_image(images), self.encode_text(tokens, ends), self.logit_scale.exp()[0]
