import numpy as np
import pytest

from webssl_cli.specs.presets import PRESETS
from webssl_cli.specs.train import TrainConfig
from webssl_cli.train.masking import block_mask, crop_masks
from webssl_cli.train.schedules import Schedules


def test_block_mask_covers_about_the_target():
    rng = np.random.default_rng(0)
    for target in (10, 40, 80):
        m = block_mask(rng, (16, 16), target)
        assert 0 < m.sum() <= target + 0  # never more than asked
        assert m.sum() >= 0.5 * target


def test_crop_masks_probability_and_ratios():
    masks = crop_masks(0, 7, 64, np.arange(64), (16, 16), 0.5, (0.1, 0.5))
    assert masks.shape == (64, 256)
    counts = masks.sum(1)
    assert (counts > 0).sum() == 32  # mask_prob 0.5
    assert counts.max() <= 0.5 * 256
    assert abs(counts[counts > 0].mean() / 256 - 0.3) < 0.08  # ratios spread over 0.1-0.5
    again = crop_masks(0, 7, 64, np.arange(64), (16, 16), 0.5, (0.1, 0.5))
    assert np.array_equal(masks, again)
    some = crop_masks(0, 7, 64, np.array([5, 40]), (16, 16), 0.5, (0.1, 0.5))
    assert np.array_equal(some, masks[[5, 40]])  # a crop's mask does not depend on who draws it


def test_schedules_recipe_endpoints():
    cfg = TrainConfig(batch_size=3072)
    assert cfg.peak_lr() == pytest.approx(3.5e-4, rel=0.02)  # 2e-4 * sqrt(3)
    s = Schedules(cfg, iterations=200_000)
    h0, hw, hend = s.at(0), s.at(100_000), s.at(200_000)
    assert h0.lr == 0 and hw.lr == pytest.approx(cfg.peak_lr()) and hend.lr == pytest.approx(1e-6)
    assert h0.weight_decay == pytest.approx(0.04) and hend.weight_decay == pytest.approx(0.2)
    assert h0.momentum == pytest.approx(0.994) and hend.momentum == pytest.approx(1.0)
    assert h0.teacher_temp == pytest.approx(0.04) and s.at(37_500).teacher_temp == pytest.approx(
        0.07
    )
    assert s.at(1249).last_layer_lr == 0.0 and s.at(1250).last_layer_lr == s.at(1250).lr > 0


def test_warmup_capped_at_run_length():
    cfg = TrainConfig.model_validate(PRESETS["test"] | {"warmup_iters": 100})
    s = Schedules(cfg, iterations=10)
    assert s.at(10).lr == pytest.approx(cfg.min_lr)
    assert all(s.at(i).lr <= cfg.peak_lr() for i in range(11))


def test_lr_width_rule_scales_the_peak_by_reference_over_width():
    cfg = TrainConfig.model_validate(PRESETS["smoke"])
    assert cfg.lr_width_ref == 64 and cfg.base_lr == pytest.approx(4e-3)
    for width, peak in ((64, 4e-3), (128, 2e-3), (192, 4e-3 / 3)):
        s = Schedules(cfg, iterations=100, width=width)
        assert s.at(cfg.warmup_iters).lr == pytest.approx(peak)  # the peak, after warmup
    assert TrainConfig().peak_lr(width=4096) == TrainConfig().peak_lr()  # the paper: no rule


def test_trainer_uses_the_width_rule(tmp_path):
    """The lr the trainer logs at the end of warmup is the width-scaled peak."""
    import json

    from webssl_cli.data.stream import expand_urls
    from webssl_cli.data.synth import shard_pattern, synthesize
    from webssl_cli.rundir import CellDir
    from webssl_cli.specs.registry import get_model
    from webssl_cli.train.loop import train

    shards = shard_pattern(synthesize(tmp_path / "d", n=32, seed=0, shard_size=32, image_size=32))
    cfg = TrainConfig.model_validate(
        PRESETS["test"] | {"lr_width_ref": 16, "base_lr": 1e-3, "warmup_iters": 2, "min_lr": 5e-4}
    )
    run = CellDir(tmp_path / "run")
    assert train(run, get_model("vit-test"), cfg, expand_urls(shards), 8 * 4, seed=0) == "done"
    lrs = [json.loads(x)["lr"] for x in run.metrics_jsonl.read_text().splitlines()]
    assert max(lrs) == pytest.approx(1e-3 * 16 / 32)  # vit-test is 32 wide
