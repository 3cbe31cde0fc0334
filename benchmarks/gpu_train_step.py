"""Training-step throughput on one GPU: images/s and model FLOPs utilisation (MFU).

For the Web-DINO 300M and 1B models at 224 px with 2 global + 8 local (98 px) crops, the full
recipe step (bf16 autocast, drop-path 0.4, 131072-prototype DINO and iBOT heads, Sinkhorn,
KoLeo, clip, AdamW, EMA) runs on synthetic uint8 batches (data loading excluded). MFU counts
the plan's nominal FLOPs per image (``study.compute.flops_per_sample``, no drop-path saving),
as DINOv2's reported utilisation does, against a dense bf16 peak of 989 TFLOP/s (H100/H200).
Targets: 300M >= 200 images/s, 1B >= 60 images/s per GPU.

    python benchmarks/gpu_train_step.py                   # on a GPU machine
    python benchmarks/gpu_train_step.py --dry-run         # CPU self-check: tiny model, 2 steps
    python benchmarks/gpu_train_step.py --models webdino-300m --batch 128 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace

import numpy as np
import torch

from webssl_cli.study.compute import flops_per_sample
from webssl_cli.study.registry import get_model
from webssl_cli.train import device as dev
from webssl_cli.train.batches import Batch
from webssl_cli.train.config import TrainConfig
from webssl_cli.train.loop import State, train_step
from webssl_cli.train.schedules import Schedules
from webssl_cli.train.ssl_model import Centers, build_models, param_groups

PEAK = 989e12
TARGETS = {"webdino-300m": 200.0, "webdino-1b": 60.0}
DEFAULT_BATCH = {"webdino-300m": 96, "webdino-1b": 32}


def synthetic_batch(cfg: TrainConfig, device: torch.device) -> Batch:
    c, B = cfg.crops, cfg.batch_size
    gen = np.random.default_rng(0)
    g = torch.from_numpy(
        gen.integers(0, 256, (2, B, c.global_size, c.global_size, 3), dtype=np.uint8)
    )
    loc = torch.from_numpy(
        gen.integers(0, 256, (c.n_local, B, c.local_size, c.local_size, 3), dtype=np.uint8)
    )
    if device.type == "cuda":
        g, loc = g.pin_memory(), loc.pin_memory()
    return Batch(g, loc, None)  # type: ignore[arg-type]


def bench(
    name: str,
    cfg: TrainConfig,
    device: torch.device,
    warmup: int,
    steps: int,
    grad_ckpt: bool,
    spec=None,
) -> dict:
    spec = spec or get_model(name)
    torch.manual_seed(0)
    student, teacher = build_models(spec, cfg, device)
    student.backbone.grad_checkpointing = grad_ckpt
    if cfg.dist.compile:
        for m in (student, teacher):
            for i, blk in enumerate(m.backbone.blocks):
                m.backbone.blocks[i] = torch.compile(blk)
    fused = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.AdamW(param_groups(student, cfg), lr=0.0, betas=(0.9, 0.999), **fused)
    amp = dev.autocast_dtype(device, cfg.dtype)
    state = State(student, teacher, opt, Centers(), cfg, Schedules(cfg, 10_000), device, amp, 0)
    batch = synthetic_batch(cfg, device)
    it = 2000  # past warmup and last-layer freeze: every parameter is updated
    for _ in range(warmup):
        m = train_step(state, batch, it)
        it += 1
    dev.synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        m = train_step(state, batch, it)
        it += 1
    dev.synchronize(device)
    dt = (time.perf_counter() - t0) / steps
    ips = cfg.batch_size / dt
    fps = flops_per_sample(spec, cfg)
    out = {
        "model": spec.name,
        "batch_per_gpu": cfg.batch_size,
        "step_s": dt,
        "images_per_s": ips,
        "tflop_per_image": fps / 1e12,
        "mfu": ips * fps / PEAK,
        "loss": m["loss"],
        "finite": math.isfinite(m["loss"]),
        "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else None,
        "dtype": str(amp),
        "grad_ckpt": grad_ckpt,
        "attention": "xformers" if (device.type == "cuda" and dev.xformers_ops()) else "sdpa",
    }
    del state, student, teacher, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", nargs="+", default=["webdino-300m", "webdino-1b"])
    ap.add_argument("--batch", type=int, help="images per GPU (default: 96 for 300M, 32 for 1B)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--grad-ckpt", action="store_true", help="activation checkpointing per block")
    ap.add_argument("--compile", action="store_true", help="torch.compile each block")
    ap.add_argument("--dry-run", action="store_true", help="CPU self-check with a tiny model")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    device = torch.device("cpu") if args.dry_run else dev.pick_device()
    if device.type != "cuda" and not args.dry_run:
        print("no CUDA device: use --dry-run for the CPU self-check", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        print(
            f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, xformers: {bool(dev.xformers_ops())}"
        )
    results, ok = [], True
    for name in args.models:
        cfg = TrainConfig(
            batch_size=args.batch or DEFAULT_BATCH.get(name, 32),
            dist={"compile": args.compile},
        )
        spec = None
        if args.dry_run:  # same code path, shrunk: 2 blocks of 64, 32/16 px crops, small heads
            spec = replace(get_model(name), width=64, depth=2, heads=2, ffn_hidden=176, img_size=28)
            head = {"n_prototypes": 256, "bottleneck": 32, "hidden": 64}
            cfg = cfg.model_copy(update={"batch_size": 4, "dino_head": cfg.dino_head.model_copy(update=head),
                                         "ibot_head": cfg.ibot_head.model_copy(update=head),
                                         "crops": cfg.crops.model_copy(update={"global_size": 28, "local_size": 14})})  # fmt: skip
        r = bench(name, cfg, device, 1 if args.dry_run else args.warmup, 2 if args.dry_run else args.steps,
                  args.grad_ckpt, spec)  # fmt: skip
        target = TARGETS.get(name)
        r["target_images_per_s"] = target
        r["meets_target"] = None if args.dry_run or target is None else r["images_per_s"] >= target
        ok = ok and r["finite"] and r["meets_target"] is not False
        results.append(r)
        mem = f", peak {r['peak_mem_gb']:.1f} GiB" if r["peak_mem_gb"] else ""
        print(f"{r['model']:14s} batch {r['batch_per_gpu']:4d}: {r['step_s'] * 1e3:8.1f} ms/step, "
              f"{r['images_per_s']:8.1f} images/s, {r['tflop_per_image']:.2f} TFLOP/image, MFU {r['mfu'] * 100:5.1f}%"
              f"{mem}, loss {r['loss']:.3f}" + (f", target {target:.0f}: {'PASS' if r['meets_target'] else 'FAIL'}"
                                                   if r["meets_target"] is not None else ""))  # fmt: skip
    if args.dry_run:
        print("dry run: the step runs and the loss is finite" if ok else "dry run FAILED")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
