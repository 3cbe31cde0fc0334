import pytest
import torch

from webssl_cli import device as dev
from webssl_cli.specs.registry import MODELS, get_model
from webssl_cli.train.vit import build_backbone, count_params


@pytest.mark.parametrize("name", list(MODELS))
def test_param_count_matches_registry_on_meta(name):
    spec = MODELS[name]
    model = build_backbone(spec, layerscale=spec.layerscale, device="meta")
    assert count_params(model) == spec.backbone_params()


def test_state_dict_uses_dinov2_names():
    keys = set(build_backbone(get_model("webdino-300m"), device="meta").state_dict())
    for k in [
        "patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed", "mask_token",
        "blocks.0.norm1.weight", "blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias", "blocks.0.attn.proj.weight",
        "blocks.0.ls1.gamma", "blocks.0.norm2.bias", "blocks.0.mlp.w12.weight", "blocks.0.mlp.w3.bias",
        "blocks.0.ls2.gamma", "norm.weight",
    ]:  # fmt: skip
        assert k in keys, k
    mlp_keys = set(build_backbone(get_model("vit-test"), device="meta").state_dict())
    assert {"blocks.1.mlp.fc1.weight", "blocks.1.mlp.fc2.bias"} <= mlp_keys


def _tiny(**kw):
    torch.manual_seed(0)
    spec = get_model("vit-test")
    return spec, build_backbone(spec, layerscale=1.0, **kw)


@pytest.mark.parametrize("size", [32, 16, 24])
def test_sdpa_and_math_attention_agree_forward_and_backward(size):
    spec, model = _tiny()
    x = torch.randn(3, 3, size, size)
    out = {}
    for impl in ("sdpa", "math"):
        model.zero_grad()
        with dev.attention(impl):
            y = model.forward_features(x)["x_norm_patchtokens"]
        y.square().sum().backward()
        out[impl] = (y.detach(), model.blocks[0].attn.qkv.weight.grad.clone())
    torch.testing.assert_close(out["sdpa"][0], out["math"][0], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(out["sdpa"][1], out["math"][1], atol=2e-4, rtol=1e-4)


def test_xformers_forced_without_it_fails_clearly():
    _, model = _tiny()
    with dev.attention("xformers"), pytest.raises(RuntimeError, match="xformers"):
        model(torch.randn(1, 3, 32, 32))


def test_forward_features_shapes_masks_and_interpolation():
    spec, model = _tiny()
    x = torch.randn(2, 3, 32, 32)
    masks = torch.zeros(2, 16, dtype=torch.bool)
    masks[0, :5] = True
    out = model.forward_features(x, masks=masks)
    assert out["x_norm_clstoken"].shape == (2, 32)
    assert out["x_norm_patchtokens"].shape == (2, 16, 32)
    assert out["x_prenorm"].shape == (2, 17, 32)
    # Masking changes the masked image only.
    ref = model.forward_features(x)
    assert torch.equal(out["x_norm_clstoken"][1], ref["x_norm_clstoken"][1])
    assert not torch.allclose(out["x_norm_clstoken"][0], ref["x_norm_clstoken"][0])
    # Position embeddings interpolate to other crop sizes (and are the identity at img_size).
    assert model.interpolate_pos_encoding(4, 4) is model.pos_embed
    assert model.forward_features(torch.randn(2, 3, 16, 16))["x_norm_patchtokens"].shape == (
        2,
        4,
        32,
    )
    assert model.forward_features(torch.randn(1, 3, 48, 40))["x_norm_patchtokens"].shape == (
        1,
        30,
        32,
    )


def test_get_intermediate_layers():
    _, model = _tiny()
    x = torch.randn(2, 3, 32, 32)
    (last,) = model.get_intermediate_layers(x, n=1)
    torch.testing.assert_close(last, model.forward_features(x)["x_norm_patchtokens"])
    outs = model.get_intermediate_layers(x, n=2, reshape=True, return_class_token=True)
    assert len(outs) == 2 and outs[0][0].shape == (2, 32, 4, 4) and outs[0][1].shape == (2, 32)


def test_drop_path_subset_trains_and_eval_is_deterministic():
    _, model = _tiny(drop_path=0.5)
    x = torch.randn(8, 3, 32, 32)
    model.train()
    model(x).sum().backward()
    assert model.blocks[0].attn.qkv.weight.grad is not None
    model.eval()
    torch.testing.assert_close(model(x), model(x))


def test_swiglu_backbone_runs():
    spec = get_model("webdino-300m")
    from dataclasses import replace

    small = replace(spec, width=48, depth=1, heads=3, ffn_hidden=64, patch=8, img_size=32)
    model = build_backbone(small)
    assert count_params(model) == small.backbone_params()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 48)


def _official_pos_embed(pos: torch.Tensor, h: int, w: int, offset: float) -> torch.Tensor:
    """DINOv2's formula, written out: the M x M grid resized by scale factors (g + offset) / M,
    bicubic without antialiasing, in fp32, the CLS embedding kept in front."""
    import torch.nn.functional as F

    m = int((pos.shape[1] - 1) ** 0.5)
    grid = pos[:, 1:].float().reshape(1, m, m, -1).permute(0, 3, 1, 2)
    out = F.interpolate(
        grid, scale_factor=((h + offset) / m, (w + offset) / m), mode="bicubic", antialias=False
    )
    return torch.cat([pos[:, :1], out.permute(0, 2, 3, 1).reshape(1, h * w, -1)], dim=1)


