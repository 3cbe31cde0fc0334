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
