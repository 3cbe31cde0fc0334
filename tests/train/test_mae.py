"""MAE: masks independent of the split, patch order, the exported encoder evaluates like
DINOv2's, and the plan's FLOPs per image (MAE and CLIP) against torch.utils.flop_counter."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from webssl_cli import device as dev
from webssl_cli.specs import compute
from webssl_cli.specs.methods import clip_text_tower
from webssl_cli.specs.presets import preset_settings
from webssl_cli.specs.registry import ModelSpec, get_model
from webssl_cli.specs.train import TrainConfig
from webssl_cli.train.batches import Batch
from webssl_cli.train.objective import RunContext
from webssl_cli.train.objectives.mae import MAE, random_masks
from webssl_cli.train.objectives.mae_model import patchify
from webssl_cli.train.vit import Block, build_backbone

CPU = torch.device("cpu")


def _cfg(**kw) -> TrainConfig:
    return TrainConfig.model_validate(preset_settings("test", "mae") | kw)


def test_masks_are_a_function_of_the_image_place_not_the_split():
    full = random_masks(7, 3, 16, np.arange(16), 36, 9)
    for rows in (np.arange(8), np.arange(8, 16), np.arange(4, 8)):
        part = random_masks(7, 3, 16, rows, 36, 9)
        for a, b in zip(part, full, strict=True):
            assert np.array_equal(a, b[rows])
    keep, restore, mask = full
    assert (mask.sum(1) == 27).all()  # every image keeps the same number of patches
    for k, m in zip(keep, mask, strict=True):  # the kept ids are exactly the unmasked patches
        assert set(k.tolist()) == set(np.flatnonzero(m == 0).tolist())
    assert not np.array_equal(random_masks(7, 4, 16, np.arange(16), 36, 9)[0], keep)


def test_patchify_order_matches_the_encoder_tokens():
    x = torch.randn(2, 3, 16, 24)
    p = patchify(x, 8)
    assert p.shape == (2, 6, 192)
    # token 4 is row 1, column 1 of the 2 x 3 grid; values ordered (row, column, channel)
    assert torch.equal(p[1, 4], x[1, :, 8:16, 8:16].permute(1, 2, 0).reshape(-1))


def test_micro_batches_give_the_same_step():
    spec, cfg = get_model("vit-test"), _cfg()
    u8 = torch.randint(0, 256, (1, 8, 32, 32, 3), dtype=torch.uint8)
    batch = Batch(u8, torch.zeros(0, 8, 16, 16, 3, dtype=torch.uint8), {})
    grads, losses = [], []
    for micro, accum in ((8, 1), (4, 2)):
        obj = MAE(spec, cfg, RunContext(CPU, None, 0, 10, micro=micro, accum=accum))
        inputs = obj.step_inputs(batch, 5)
        total = 0.0
        for micro_in in inputs:
            loss, _ = obj.loss(micro_in, 5)
            (loss / len(inputs)).backward()
            total += float(loss.detach()) / len(inputs)
        losses.append(total)
        grads.append(torch.cat([p.grad.flatten() for p in obj.model.parameters() if p.grad is not None]))  # fmt: skip
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-7)


def test_export_is_an_encoder_the_evaluations_load(tmp_path):
    from webssl_cli.eval.encoders.own import load_own
    from webssl_cli.train.metrics import write_backbone

    spec = get_model("vit-test")
    obj = MAE(spec, _cfg(), RunContext(CPU, None, 0, 10, micro=4))
    state = obj.export_backbone()
    assert set(state) == set(build_backbone(spec).state_dict())
    write_backbone(tmp_path / "teacher_backbone.pt", spec, state)
    enc = load_own(tmp_path / "teacher_backbone.pt")
    x = torch.randn(2, 3, 32, 32)
    want = obj.model.backbone.eval()(x)
    cls, patches = enc(x)
    assert patches.shape == (2, 16, 32) and torch.allclose(cls, want, atol=1e-6)


def _count(fn) -> float:
    with dev.attention("math"), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_mae_step_flops_match_plan():
    # A real MAE step (encoder on the visible quarter, decoder on all tokens, loss, backward)
    # on a small SwiGLU ViT with patch 14 at 56 px (16 patches, 4 visible).
    spec = replace(
        get_model("webdino-300m"), width=96, depth=2, heads=2, ffn_hidden=256, img_size=56
    )
    cfg = _cfg(crops={"global_size": 56}, mae={"decoder_width": 64, "decoder_layers": 2, "decoder_heads": 2})  # fmt: skip
    B = 4
    obj = MAE(spec, cfg, RunContext(CPU, None, 0, 10, micro=B))
    u8 = torch.randint(0, 256, (1, B, 56, 56, 3), dtype=torch.uint8)
    inputs = obj.step_inputs(Batch(u8, torch.zeros(0, B, 8, 8, 3, dtype=torch.uint8), {}), 0)

    def step() -> None:
        loss, _ = obj.loss(inputs[0], 0)
        loss.backward()

    measured = _count(step) / B
    planned = compute.flops_per_sample(spec, cfg, "mae")
    print(
        f"\nmae flops: measured {measured:.4e} planned {planned:.4e} ratio {measured / planned:.4f}"
    )
    assert abs(measured / planned - 1) < 0.02, (measured, planned)
    dinov2 = compute.flops_per_sample(spec, cfg)
    assert planned < dinov2 / 4  # a quarter of the patches, one view, no teacher


@pytest.mark.parametrize("vision", ["vit-base", "webdino-1b"])
def test_clip_step_flops_match_plan_for_the_paired_text_tower(vision):
    # The towers CLIP trains, counted on the meta device: the vision backbone (fwd+bwd on one
    # view) and a pre-norm text transformer of the paired sizes on context_length tokens, the
    # two projections and the batch's logits, vs the plan (within 2%).
    spec = get_model(vision)
    cfg = TrainConfig.model_validate(preset_settings("webdino", "clip"))
    width, layers, heads, embed = clip_text_tower(spec.width)
    ctx, b = cfg.clip.context_length, 64
    text = ModelSpec("text", width, layers, heads, "mlp", 4 * width)
    backbone = build_backbone(spec, device="meta")
    with torch.device("meta"):
        blocks = torch.nn.Sequential(*[Block(text, 0.0, None) for _ in range(layers)])
        img_proj, txt_proj = torch.nn.Linear(spec.width, embed), torch.nn.Linear(width, embed)

    def step() -> None:
        x = torch.empty(b, 3, cfg.crops.global_size, cfg.crops.global_size, device="meta")
        t = torch.empty(b, ctx, width, device="meta", requires_grad=True)
        img = img_proj(backbone(x))
        txt = txt_proj(blocks(t)[:, -1])
        (img @ txt.T).sum().backward()

    measured = _count(step) / b
    # the plan prices the global batch's logits; here the batch is b
    planned = compute.clip_flops_per_sample(spec, cfg.model_copy(update={"batch_size": b}))
    # the text input here is a leaf tensor: its first layer's input gradient is counted, as
    # the token embedding's (a lookup) is not a matmul: both sides count the same.
    print(
        f"\nclip flops {vision}: measured {measured:.4e} planned {planned:.4e} ratio {measured / planned:.4f}"
    )
    assert abs(measured / planned - 1) < 0.02, (measured, planned)


def test_text_tower_pairs():
    assert clip_text_tower(768) == (512, 12, 8, 512)  # ViT-B/16
    assert clip_text_tower(1024) == (768, 12, 12, 768)  # ViT-L/14
    assert clip_text_tower(1280) == (1024, 24, 16, 1024)  # ViT-H/14
    assert clip_text_tower(1664) == (1280, 32, 20, 1280)  # ViT-bigG/14
    assert clip_text_tower(4096) == (1280, 32, 20, 1280)  # Web-DINO 7B keeps bigG's
    assert clip_text_tower(192) == (192, 12, 3, 192)  # CPU sizes: the vision width


def test_memory_estimate_of_mae_states_matches_a_step():
    # Parameters, gradients and AdamW moments of the encoder and decoder after one step, as
    # the plan's memory estimate counts them (no teacher for MAE), within 5%.
    from webssl_cli.study.memory import estimate_memory
    from webssl_cli.train.distributed import state_bytes
    from webssl_cli.train.optim import build_optimizer

    spec, cfg = get_model("vit-pico"), _cfg(crops={"global_size": 32})
    obj = MAE(spec, cfg, RunContext(CPU, None, 0, 10, micro=8))
    opt = build_optimizer(obj.param_groups(), CPU, cfg.adam_betas, cfg.adam_eps)
    assert opt.defaults["betas"] == (0.9, 0.95)
    u8 = torch.randint(0, 256, (1, 8, 32, 32, 3), dtype=torch.uint8)
    loss, _ = obj.loss(obj.step_inputs(Batch(u8, torch.zeros(0, 8, 8, 8, 3, dtype=torch.uint8), {}), 0)[0], 0)  # fmt: skip
    loss.backward()
    opt.step()
    est = estimate_memory(spec, cfg, 1, act_bytes=4, reserve=False, method="mae")
    measured = state_bytes(obj.model, opt)
    print(f"\nMAE states: measured {measured:,} B, estimated {est.states_bytes:,} B")
    assert est.teacher_bytes == 0 and abs(measured / est.states_bytes - 1) < 0.05
