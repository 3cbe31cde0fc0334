"""Named ViT sizes: the study's model axis. Pure data, no torch.

The Web-DINO sizes are those of Fan et al. 2025 (Table in ../shared/DESIGN.md): patch 14,
SwiGLU FFN with hidden = round-to-8(2/3 * 4 * width), LayerScale, biases on qkv/proj/ffn,
no register tokens. Small sizes exist for CPU work: smoke studies, tests and benchmarks.
Parameter counts are analytic; ``train.vit`` builds modules from the same specs and a test
checks that the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from webssl_cli.errors import UserError, did_you_mean


def swiglu_hidden(width: int) -> int:
    """DINOv2's SwiGLU hidden size: 2/3 of the 4x MLP, rounded up to a multiple of 8."""
    hidden = int(4 * width * 2 / 3)
    return (hidden + 7) // 8 * 8


@dataclass(frozen=True)
class ModelSpec:
    name: str
    width: int  # embedding dimension D
    depth: int  # transformer blocks
    heads: int
    ffn: Literal["swiglu", "mlp"]
    ffn_hidden: int
    patch: int = 14
    img_size: int = 224  # position embeddings are learned at this size and interpolated
    in_chans: int = 3
    layerscale: float | None = 1e-5
    description: str = ""

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    def n_patches(self, img_size: int | None = None) -> int:
        side = (img_size or self.img_size) // self.patch
        return side * side

    # ---- analytic parameter counts ------------------------------------------------------
    def block_params(self) -> int:
        d, h = self.width, self.ffn_hidden
        norms = 2 * 2 * d  # two LayerNorms, weight + bias
        attn = (d * 3 * d + 3 * d) + (d * d + d)  # qkv + proj, with biases
        if self.ffn == "swiglu":
            ffn = (d * 2 * h + 2 * h) + (h * d + d)  # fused w1/w2 (gate, up) + w3 (down)
        else:
            ffn = (d * h + h) + (h * d + d)
        ls = 2 * d if self.layerscale else 0
        return norms + attn + ffn + ls

    def backbone_params(self) -> int:
        """Backbone parameters: patch embed, CLS, pos embed, blocks, final norm (+ mask token)."""
        d = self.width
        patch_embed = self.in_chans * self.patch * self.patch * d + d
        cls_token = d
        pos_embed = (self.n_patches() + 1) * d
        mask_token = d
        final_norm = 2 * d
        return (
            patch_embed
            + cls_token
            + pos_embed
            + mask_token
            + final_norm
            + self.depth * self.block_params()
        )


def head_params(
    in_dim: int, hidden: int, bottleneck: int, n_prototypes: int, layers: int = 3
) -> int:
    """DINOv2 projection head: ``layers`` linear layers (in -> hidden ... -> bottleneck, with
    biases) then a bias-free weight-normalised prototype layer (``weight_g`` + ``weight_v``)."""
    if layers == 1:
        mlp = in_dim * bottleneck + bottleneck
    else:
        mlp = (
            (in_dim * hidden + hidden)
            + (layers - 2) * (hidden * hidden + hidden)
            + (hidden * bottleneck + bottleneck)
        )
    prototypes = bottleneck * n_prototypes + n_prototypes  # weight_v + weight_g
    return mlp + prototypes


def _web(name: str, width: int, depth: int, heads: int, desc: str) -> ModelSpec:
    return ModelSpec(name, width, depth, heads, "swiglu", swiglu_hidden(width), description=desc)


def _small(
    name: str, width: int, depth: int, heads: int, patch: int, img: int, desc: str
) -> ModelSpec:
    return ModelSpec(
        name, width, depth, heads, "mlp", 4 * width, patch=patch, img_size=img, description=desc
    )


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in [
        # Web-DINO (paper) sizes; params are the paper's table.
        _web("webdino-300m", 1024, 24, 16, "ViT-L/14, 0.30B"),
        _web("webdino-1b", 1536, 40, 24, "ViT-g/14, 1.13B"),
        _web("webdino-2b", 2688, 24, 21, "2.08B"),
        _web("webdino-3b", 3072, 26, 24, "2.95B"),
        _web("webdino-5b", 3584, 32, 28, "4.94B"),
        _web("webdino-7b", 4096, 32, 32, "6.45B"),
        # Classic small ViTs (DINOv2 ViT-S/B use an MLP FFN).
        _small("vit-small", 384, 12, 6, 14, 224, "ViT-S/14, 22M"),
        _small("vit-base", 768, 12, 12, 14, 224, "ViT-B/14, 86M"),
        # CPU sizes for the smoke study (64 px global crops, patch 8) and tests.
        _small("vit-mini", 192, 6, 3, 8, 64, "CPU scaling size, 2.7M"),
        _small("vit-micro", 128, 6, 4, 8, 64, "CPU smoke size, 1.2M"),
        _small("vit-nano", 96, 4, 3, 8, 64, "CPU smoke size, 0.45M"),
        _small("vit-pico", 64, 3, 2, 8, 64, "CPU smoke size, 0.15M"),
        _small("vit-test", 32, 2, 2, 8, 32, "unit tests only"),
    ]
}

# The paper's own names, accepted as aliases on the study's model axis.
ALIASES: dict[str, str] = {
    "300M": "webdino-300m",
    "1B": "webdino-1b",
    "2B": "webdino-2b",
    "3B": "webdino-3b",
    "5B": "webdino-5b",
    "7B": "webdino-7b",
    "vit-l": "webdino-300m",
    "vit-g": "webdino-1b",
}


def resolve_model_name(name: str) -> str:
    """Canonical registry key for ``name`` (aliases resolved); raises UserError listing valid ones."""
    key = str(name)
    if key in MODELS:
        return key
    if key in ALIASES:
        return ALIASES[key]
    lowered = {k.lower(): k for k in MODELS} | {k.lower(): v for k, v in ALIASES.items()}
    if key.lower() in lowered:
        return lowered[key.lower()]
    valid = list(MODELS)
    raise UserError(
        f"unknown model {key!r}{did_you_mean(key, valid + list(ALIASES))}; valid: {', '.join(valid)}"
    )


def get_model(name: str) -> ModelSpec:
    return MODELS[resolve_model_name(name)]
