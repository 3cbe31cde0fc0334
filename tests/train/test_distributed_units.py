"""Pieces of the distributed trainer that need no second process: environment detection, the
lane-sliced data order, the packed multi-crop pass, grouped KoLeo, memory against measurement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from webssl_cli import device as dev
from webssl_cli.data.stream import expand_urls
from webssl_cli.errors import UserError
from webssl_cli.specs.presets import PRESETS
from webssl_cli.specs.registry import get_model
from webssl_cli.specs.train import TrainConfig, resolve_strategy
from webssl_cli.study.memory import estimate_memory
from webssl_cli.train import losses as L
from webssl_cli.train.batches import LaneLoader, lanes_for, micro_batches_for
from webssl_cli.train.distributed import clip_grad_norm, detect_env, first_host, state_bytes
from webssl_cli.train.objective import RunContext
from webssl_cli.train.objectives.dinov2 import DINOv2, koleo_grouped
from webssl_cli.train.objectives.dinov2_model import build_models
from webssl_cli.train.optim import param_groups
from webssl_cli.train.vit import build_backbone


def _cfg(**kw) -> TrainConfig:
    return TrainConfig.model_validate(PRESETS["test"] | kw)


# ---- environment ------------------------------------------------------------------------------


def test_torchrun_variables_win():
    env = detect_env({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h",
                      "MASTER_PORT": "1234", "SLURM_PROCID": "7", "SLURM_NTASKS": "8"})  # fmt: skip
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port) == (
        1,
        4,
        1,
        "h",
        1234,
    )
    assert env.source == "torchrun"


def test_slurm_tasks_match_submitit_torch_environment(monkeypatch):
    slurm = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "12345", "SLURM_PROCID": "3",
             "SLURM_NTASKS": "8", "SLURM_LOCALID": "3", "SLURM_JOB_NODELIST": "gpu[003-004]",
             "SLURM_NNODES": "2", "SLURM_JOB_NUM_NODES": "2", "SLURM_NODEID": "0"}  # fmt: skip
    env = detect_env(slurm)
    assert (env.rank, env.world_size, env.local_rank, env.master_addr) == (3, 8, 3, "gpu003")
    for k, v in slurm.items():
        monkeypatch.setenv(k, v)
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    from submitit.helpers import TorchDistributedEnvironment

    sub = TorchDistributedEnvironment()
    assert (sub.master_addr, sub.master_port, sub.rank, sub.world_size) == (
        env.master_addr, env.master_port, env.rank, env.world_size,
    )  # fmt: skip


def test_submitit_local_executor_tasks():
    env = detect_env({"SUBMITIT_LOCAL_GLOBALID": "1", "SUBMITIT_LOCAL_LOCALID": "1",
                      "SUBMITIT_LOCAL_NTASKS": "2", "SUBMITIT_LOCAL_JOB_ID": "777"})  # fmt: skip
    assert (env.rank, env.world_size, env.local_rank, env.master_addr) == (1, 2, 1, "127.0.0.1")
    assert (
        detect_env({"SUBMITIT_LOCAL_GLOBALID": "0", "SUBMITIT_LOCAL_NTASKS": "1"}).world_size == 1
    )


def test_single_process_and_node_lists():
    assert detect_env({}).world_size == 1
    assert detect_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}).source == "single"
    assert first_host("gpu[003-005,9],cpu1") == "gpu003"
    assert first_host("node7") == "node7"
    assert first_host("a[12,3]") == "a12"


def test_auto_strategy_switches_to_fsdp_at_1b():
    assert resolve_strategy("auto", get_model("webdino-300m").backbone_params()) == "ddp"
    assert resolve_strategy("auto", get_model("webdino-1b").backbone_params()) == "fsdp"
    assert resolve_strategy("ddp", 7_000_000_000) == "ddp"


# ---- data order -------------------------------------------------------------------------------


def _steps(loader, n):
    it = iter(loader)
    out = [next(it) for _ in range(n)]
    loader.close()
    return out


def test_global_batch_is_the_same_images_at_any_world_size(shards):
    urls, crops = expand_urls(shards), _cfg().crops
    one = _steps(LaneLoader(urls, 0, crops, 8, 4, 0, 1), 3)
    ranks = [_steps(LaneLoader(urls, 0, crops, 8, 4, r, 2), 3) for r in range(2)]
    for step in range(3):
        joined = torch.cat([ranks[0][step].globals_u8, ranks[1][step].globals_u8], dim=1)
        assert torch.equal(one[step].globals_u8, joined)  # rank r holds a slice of the batch
        assert torch.equal(
            one[step].locals_u8, torch.cat([r[step].locals_u8 for r in ranks], dim=1)
        )
        # ... and the two slices are distinct images
        assert not torch.equal(ranks[0][step].globals_u8, ranks[1][step].globals_u8)
    # resume: every lane's saved position continues the sequence, at another world size
    positions = {**ranks[0][0].positions, **ranks[1][0].positions}
    resumed = _steps(LaneLoader(urls, 0, crops, 8, 4, 0, 1, positions), 2)
    assert torch.equal(resumed[0].globals_u8, one[1].globals_u8)
    assert torch.equal(resumed[1].globals_u8, one[2].globals_u8)


def test_lane_loader_with_workers_gives_the_same_batches(shards):
    urls, crops = expand_urls(shards), _cfg().crops
    a = _steps(LaneLoader(urls, 0, crops, 8, 2, 0, 1, num_workers=0), 2)
    b = _steps(LaneLoader(urls, 0, crops, 8, 2, 0, 1, num_workers=1), 2)
    assert all(torch.equal(x.globals_u8, y.globals_u8) for x, y in zip(a, b, strict=True))


def test_lanes_and_micro_batches_are_checked():
    assert lanes_for(_cfg(), 1) == 8  # gcd(8, 64)
    assert lanes_for(_cfg(batch_size=3072), 64) == 64
    with pytest.raises(UserError, match="data_lanes: 2 lanes cannot be split over 4 ranks"):
        lanes_for(_cfg(dist={"data_lanes": 2}), 4)
    with pytest.raises(UserError, match="does not divide train.batch_size"):
        lanes_for(_cfg(dist={"data_lanes": 3}), 1)
    assert micro_batches_for(_cfg(micro_batch=2), 2) == (2, 2)
    with pytest.raises(UserError, match="train.micro_batch: 3 does not divide"):
        micro_batches_for(_cfg(micro_batch=3), 2)


def test_ibot_masks_are_per_global_crop_at_any_world_size():
    from types import SimpleNamespace

    cfg, spec = _cfg(batch_size=16), get_model("vit-test")

    def masks(rank, world, micro, it=5):
        ctx = RunContext(torch.device("cpu"), None, 3, 10, rank, world, micro, 16 // world // micro)
        return DINOv2.masks(SimpleNamespace(cfg=cfg, spec=spec, ctx=ctx), it)  # type: ignore[arg-type]

    one = masks(0, 1, 16)
    two = np.concatenate([masks(0, 2, 4), masks(1, 2, 8)], axis=1)
    assert one.shape == (2, 16, 16) and np.array_equal(one, two)
    masked = one.reshape(32, 16).any(axis=1)
    assert masked.sum() == int(32 * cfg.mask_prob)  # a mask_prob fraction of the global crops
    ratios = one.reshape(32, 16)[masked].mean(axis=1)
    assert ratios.min() >= 0.05 and ratios.max() <= 0.55
    assert not np.array_equal(one, masks(0, 1, 16, it=6))


# ---- one packed student pass ----------------------------------------------------------------


@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_packed_multicrop_pass_equals_separate_passes(impl):
    torch.manual_seed(0)
    spec = get_model("vit-test")
    m = build_backbone(spec, layerscale=0.5)
    g, loc = torch.randn(4, 3, 32, 32), torch.randn(6, 3, 16, 16)
    masks = torch.rand(4, 16) < 0.3
    with dev.attention(impl):
        packed = m.forward_features_list([g, loc], [masks, None])
        loss_p = sum(
            o["x_norm_clstoken"].square().sum() + o["x_norm_patchtokens"].sum() for o in packed
        )
        grads_p = torch.autograd.grad(loss_p, list(m.parameters()))
        sep = [m.forward_features(g, masks=masks), m.forward_features(loc)]
        loss_s = sum(
            o["x_norm_clstoken"].square().sum() + o["x_norm_patchtokens"].sum() for o in sep
        )
        grads_s = torch.autograd.grad(loss_s, list(m.parameters()))
    for a, b in zip(packed, sep, strict=True):
        torch.testing.assert_close(
            a["x_norm_patchtokens"], b["x_norm_patchtokens"], rtol=1e-5, atol=1e-6
        )
        torch.testing.assert_close(a["x_norm_clstoken"], b["x_norm_clstoken"], rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_p, grads_s, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_packed_pass_with_drop_path_runs_per_crop_size():
    torch.manual_seed(0)
    m = build_backbone(get_model("vit-test"), drop_path=0.5).train()
    outs = m.forward_features_list(
        [torch.randn(4, 3, 32, 32), torch.randn(6, 3, 16, 16)], [None, None]
    )
    assert [o["x_norm_clstoken"].shape[0] for o in outs] == [4, 6]


# ---- losses over groups -----------------------------------------------------------------------


def test_grouped_koleo_is_the_mean_over_groups():
    x = torch.randn(16, 8)  # 2 views x 8 images
    whole = L.koleo_loss(x[:8]) + L.koleo_loss(x[8:])
    torch.testing.assert_close(koleo_grouped(x, 8), whole)
    halves = (L.koleo_loss(x[:4]) + L.koleo_loss(x[4:8])) / 2 + (
        L.koleo_loss(x[8:12]) + L.koleo_loss(x[12:])
    ) / 2
    torch.testing.assert_close(koleo_grouped(x, 4), halves)


# ---- memory: estimate vs what a CPU run allocates ---------------------------------------------


@pytest.mark.parametrize(
    ("model", "preset"), [("vit-test", "test"), ("vit-pico", "smoke"), ("vit-nano", "smoke")]
)
def test_state_memory_estimate_within_10_percent(model, preset):
    cfg = TrainConfig.model_validate(PRESETS[preset])
    spec = get_model(model)
    student, _ = build_models(spec, cfg, torch.device("cpu"))
    opt = torch.optim.AdamW(param_groups(student, cfg, spec.depth), lr=1e-3)
    for p in student.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # allocates AdamW's moments
    measured = state_bytes(student, opt)
    est = estimate_memory(spec, cfg, 1, act_bytes=4, reserve=False).states_bytes
    print(f"{model}: measured {measured:,} B, estimated {est:,} B ({est / measured - 1:+.4%})")
    assert abs(est / measured - 1) < 0.10


def test_clip_scales_to_the_max_norm_and_leaves_small_gradients_as_they_are():
    ps = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))]
    ps[0].grad, ps[1].grad = torch.tensor([3.0, 0.0, 0.0]), torch.full((2, 2), 2.0)  # norm 5
    norm = clip_grad_norm(ps, 1.0, sharded=False)
    assert float(norm) == pytest.approx(5.0)
    total = torch.cat([p.grad.flatten() for p in ps]).norm()
    assert float(total) == pytest.approx(1.0, rel=1e-5)
    before = [p.grad.clone() for p in ps]
    assert float(clip_grad_norm(ps, 2.0, sharded=False)) == pytest.approx(1.0, rel=1e-5)
    assert all(torch.equal(p.grad, b) for p, b in zip(ps, before, strict=True))
