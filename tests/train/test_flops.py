"""FLOPs measured by torch.utils.flop_counter vs the study layer's plan estimate (within 2%)."""

from dataclasses import replace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from webssl_cli import device as dev
from webssl_cli.specs.registry import get_model
from webssl_cli.specs.train import TrainConfig
from webssl_cli.train.heads import DINOHead
from webssl_cli.train.objective import RunContext
from webssl_cli.train.objectives.dinov2 import DINOv2
from webssl_cli.train.vit import Block, build_backbone

compute = pytest.importorskip("webssl_cli.specs.compute")


def _expected_masks(n_images: int, n_patches: int, per_image: float) -> torch.Tensor:
    """Masks whose total equals the plan's expectation (mask_prob x mean ratio x patches)."""
    total = round(per_image * n_images)
    assert abs(total - per_image * n_images) < 1e-6, "pick a batch that makes the expectation whole"
    masks = torch.zeros(n_images, n_patches, dtype=torch.bool)
    for i in range(total):  # spread over half the images, as mask_prob 0.5 does
        masks[(i % (n_images // 2)) * 2, i // (n_images // 2)] = True
    return masks


def _full_last_block(self, xs, picked):
    """The last block on every token, then its picked rows: the step as DINOv2 runs it."""
    outs = self.forward_packed(xs)
    return [o.reshape(-1, o.shape[-1])[p.take] for o, p in zip(outs, picked, strict=True)]


def test_full_training_step_flops_match_plan(monkeypatch):
    # A real step (student fwd+bwd on 2 global + 4 local crops, teacher, both heads, losses)
    # on a small SwiGLU ViT with patch 14. The plan prices DINOv2's step, whose last block runs
    # on every token: with that last block, the formula must agree within 2%; the trainer's
    # last block (read tokens only) must then execute fewer FLOPs.
    spec = replace(
        get_model("webdino-300m"), width=96, depth=2, heads=2, ffn_hidden=256, img_size=56
    )
    cfg = TrainConfig(
        batch_size=5,
        drop_path=0.0,
        crops={"global_size": 56, "local_size": 28, "n_local": 4},
        dino_head={"n_prototypes": 512, "bottleneck": 32, "hidden": 128},
        ibot_head={"n_prototypes": 512, "bottleneck": 32, "hidden": 128},
    )
    B = cfg.batch_size
    objective = DINOv2(spec, cfg, RunContext(torch.device("cpu"), None, 0, 100, micro=B))
    g, loc = torch.randn(2 * B, 3, 56, 56), torch.randn(4 * B, 3, 28, 28)
    per_image = compute.expected_masked_tokens(spec, cfg)  # 0.5 * 0.3 * 16 = 2.4
    masks = _expected_masks(2 * B, spec.n_patches(56), per_image)

    def step_flops() -> float:
        with dev.attention("math"), FlopCounterMode(display=False) as counter:
            inputs = objective.prepare([(g, loc, masks)], 50)
            loss, _ = objective.loss(inputs[0], 50)
            loss.backward()
        return counter.get_total_flops() / B

    executed = step_flops()
    monkeypatch.setattr(Block, "forward_picked", _full_last_block)
    measured = step_flops()
    planned = compute.flops_per_sample(spec, cfg)
    print(
        f"\nflops small step: measured {measured:.4e} planned {planned:.4e} ratio {measured / planned:.4f}"
        f" executed {executed:.4e}"
    )
    assert abs(measured / planned - 1) < 0.02, (measured, planned)
    assert executed < 0.8 * measured  # depth 2: the last block is half the backbone


@pytest.mark.parametrize("name", ["webdino-300m", "webdino-1b"])
def test_paper_sizes_backbone_and_heads_flops_on_meta(name):
    # Full-size models on the meta device: backbone fwd+bwd per crop size and both heads,
    # counted by flop_counter, summed like a step, vs the plan (within 2%).
    spec, cfg = get_model(name), TrainConfig()
    c = cfg.crops
    model = build_backbone(spec, device="meta")
    dino, ibot = (
        DINOHead(spec.width, cfg.dino_head).to("meta"),
        DINOHead(spec.width, cfg.ibot_head).to("meta"),
    )
    per_image_masked = compute.expected_masked_tokens(spec, cfg)

    def count(fn) -> float:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops()

    def student(size):
        x = torch.empty(1, 3, size, size, device="meta")
        return lambda: model.forward_features(x)["x_prenorm"].sum().backward()

    def teacher(size):
        x = torch.empty(1, 3, size, size, device="meta")
        return lambda: torch.no_grad()(model.forward_features)(x)

    def head(h, n_tokens, backward):
        x = torch.empty(n_tokens, spec.width, device="meta")
        return lambda: h(x).sum().backward() if backward else torch.no_grad()(h)(x)

    n = 100  # tokens for the iBOT head: per_image_masked x 2 crops x 100 images is whole
    measured = (
        2 * count(student(c.global_size))
        + c.n_local * count(student(c.local_size))
        + 2 * count(teacher(c.global_size))
        + count(head(dino, 2 + c.n_local, True))
        + count(head(dino, 2, False))
        + (
            count(head(ibot, int(per_image_masked * 2 * n), True))
            + count(head(ibot, int(per_image_masked * 2 * n), False))
        )
        / n
    )
    planned = compute.flops_per_sample(spec, cfg)
    print(
        f"\nflops {name}: measured {measured / 1e12:.3f} TFLOP planned {planned / 1e12:.3f} ratio {measured / planned:.4f}"
    )
    assert abs(measured / planned - 1) < 0.02, (measured / 1e12, planned / 1e12)
