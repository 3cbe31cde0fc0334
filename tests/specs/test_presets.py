"""The presets: the paper's recipe untouched, the CPU presets valid and what they say they are."""

from __future__ import annotations

from webssl_cli.specs.presets import PRESETS
from webssl_cli.specs.train import CropConfig, TrainConfig


def test_webdino_is_the_recipe_and_crop_defaults_are_dinov2s() -> None:
    assert PRESETS["webdino"] == {}
    crops = CropConfig()
    assert (crops.global_size, crops.local_size, crops.hue, crops.blur_scale) == (224, 98, 0.1, 1.0)


def test_cpu_dino_is_smoke_with_dino_loss_only_and_colour_free_object_keeping_crops() -> None:
    smoke = TrainConfig.model_validate(PRESETS["smoke"])
    dino = TrainConfig.model_validate(PRESETS["cpu-dino"])
    assert (dino.ibot_weight, dino.koleo_weight, dino.dino_weight) == (0.0, 0.0, 1.0)
    assert dino.crops.hue == 0.5 and abs(dino.crops.blur_scale - 48 / 224) < 1e-9
    assert dino.crops.global_scale == (0.6, 1.0) and dino.crops.local_scale == (0.15, 0.5)
    # everything else is the smoke preset's, at the lr and teacher momentum it had when
    # docs/smoke/learning.md measured cpu-dino
    assert (dino.base_lr, dino.momentum_teacher) == (2e-3, 0.98)
    warmups = {"warmup_iters", "teacher_temp_warmup_iters", "freeze_last_layer_iters"}
    assert (dino.warmup_iters, dino.teacher_temp_warmup_iters, dino.freeze_last_layer_iters) == (
        15,
        30,
        30,
    )
    same = {"ibot_weight", "koleo_weight", "crops", "base_lr", "momentum_teacher", "lr_width_ref"}
    same |= warmups
    a, b = smoke.model_dump(), dino.model_dump()
    assert {k for k in a if a[k] != b[k]} == same
    assert PRESETS["smoke"]["crops"] == {"global_size": 48, "local_size": 24, "n_local": 4}
