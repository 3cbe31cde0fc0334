"""Frozen encoders behind one interface: our own checkpoints, Hugging Face ``Dinov2Model``
directories (how the released Web-DINO models are distributed), and optional timm baselines.

``Encoder.blocks(x, n)`` gives the final-normed (CLS, patch tokens) of the last ``n`` blocks;
the probes and the MLLM use nothing else. Conversion to and from Hugging Face keeps every
tensor: our DINOv2-named state dict (``blocks.{i}.attn.qkv``, ``mlp.w12``/``w3`` or
``fc1``/``fc2``, ``ls{1,2}.gamma``) <-> HF (``q_proj``/``k_proj``/``v_proj``/``o_proj`` or the
legacy ``attention.attention.query`` names, ``gate_proj``/``up_proj``/``down_proj`` or legacy
fused ``weights_in``/``weights_out``, ``layer_scale{1,2}.lambda1``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from webssl_cli.errors import UserError
from webssl_cli.specs.registry import ModelSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Encoder(nn.Module):
    """A frozen image encoder: normalised pixels (B, 3, H, W) -> per-block (CLS, patches)."""

    def __init__(
        self, backbone: nn.Module, *, name: str, width: int, patch: int, img_size: int
    ) -> None:
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)
        self.name = name
        self.width = width
        self.patch = patch
        self.img_size = img_size
        self.mean = IMAGENET_MEAN
        self.std = IMAGENET_STD

    @torch.no_grad()
    def blocks(self, x: Tensor, n: int = 1) -> list[tuple[Tensor, Tensor]]:
        """(CLS (B, D), patches (B, N, D)) of the last ``n`` blocks, each through the final norm."""
        outs = self.backbone.get_intermediate_layers(x, n, return_class_token=True, norm=True)
        return [(cls, patches) for patches, cls in outs]

    @torch.no_grad()
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.blocks(x, 1)[0]


# ---- our checkpoints ------------------------------------------------------------------------
def spec_from_dict(d: dict[str, Any]) -> ModelSpec:
    fields = {f.name for f in dataclasses.fields(ModelSpec)}
    return ModelSpec(**{k: v for k, v in d.items() if k in fields})


def build_vit(spec: ModelSpec, state_dict: dict[str, Tensor]) -> nn.Module:
    from webssl_cli.train.vit import build_backbone

    # LayerScale is present iff the state dict has it; its init value is then overwritten.
    has_ls = any(k.endswith("ls1.gamma") for k in state_dict)
    model = build_backbone(spec, layerscale=(spec.layerscale or 1e-5) if has_ls else None)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise UserError(
            f"checkpoint does not match model {spec.name}: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return model


def load_own(path: Path) -> Encoder:
    """``train/teacher_backbone.pt``: {"model": name, "spec": asdict(ModelSpec), "state_dict"}."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: one line for the user
        raise UserError(
            f"{path}: not a readable webssl backbone checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "spec" not in ckpt:
        raise UserError(
            f"{path}: expected keys 'model', 'spec', 'state_dict' (a train/teacher_backbone.pt)"
        )
    spec = spec_from_dict(ckpt["spec"])
    model = build_vit(spec, ckpt["state_dict"])
    return Encoder(
        model,
        name=str(ckpt.get("model", spec.name)),
        width=spec.width,
        patch=spec.patch,
        img_size=spec.img_size,
    )


def save_own(model: nn.Module, spec: ModelSpec, path: Path) -> None:
    """Write a backbone in the teacher_backbone.pt format (used by tests and exports)."""
    import io

    from webssl_cli.rundir import atomic_write_bytes

    buf = io.BytesIO()
    torch.save(
        {"model": spec.name, "spec": dataclasses.asdict(spec), "state_dict": model.state_dict()},
        buf,
    )
    atomic_write_bytes(path, buf.getvalue())


# ---- Hugging Face Dinov2 <-> ours -------------------------------------------------------------
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


# ---- optional baselines ----------------------------------------------------------------------
class _TimmBackbone(nn.Module):
    """timm ViTs: DINOv2-style ``get_intermediate_layers`` over ``forward_intermediates``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def get_intermediate_layers(
        self, x: Tensor, n: int, return_class_token: bool = True, norm: bool = True
    ) -> Any:
        _, inter = self.model.forward_intermediates(
            x, indices=n, norm=norm, output_fmt="NLC", return_prefix_tokens=True
        )
        return [(p, c[:, 0]) for p, c in inter]


def load_timm(spec: str) -> Encoder:
    """``timm:<model name>[@<local weights file>]`` (OpenCLIP towers exist in timm too)."""
    try:
        import timm
    except ImportError as exc:
        raise UserError(f"{spec}: timm baselines need `pip install timm` (not installed)") from exc
    name, _, weights = spec.removeprefix("timm:").partition("@")
    kwargs: dict[str, Any] = {"pretrained": bool(weights)}
    if weights:
        kwargs["pretrained_cfg_overlay"] = {"file": weights}
    model = timm.create_model(name, num_classes=0, **kwargs)
    size = model.patch_embed.img_size[0]
    patch = model.patch_embed.patch_size[0]
    return Encoder(
        _TimmBackbone(model), name=name, width=model.num_features, patch=patch, img_size=size
    )


def load_encoder(source: str | Path) -> Encoder:
    """An encoder from ``source``: our ``.pt`` checkpoint, an HF Dinov2 directory, or ``timm:...``."""
    s = str(source)
    if s.startswith("timm:"):
        return load_timm(s)
    path = Path(s)
    if path.is_dir() and (path / "config.json").exists():
        return load_hf_dinov2(path)
    if path.is_file():
        return load_own(path)
    raise UserError(
        f"{s}: not an encoder; give a teacher_backbone.pt, a Dinov2Model directory or timm:<name>"
    )


def random_encoder(model: str, seed: int = 0) -> Encoder:
    """A randomly initialised encoder of a registry size (the untrained baseline)."""
    from webssl_cli.specs.registry import get_model
    from webssl_cli.train.vit import build_backbone

    spec = get_model(model)
    torch.manual_seed(seed)
    return Encoder(
        build_backbone(spec, layerscale=spec.layerscale),
        name=f"{spec.name}-random",
        width=spec.width,
        patch=spec.patch,
        img_size=spec.img_size,
    )