def test_pos_embed_interpolation_is_dinov2s_scale_factor_formula():
    from dataclasses import replace

    # ViT-g's geometry: patch 14, 224 px (16 x 16 grid), a 98 px local crop (7 x 7), at width 32.
    spec = replace(get_model("vit-test"), patch=14, img_size=224, depth=1)
    torch.manual_seed(0)
    model = build_backbone(spec)
    with torch.no_grad():
        model.pos_embed.normal_()  # a rough grid, so the sampling points matter
    got = model.interpolate_pos_encoding(7, 7)
    torch.testing.assert_close(got, _official_pos_embed(model.pos_embed, 7, 7, 0.1), rtol=0, atol=0)
    assert got.shape == (1, 50, 32)
    # ... which is not a plain resize to the 7 x 7 size (Hugging Face's Dinov2Model).
    import torch.nn.functional as F

    grid = model.pos_embed[:, 1:].reshape(1, 16, 16, -1).permute(0, 3, 1, 2)
    sized = F.interpolate(grid, size=(7, 7), mode="bicubic", align_corners=False)
    sized = sized.permute(0, 2, 3, 1).reshape(1, 49, -1)
    assert (got[:, 1:] - sized).abs().max() > 1e-2
    # Offset 0 selects the size= resize; a non-square grid follows the same formula per axis.
    plain = build_backbone(spec, interpolate_offset=0.0)
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(plain.interpolate_pos_encoding(7, 7)[:, 1:], sized)
    torch.testing.assert_close(
        model.interpolate_pos_encoding(7, 9), _official_pos_embed(model.pos_embed, 7, 9, 0.1)
    )
    # The tokens of a 98 px crop carry the interpolated embeddings.
    x = torch.randn(2, 3, 98, 98)
    with torch.no_grad():
        tokens = model.prepare_tokens(x)
        no_pos = torch.cat([model.cls_token.expand(2, -1, -1), model.patch_embed(x)], dim=1)
    torch.testing.assert_close(tokens - no_pos, got.expand(2, -1, -1))


def test_packed_drop_path_equals_per_crop_drop_path_with_the_same_subsets():
    """One block, training, drop-path 0.5: the packed pass adds each crop size's residuals on
    the same sample subsets (drawn per crop size, attention first) as separate passes would."""
    torch.manual_seed(0)
    model = build_backbone(get_model("vit-test"), drop_path=0.5, layerscale=0.5).train()
    blk = model.blocks[0]
    xs = [torch.randn(4, 17, 32, requires_grad=True), torch.randn(6, 5, 32, requires_grad=True)]
    torch.manual_seed(1)
    packed = blk(xs)
    torch.manual_seed(1)
    draws = [
        [torch.randperm(x.shape[0])[: max(int(x.shape[0] * 0.5), 1)] for x in xs] for _ in "af"
    ]
    ref = []
    for c, x in enumerate(xs):
        for branch, gamma, idx in (
            (lambda t: blk.attn(blk.norm1(t)), blk.ls1.gamma, draws[0][c]),
            (lambda t: blk.mlp(blk.norm2(t)), blk.ls2.gamma, draws[1][c]),
        ):
            res = torch.zeros_like(x).index_add(0, idx, branch(x[idx]) * gamma)
            x = x + res * (x.shape[0] / len(idx))
        ref.append(x)
    for a, b in zip(packed, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    loss_p = sum(o.square().sum() for o in packed)
    loss_r = sum(o.square().sum() for o in ref)
    params = [xs[0], xs[1], *blk.parameters()]
    for a, b in zip(
        torch.autograd.grad(loss_p, params), torch.autograd.grad(loss_r, params), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # Samples outside a subset pass through unchanged in both residuals.
    kept = set(draws[0][0].tolist()) | set(draws[1][0].tolist())
    for i in set(range(4)) - kept:
        torch.testing.assert_close(packed[0][i], xs[0][i])


@pytest.mark.parametrize("impl", ["sdpa", "math"])
@pytest.mark.parametrize("drop", [0.0, 0.5])
def test_picked_last_block_equals_full_pass_at_the_picked_tokens(impl, drop):
    """CLS and the picked patch tokens (values and parameter gradients) are those of the full
    packed pass, drop-path subsets included; an image with nothing picked keeps its CLS."""
    torch.manual_seed(0)
    model = build_backbone(get_model("vit-test"), layerscale=0.5, drop_path=drop).train()
    g, loc = torch.randn(4, 3, 32, 32), torch.randn(6, 3, 16, 16)
    masks = torch.rand(4, 16) < 0.3
    masks[1] = False
    masks[2, :3] = True
    results = []
    with dev.attention(impl):
        for picked in (False, True):
            torch.manual_seed(1)  # the same drop-path draws on both sides
            if picked:
                (cls_g, tok), (cls_l, none) = model.forward_picked(
                    [g, loc], [masks, None], [masks, None]
                )
                assert none.shape == (0, 32)
            else:
                full = model.forward_features_list([g, loc], [masks, None])
                cls_g, cls_l = full[0]["x_norm_clstoken"], full[1]["x_norm_clstoken"]
                tok = full[0]["x_norm_patchtokens"][masks]
            outs = [cls_g, tok, cls_l]
            loss = sum(o.sin().sum() for o in outs)
            results.append((outs, torch.autograd.grad(loss, list(model.parameters()))))
    (ref, ref_grads), (got, got_grads) = results
    assert got[1].shape == (int(masks.sum()), 32)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(got_grads, ref_grads, strict=True):  # sums over fewer rows: reassociation
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
