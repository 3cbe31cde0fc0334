"""Hugging Face ``Dinov2Model`` directories (how the released Web-DINO models are
distributed) <-> our ViT. Conversion keeps every tensor: our DINOv2-named state dict
(``blocks.{i}.attn.qkv``, ``mlp.w12``/``w3`` or ``fc1``/``fc2``, ``ls{1,2}.gamma``) <-> HF
(``q_proj``/``k_proj``/``v_proj``/``o_proj`` or the legacy ``attention.attention.query``
names, ``gate_proj``/``up_proj``/``down_proj`` or legacy fused ``weights_in``/``weights_out``,
``layer_scale{1,2}.lambda1``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from webssl_cli.errors import UserError
from webssl_cli.eval.encoders.base import Encoder, build_vit, spec_from_dict
from webssl_cli.specs.registry import ModelSpec


def hf_ffn_hidden(width: int, mlp_ratio: int, swiglu: bool) -> int:
    """The FFN hidden size ``Dinov2Model`` builds: int(width * ratio), and for SwiGLU two
    thirds of it rounded up to a multiple of 8 (``Dinov2SwiGLUFFN``)."""
    hidden = int(width * mlp_ratio)
    return (int(hidden * 2 / 3) + 7) // 8 * 8 if swiglu else hidden


def hf_config_from_spec(spec: ModelSpec) -> dict[str, Any]:
    """A ``Dinov2Config`` dict for ``spec``. HF derives the FFN size from an integer
    ``mlp_ratio``, so a spec whose ``ffn_hidden`` no integer ratio produces cannot be exported."""
    swiglu = spec.ffn == "swiglu"
    ratios = [r for r in range(1, 17) if hf_ffn_hidden(spec.width, r, swiglu) == spec.ffn_hidden]
    if not ratios:
        raise UserError(
            f"model {spec.name}: ffn_hidden={spec.ffn_hidden} ({spec.ffn}) is not what Hugging Face Dinov2 "
            f"builds for any integer mlp_ratio at width {spec.width}; it cannot be exported to Dinov2Model"
        )
    return {
        "model_type": "dinov2",
        "architectures": ["Dinov2Model"],
        "hidden_size": spec.width,
        "num_hidden_layers": spec.depth,
        "num_attention_heads": spec.heads,
        "mlp_ratio": ratios[0],
        "use_swiglu_ffn": swiglu,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-6,
        "image_size": spec.img_size,
        "patch_size": spec.patch,
        "num_channels": spec.in_chans,
        "qkv_bias": True,
        # No LayerScale in ours = HF's LayerScale module holding ones.
        "layerscale_value": float(spec.layerscale) if spec.layerscale else 1.0,
        "drop_path_rate": 0.0,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }


def spec_from_hf_config(cfg: dict[str, Any], name: str) -> ModelSpec:
    where = f"{name}/config.json"
    if cfg.get("model_type") not in ("dinov2", None):
        raise UserError(f"{where}: model_type {cfg.get('model_type')!r} is not dinov2")
    if cfg.get("hidden_act", "gelu") != "gelu" and not cfg.get("use_swiglu_ffn", False):
        raise UserError(
            f"{where}: hidden_act {cfg['hidden_act']!r} unsupported; only gelu (or SwiGLU)"
        )
    if abs(float(cfg.get("layer_norm_eps", 1e-6)) - 1e-6) > 1e-12 or not cfg.get("qkv_bias", True):
        raise UserError(f"{where}: layer_norm_eps must be 1e-6 and qkv_bias true (the DINOv2 ViT)")
    width, swiglu = int(cfg.get("hidden_size", 768)), bool(cfg.get("use_swiglu_ffn", False))
    patch, size = cfg.get("patch_size", 14), cfg.get("image_size", 224)
    patch = patch[0] if isinstance(patch, list) else patch
    size = size[0] if isinstance(size, list) else size
    ls = float(cfg.get("layerscale_value", 1.0))
    return ModelSpec(
        name=name,
        width=width,
        depth=int(cfg.get("num_hidden_layers", 12)),
        heads=int(cfg.get("num_attention_heads", 12)),
        ffn="swiglu" if swiglu else "mlp",
        ffn_hidden=hf_ffn_hidden(width, int(cfg.get("mlp_ratio", 4)), swiglu),
        patch=int(patch),
        img_size=int(size),
        in_chans=int(cfg.get("num_channels", 3)),
        layerscale=ls,
    )


_LEGACY_TO_CURRENT = [
    (".attention.attention.query.", ".attention.q_proj."),
    (".attention.attention.key.", ".attention.k_proj."),
    (".attention.attention.value.", ".attention.v_proj."),
    (".attention.output.dense.", ".attention.o_proj."),
    (".mlp.weights_out.", ".mlp.down_proj."),
]


def hf_to_ours(sd: dict[str, Tensor], depth: int) -> dict[str, Tensor]:
    """HF Dinov2Model weights (current or legacy names) -> our DINOv2-named state dict."""
    cur: dict[str, Tensor] = {}
    for k, v in sd.items():
        k = k.removeprefix("dinov2.")  # Dinov2ForImageClassification checkpoints
        for old, new in _LEGACY_TO_CURRENT:
            k = k.replace(old, new)
        if ".mlp.weights_in." in k:  # legacy fused gate+up
            gate, up = v.chunk(2, dim=0)
            cur[k.replace("weights_in", "gate_proj")] = gate
            cur[k.replace("weights_in", "up_proj")] = up
        else:
            cur[k] = v
    out = {
        "cls_token": cur["embeddings.cls_token"],
        "pos_embed": cur["embeddings.position_embeddings"],
        "mask_token": cur.get(
            "embeddings.mask_token", torch.zeros_like(cur["embeddings.cls_token"][0])
        ),
        "patch_embed.proj.weight": cur["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": cur["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": cur["layernorm.weight"],
        "norm.bias": cur["layernorm.bias"],
    }
    for i in range(depth):
        p, o = f"encoder.layer.{i}.", f"blocks.{i}."
        for part in ("weight", "bias"):
            out[o + f"norm1.{part}"] = cur[p + f"norm1.{part}"]
            out[o + f"norm2.{part}"] = cur[p + f"norm2.{part}"]
            out[o + f"attn.qkv.{part}"] = torch.cat(
                [cur[p + f"attention.{n}_proj.{part}"] for n in "qkv"], 0
            )
            out[o + f"attn.proj.{part}"] = cur[p + f"attention.o_proj.{part}"]
            if p + "mlp.gate_proj.weight" in cur:
                out[o + f"mlp.w12.{part}"] = torch.cat(
                    [cur[p + f"mlp.gate_proj.{part}"], cur[p + f"mlp.up_proj.{part}"]], 0
                )
                out[o + f"mlp.w3.{part}"] = cur[p + f"mlp.down_proj.{part}"]
            else:
                out[o + f"mlp.fc1.{part}"] = cur[p + f"mlp.fc1.{part}"]
                out[o + f"mlp.fc2.{part}"] = cur[p + f"mlp.fc2.{part}"]
        out[o + "ls1.gamma"] = cur[p + "layer_scale1.lambda1"]
        out[o + "ls2.gamma"] = cur[p + "layer_scale2.lambda1"]
    return out


def ours_to_hf(
    sd: dict[str, Tensor], depth: int, naming: Literal["current", "legacy"] = "legacy"
) -> dict[str, Tensor]:
    """Our state dict -> HF Dinov2Model weights. ``legacy`` names load in transformers 4.x and
    5.x alike (5.x renames them on load); ``current`` are 5.x's own names."""
    d = sd["cls_token"].shape[-1]
    out = {
        "embeddings.cls_token": sd["cls_token"],
        "embeddings.position_embeddings": sd["pos_embed"],
        "embeddings.mask_token": sd["mask_token"].reshape(1, d),
        "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        "layernorm.weight": sd["norm.weight"],
        "layernorm.bias": sd["norm.bias"],
    }
    legacy = naming == "legacy"
    attn_names = (
        [
            "attention.attention.query",
            "attention.attention.key",
            "attention.attention.value",
            "attention.output.dense",
        ]
        if legacy
        else ["attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj"]
    )
    for i in range(depth):
        o, p = f"blocks.{i}.", f"encoder.layer.{i}."
        for part in ("weight", "bias"):
            out[p + f"norm1.{part}"] = sd[o + f"norm1.{part}"]
            out[p + f"norm2.{part}"] = sd[o + f"norm2.{part}"]
            for name, t in zip(attn_names[:3], sd[o + f"attn.qkv.{part}"].chunk(3, 0), strict=True):
                out[p + f"{name}.{part}"] = t
            out[p + f"{attn_names[3]}.{part}"] = sd[o + f"attn.proj.{part}"]
            if o + "mlp.w12.weight" in sd:
                if legacy:
                    out[p + f"mlp.weights_in.{part}"] = sd[o + f"mlp.w12.{part}"]
                    out[p + f"mlp.weights_out.{part}"] = sd[o + f"mlp.w3.{part}"]
                else:
                    gate, up = sd[o + f"mlp.w12.{part}"].chunk(2, 0)
                    out[p + f"mlp.gate_proj.{part}"], out[p + f"mlp.up_proj.{part}"] = gate, up
                    out[p + f"mlp.down_proj.{part}"] = sd[o + f"mlp.w3.{part}"]
            else:
                out[p + f"mlp.fc1.{part}"] = sd[o + f"mlp.fc1.{part}"]
                out[p + f"mlp.fc2.{part}"] = sd[o + f"mlp.fc2.{part}"]
        for j in (1, 2):
            g = sd.get(o + f"ls{j}.gamma")
            out[p + f"layer_scale{j}.lambda1"] = g if g is not None else torch.ones(d)
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def _read_safetensors_dir(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    if not files:
        bins = sorted(path.glob("pytorch_model*.bin"))
        if not bins:
            raise UserError(f"{path}: no *.safetensors or pytorch_model.bin next to config.json")
        sd: dict[str, Tensor] = {}
        for b in bins:
            sd.update(torch.load(b, map_location="cpu", weights_only=True))
        return sd
    sd = {}
    for f in files:
        sd.update(load_file(str(f)))
    return sd


def load_hf_dinov2(path: Path) -> Encoder:
    """A local ``Dinov2Model`` directory (config.json + safetensors) as our ViT."""
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise UserError(
            f"{path}/config.json: unreadable ({exc}); a Hugging Face model directory needs one"
        ) from exc
    spec = spec_from_hf_config(cfg, path.name)
    ours = hf_to_ours(_read_safetensors_dir(path), spec.depth)
    ls_ones = all(
        torch.equal(v, torch.ones_like(v)) for k, v in ours.items() if k.endswith(".gamma")
    )
    if ls_ones:  # HF's stand-in for "no LayerScale"
        ours = {k: v for k, v in ours.items() if not k.endswith(".gamma")}
        spec = dataclasses.replace(spec, layerscale=None)
    model = build_vit(spec, ours)
    # transformers' Dinov2Model resizes position embeddings to the grid (no DINOv2 offset):
    # features of a checkpoint loaded from it stay equal to transformers' at every size.
    model.interpolate_offset = 0.0
    return Encoder(
        model, name=spec.name, width=spec.width, patch=spec.patch, img_size=spec.img_size
    )


def export_hf(
    checkpoint: Path, out_dir: Path, naming: Literal["current", "legacy"] = "legacy"
) -> Path:
    """Write our ``teacher_backbone.pt`` as a Dinov2Model directory (config.json + model.safetensors)."""
    from safetensors.torch import save

    from webssl_cli.rundir import atomic_write_bytes, atomic_write_json

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    spec = spec_from_dict(ckpt["spec"])
    cfg = hf_config_from_spec(spec)
    if not any(k.endswith("ls1.gamma") for k in ckpt["state_dict"]):
        cfg["layerscale_value"] = 1.0
    sd = ours_to_hf(ckpt["state_dict"], spec.depth, naming)
    atomic_write_bytes(out_dir / "model.safetensors", save(sd, metadata={"format": "pt"}))
    atomic_write_json(out_dir / "config.json", cfg)
    return out_dir
