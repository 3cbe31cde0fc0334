"""Released CLIP-family vision towers as reference encoders: local ``CLIPVisionModel`` and
``SiglipVisionModel`` directories (or whole CLIP / SigLIP model directories, whose vision
half is loaded), run through transformers as they are (no conversion to our ViT: CLIP's
pre-LayerNorm and quick-GELU, SigLIP's missing CLS token have no counterpart there).

``Encoder.blocks`` reads the hidden states of the last blocks, each through the tower's final
LayerNorm (``post_layernorm``). The image-level token: CLIP's CLS token; SigLIP has none, so
its last block gives the attention-pooling head's output (SigLIP's image embedding) and the
earlier blocks the mean of their normed patch tokens. Pixels are normalised with the model's
own statistics (``preprocessor_config.json``, else CLIP's or SigLIP's published ones), and
position embeddings are interpolated to the evaluation size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from webssl_cli.errors import UserError
from webssl_cli.eval.encoders.base import Encoder

CLIP_TYPES = ("clip", "clip_vision_model")
SIGLIP_TYPES = ("siglip", "siglip_vision_model")
_STATS = {  # the published preprocessing of each family
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


class HFVisionBackbone(nn.Module):
    """A transformers vision tower behind our ViT's ``get_intermediate_layers``."""

    def __init__(self, model: nn.Module, family: str) -> None:
        super().__init__()
        self.model, self.family = model, family
        vm: Any = getattr(model, "vision_model", model)  # transformers 4.x nests the tower
        self.post_norm: nn.Module = vm.post_layernorm
        self.head: nn.Module | None = getattr(vm, "head", None) if family == "siglip" else None

    @torch.no_grad()
    def get_intermediate_layers(self, x: Tensor, n: int = 1, return_class_token: bool = True,
                                norm: bool = True) -> tuple[Any, ...]:  # fmt: skip
        out = self.model(pixel_values=x, output_hidden_states=True, interpolate_pos_encoding=True)
        states = out.hidden_states[-n:]
        res = []
        for i, h in enumerate(states):
            h = self.post_norm(h) if norm else h
            if self.family == "clip":
                cls, patches = h[:, 0], h[:, 1:]
            else:
                patches = h
                last = i == len(states) - 1
                cls = self.head(h) if last and self.head is not None else h.mean(1)
            res.append((patches, cls))
        return tuple(res) if return_class_token else tuple(p for p, _ in res)


def hf_model_type(path: Path) -> str | None:
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return str(cfg.get("model_type")) if isinstance(cfg, dict) else None


def load_hf_clip(path: Path) -> Encoder:
    """A local CLIP or SigLIP vision tower (``save_pretrained`` directory) as an Encoder."""
    mtype = hf_model_type(path)
    if mtype in CLIP_TYPES:
        from transformers import CLIPVisionModel as Model

        family = "clip"
    elif mtype in SIGLIP_TYPES:
        from transformers import SiglipVisionModel as Model  # type: ignore[assignment]

        family = "siglip"
    else:
        raise UserError(f"{path}/config.json: model_type {mtype!r} is not clip or siglip")
    try:
        model = Model.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: does not load as a {family} vision model ({exc})") from None
    cfg: Any = model.config
    enc = Encoder(HFVisionBackbone(model, family), name=path.name, width=int(cfg.hidden_size),
                  patch=int(cfg.patch_size), img_size=int(cfg.image_size))  # fmt: skip
    enc.mean, enc.std = _stats(path, family)
    return enc


Stats = tuple[tuple[float, float, float], tuple[float, float, float]]


def _stats(path: Path, family: str) -> Stats:
    try:
        pre = json.loads((path / "preprocessor_config.json").read_text())
        m, s = (float(v) for v in pre["image_mean"]), (float(v) for v in pre["image_std"])
        mean, std = tuple(m), tuple(s)
        if len(mean) == 3 and len(std) == 3:
            return mean, std  # type: ignore[return-value]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return _STATS[family]  # type: ignore[return-value]
