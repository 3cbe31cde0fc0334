"""MAE learns on the CPU in a few minutes: on held-out synthetic images, the trained model's
masked reconstruction loss is below that of the same network at its initial weights (the
random-init baseline), measured on the same images and masks with a paired bootstrap, and below
the loss of predicting every removed patch as its own mean colour (normalised target 0: a loss
of (P - 1) / P with the unbiased variance), an oracle that reads the answer's statistics."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from webssl_cli.data.multicrop import SingleView
from webssl_cli.data.stream import ShardStream, expand_urls, image_bytes
from webssl_cli.data.synth import shard_pattern, synthesize
from webssl_cli.rundir import CellDir
from webssl_cli.specs.cell import CellData, CellSpec
from webssl_cli.specs.presets import preset_settings
from webssl_cli.specs.registry import get_model
from webssl_cli.specs.train import TrainConfig
from webssl_cli.train import losses as L
from webssl_cli.train.batches import to_model_input
from webssl_cli.train.cell import load_cell
from webssl_cli.train.checkpoint import Checkpointer
from webssl_cli.train.distributed import DistEnv, init_process_group
from webssl_cli.train.loop import train
from webssl_cli.train.objective import RunContext
from webssl_cli.train.objectives.mae import MAE, random_masks
from webssl_cli.train.objectives.mae_model import patchify
from webssl_cli.train.optim import build_optimizer

CPU = torch.device("cpu")


def _held_out_losses(obj: MAE, images: list[np.ndarray], size: int) -> np.ndarray:
    """Per image: the normalised-pixel loss over its removed patches (fixed masks)."""
    u8 = torch.from_numpy(np.stack(images))[None]
    x = to_model_input(u8, CPU)
    keep, restore, mask = random_masks(12345, 0, len(images), np.arange(len(images)), obj.n_patches, obj.keep)  # fmt: skip
    with torch.no_grad():
        pred = obj.model.decode(obj.model.encode(x, torch.from_numpy(keep)), torch.from_numpy(restore))  # fmt: skip
    target = patchify(x, obj.spec.patch)
    m = torch.from_numpy(mask)
    return np.array([float(L.mae_loss(pred[i : i + 1], target[i : i + 1], m[i : i + 1])) for i in range(len(images))])  # fmt: skip


def test_mae_reconstruction_beats_its_initial_weights_on_held_out_images(tmp_path):
    web = shard_pattern(synthesize(tmp_path / "web", n=500, seed=0, shard_size=125, image_size=96))
    held = shard_pattern(
        synthesize(tmp_path / "held", n=200, seed=7, shard_size=200, image_size=96)
    )
    cfg = TrainConfig.model_validate(preset_settings("smoke", "mae") | {"checkpoint_every": 1000})
    spec = CellSpec.build(uid="mae", model="vit-pico", samples_seen=3200, train=cfg, method="mae",
                          data=CellData(source="web", shards=web), seed=0)  # fmt: skip
    run = CellDir(tmp_path / "cell")
    run.write_cell(spec)
    assert train(run, *load_cell(run), env=DistEnv()) == "done"

    view = SingleView(cfg.crops.global_size, (1.0, 1.0))
    stream = ShardStream(expand_urls(held), seed=0, rank=0)
    images = []
    for i, s in enumerate(stream):
        images.append(view(image_bytes(s.members), np.random.default_rng(i))[0][0])
        if len(images) == 200:
            break
    model = get_model("vit-pico")
    ctx = RunContext(CPU, None, 0, 100, micro=cfg.batch_size, method="mae")
    init_process_group(DistEnv(), CPU)
    try:
        initial = MAE(model, cfg, ctx)  # the trainer's weights at step 0 (same seed)
        trained = MAE(model, cfg, ctx)
        opt = build_optimizer(trained.param_groups(), CPU, cfg.adam_betas, cfg.adam_eps)
        assert Checkpointer(run.checkpoints_dir, 2).load_latest(trained, opt, False) is not None
    finally:
        dist.destroy_process_group()
    a = _held_out_losses(initial, images, cfg.crops.global_size)
    b = _held_out_losses(trained, images, cfg.crops.global_size)
    rng = np.random.default_rng(0)
    reps = np.array([(b[i] - a[i]).mean() for i in rng.integers(0, len(a), (1000, len(a)))])
    lo, hi = np.percentile(reps, [2.5, 97.5])
    print(f"\nheld-out MAE loss: initial {a.mean():.4f}, trained {b.mean():.4f}, "
          f"difference {b.mean() - a.mean():+.4f} [{lo:+.4f}, {hi:+.4f}] (95% paired bootstrap, 200 images)")  # fmt: skip
    assert hi < 0  # trained below its initial weights, the interval excluding zero
    p = trained.spec.patch**2 * 3
    flat = (p - 1) / p
    reps_flat = np.array([b[i].mean() for i in rng.integers(0, len(b), (1000, len(b)))]) - flat
    lo_f, hi_f = np.percentile(reps_flat, [2.5, 97.5])
    print(
        f"trained - patch-mean oracle ({flat:.4f}): {b.mean() - flat:+.4f} [{lo_f:+.4f}, {hi_f:+.4f}]"
    )
    assert hi_f < 0
