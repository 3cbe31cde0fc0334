"""The Hugging Face path: random Dinov2Models load into our ViT with the same features, and our
export loads back into Dinov2Model (round trip)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from webssl_cli.eval import encoders as E  # noqa: E402
from webssl_cli.specs.registry import ModelSpec  # noqa: E402

TOL = 1e-4


def _hf_model(tmp: Path, swiglu: bool, layerscale: float | None, seed: int = 0) -> Path:
    cfg = transformers.Dinov2Config(
        hidden_size=48, num_hidden_layers=3, num_attention_heads=3, mlp_ratio=4, use_swiglu_ffn=swiglu,
        image_size=32, patch_size=8, layerscale_value=layerscale if layerscale else 1.0,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = transformers.Dinov2Model(cfg).eval()
    with torch.no_grad():  # random, non-trivial values everywhere (HF inits some to 0/1)
        for name, p in model.named_parameters():
            if "lambda1" in name and layerscale:
                p.copy_(torch.rand_like(p) * 0.5 + 0.1)
            elif "lambda1" not in name:
                p.normal_(0, 0.05 if p.ndim > 1 else 0.1)
    out = tmp / f"hf-{'swiglu' if swiglu else 'mlp'}-{'ls' if layerscale else 'nols'}"
    model.save_pretrained(out)
    return out


def _hf_features(path: Path, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m = transformers.Dinov2Model.from_pretrained(path, attn_implementation="eager").eval()
    with torch.no_grad():
        h = m(pixel_values=x).last_hidden_state
    return h[:, 0], h[:, 1:]


@pytest.mark.parametrize("swiglu", [True, False])
@pytest.mark.parametrize("layerscale", [1e-1, None])
def test_hf_features_match_and_round_trip(
    tmp_path: Path, swiglu: bool, layerscale: float | None
) -> None:
    path = _hf_model(tmp_path, swiglu, layerscale)
    x = torch.randn(2, 3, 32, 32)  # the native resolution: no position interpolation involved
    ref_cls, ref_patch = _hf_features(path, x)
    enc = E.load_hf_dinov2(path)
    assert enc.backbone.spec.ffn == ("swiglu" if swiglu else "mlp")
    assert (enc.backbone.spec.layerscale is None) == (layerscale is None)
    cls, patch = enc(x)
    assert (cls - ref_cls).abs().max() <= TOL
    assert (patch - ref_patch).abs().max() <= TOL
    assert ref_cls.abs().max() > 0.1  # the comparison is not between two zeros

    ckpt = tmp_path / "teacher_backbone.pt"
    E.save_own(enc.backbone, enc.backbone.spec, ckpt)
    for naming in ("legacy", "current"):
        out = E.export_hf(ckpt, tmp_path / f"export-{naming}", naming=naming)
        rt_cls, rt_patch = _hf_features(out, x)
        assert (rt_cls - ref_cls).abs().max() <= TOL, naming
        assert (rt_patch - ref_patch).abs().max() <= TOL, naming
        again = E.load_hf_dinov2(out)
        assert (again(x)[0] - cls).abs().max() <= TOL


def test_registry_spec_exports_and_swiglu_hidden_is_checked(tmp_path: Path) -> None:
    from webssl_cli.specs.registry import get_model

    for name in ("webdino-7b", "webdino-300m", "vit-small", "vit-test"):
        spec = get_model(name)
        cfg = E.hf_config_from_spec(spec)
        assert (
            E.hf_ffn_hidden(spec.width, cfg["mlp_ratio"], cfg["use_swiglu_ffn"]) == spec.ffn_hidden
        )
    odd = dataclasses.replace(get_model("vit-test"), ffn="swiglu", ffn_hidden=50)
    with pytest.raises(Exception, match="cannot be exported"):
        E.hf_config_from_spec(odd)
    assert isinstance(odd, ModelSpec)


def test_hf_features_match_at_another_resolution(tmp_path: Path) -> None:
    """At a size other than the native one transformers resizes the position embeddings to the
    grid (no DINOv2 offset): a Hugging Face checkpoint loads so that features stay equal."""
    path = _hf_model(tmp_path, swiglu=False, layerscale=1e-1)
    x = torch.randn(2, 3, 48, 48)  # 6 x 6 patches from a 4 x 4 grid of position embeddings
    ref_cls, ref_patch = _hf_features(path, x)
    cls, patch = E.load_hf_dinov2(path)(x)
    assert (cls - ref_cls).abs().max() <= 1e-5 and (patch - ref_patch).abs().max() <= 1e-5
