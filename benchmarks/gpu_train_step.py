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

Multi-GPU modes (``run_distributed``): one process per GPU through ``train.distributed``
(NCCL on CUDA, gloo on CPU), the one loop's ``train.step.train_step`` (global Sinkhorn,
micro-batches, sharded EMA); prints images/s, MFU and peak memory per GPU next to the
estimate of ``study.memory``:

    python benchmarks/gpu_train_step.py --ranks 8 --strategy fsdp --models webdino-1b
    python benchmarks/gpu_train_step.py --ranks 8 --strategy ddp --models webdino-300m --micro-batch 48
    python benchmarks/gpu_train_step.py --ranks 2 --strategy fsdp --dry-run   # CPU, 2 gloo ranks
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from webssl_cli import device as dev
from webssl_cli.specs.compute import flops_per_sample
from webssl_cli.specs.registry import get_model
from webssl_cli.specs.train import TrainConfig
from webssl_cli.train.batches import Batch
from webssl_cli.train.schedules import Schedules
from webssl_cli.train.step import Step, train_step

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
    return Batch(g, loc, {})


def make_step(spec, cfg: TrainConfig, device: torch.device, rank: int = 0, world: int = 1) -> Step:
    """The objective, optimiser and schedules of a run, as ``train.loop`` builds them."""
    from webssl_cli.specs.train import resolve_strategy
    from webssl_cli.train.batches import micro_batches_for
    from webssl_cli.train.objective import RunContext
    from webssl_cli.train.objectives import build_objective
    from webssl_cli.train.optim import build_optimizer

    mb, accum = micro_batches_for(cfg, world)
    strategy = resolve_strategy(cfg.dist.strategy, spec.backbone_params())
    ctx = RunContext(device, dev.autocast_dtype(device, cfg.dtype), 0, 10_000, rank, world, mb,
                     accum, strategy)  # fmt: skip
    obj = build_objective(spec, cfg, ctx)
    return Step(obj, build_optimizer(obj.param_groups(), device), Schedules(cfg, 10_000), cfg, ctx)


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
    dist_cfg = cfg.dist.model_copy(update={"activation_checkpointing": grad_ckpt})
    cfg = cfg.model_copy(update={"dist": dist_cfg})
    amp = dev.autocast_dtype(device, cfg.dtype)
    state = make_step(spec, cfg, device)
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
    del state
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def _dist_rank(rank: int, world: int, port: int, name: str, cfg_json: str, spec_json: str | None,
               warmup: int, steps: int, out_dir: str) -> None:  # fmt: skip
    """One rank of ``run_distributed``: a few distributed steps on synthetic batches."""
    import dataclasses
    import os

    from webssl_cli.specs.registry import ModelSpec
    from webssl_cli.train.distributed import DistEnv, device_for, init_process_group, state_bytes

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # env:// rendezvous
    cfg = TrainConfig.model_validate_json(cfg_json)
    spec = ModelSpec(**json.loads(spec_json)) if spec_json else get_model(name)
    env = DistEnv(rank=rank, world_size=world, local_rank=rank, master_port=port, source="torchrun")
    device = device_for(env, dev.pick_device())
    if device.type == "cpu":
        torch.set_num_threads(1)
    init_process_group(env, device)
    state = make_step(spec, cfg, device, rank, world)
    strategy, mb, accum = state.ctx.strategy, state.ctx.micro, state.ctx.accum
    full = synthetic_batch(cfg, torch.device("cpu"))
    per_rank = cfg.batch_size // world
    sl = slice(rank * per_rank, (rank + 1) * per_rank)
    rb = Batch(full.globals_u8[:, sl], full.locals_u8[:, sl], {}, {})
    it = 2000
    for _ in range(warmup):
        m = train_step(state, rb, it)
        it += 1
    dev.synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch.distributed.barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        m = train_step(state, rb, it)
        it += 1
    dev.synchronize(device)
    dt = (time.perf_counter() - t0) / steps
    out = {"rank": rank, "step_s": dt, "loss": m["loss"], "strategy": strategy, "micro_batch": mb,
           "accumulation": accum, "state_bytes": state_bytes(state.objective.trainable(), state.optimizer),
           "peak_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
           "spec": dataclasses.asdict(spec)}  # fmt: skip
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(out, f)
    torch.distributed.destroy_process_group()


def run_distributed(name: str, cfg: TrainConfig, world: int, warmup: int, steps: int, dry_run: bool,
                    spec=None) -> dict:  # fmt: skip
    """``world`` ranks on this machine (one per GPU); per-GPU throughput and memory vs estimate."""
    import dataclasses
    import socket
    import tempfile

    import torch.multiprocessing as tmp

    from webssl_cli.study.memory import estimate_memory

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec_json = json.dumps(dataclasses.asdict(spec)) if spec is not None else None
    with tempfile.TemporaryDirectory() as out_dir:
        tmp.spawn(_dist_rank, args=(world, port, name, cfg.model_dump_json(), spec_json, warmup, steps, out_dir),
                  nprocs=world, join=True)  # fmt: skip
        ranks = [json.loads(Path(out_dir, f"rank{r}.json").read_text()) for r in range(world)]
    spec = spec or get_model(name)
    cuda = ranks[0]["peak_bytes"] is not None
    est = estimate_memory(
        spec, cfg, world, strategy=ranks[0]["strategy"], act_bytes=2 if cuda else 4
    )
    dt = max(r["step_s"] for r in ranks)
    fps = flops_per_sample(spec, cfg)
    ips = cfg.batch_size / dt
    return {
        "model": spec.name, "ranks": world, "strategy": ranks[0]["strategy"], "global_batch": cfg.batch_size,
        "micro_batch": ranks[0]["micro_batch"], "accumulation": ranks[0]["accumulation"], "step_s": dt,
        "images_per_s": ips, "images_per_s_per_gpu": ips / world, "mfu": ips / world * fps / PEAK,
        "loss": ranks[0]["loss"], "finite": all(math.isfinite(r["loss"]) for r in ranks),
        "state_bytes_per_gpu": [r["state_bytes"] for r in ranks], "state_bytes_estimate": est.states_bytes,
        "peak_bytes_per_gpu": [r["peak_bytes"] for r in ranks] if cuda else None,
        "peak_bytes_estimate": est.total_bytes,
        "estimate_parts": {k: getattr(est, k) for k in ("param_bytes", "grad_bytes", "optimizer_bytes", "teacher_bytes",
                                                         "gathered_bytes", "activation_bytes", "logits_bytes", "reserve_bytes")},
    }  # fmt: skip


def print_distributed(r: dict) -> bool:
    """Print one multi-GPU result; True when its self-checks pass (finite loss; states within
    10% of the estimate)."""
    gib = 2**30
    mib = 2**20
    states = ", ".join(f"{b / mib:.2f}" for b in r["state_bytes_per_gpu"])
    ratio = max(abs(b / r["state_bytes_estimate"] - 1) for b in r["state_bytes_per_gpu"])
    print(f"{r['model']:14s} {r['ranks']} ranks {r['strategy']}: global batch {r['global_batch']} "
          f"(micro {r['micro_batch']} x {r['accumulation']} per rank), {r['step_s'] * 1e3:.1f} ms/step, "
          f"{r['images_per_s_per_gpu']:.1f} images/s/GPU, MFU {r['mfu'] * 100:.1f}%, loss {r['loss']:.3f}")  # fmt: skip
    print(f"  params+grads+AdamW per GPU: measured [{states}] MiB, estimate {r['state_bytes_estimate'] / mib:.2f} MiB "
          f"(worst {ratio:+.1%})")  # fmt: skip
    if r["peak_bytes_per_gpu"]:
        peaks = ", ".join(f"{b / gib:.1f}" for b in r["peak_bytes_per_gpu"])
        print(f"  peak allocated per GPU: [{peaks}] GiB, estimate {r['peak_bytes_estimate'] / gib:.1f} GiB "
              f"(incl. {r['estimate_parts']['reserve_bytes'] / gib:.1f} GiB reserve)")  # fmt: skip
    return r["finite"] and ratio < 0.10


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
    ap.add_argument("--ranks", type=int, default=0, help="multi-GPU mode: processes (one per GPU)")
    ap.add_argument(
        "--strategy", choices=["auto", "ddp", "fsdp"], help="multi-GPU mode: DDP or FSDP2"
    )
    ap.add_argument("--micro-batch", type=int, help="multi-GPU mode: images per rank per pass")
    args = ap.parse_args()
    if args.ranks or args.strategy:
        return main_distributed(args)

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


def main_distributed(args: argparse.Namespace) -> int:
    """The multi-GPU / FSDP2 mode of ``main``: ``--batch`` is per GPU, the global batch is
    ranks x batch (accumulated over micro-batches of ``--micro-batch``)."""
    world = args.ranks or 1
    if not args.dry_run and torch.cuda.device_count() < world:
        print(
            f"{world} ranks need {world} GPUs, found {torch.cuda.device_count()}; use --dry-run on CPU",
            file=sys.stderr,
        )
        return 2
    results, ok = [], True
    for name in args.models:
        per_gpu = args.batch or DEFAULT_BATCH.get(name, 32)
        dist = {"strategy": args.strategy or "auto", "compile": args.compile,
                "activation_checkpointing": args.grad_ckpt}  # fmt: skip
        cfg = TrainConfig(batch_size=per_gpu * world, micro_batch=args.micro_batch, dist=dist)
        spec = None
        if args.dry_run:  # CPU, gloo: a shrunk model, as in the one-GPU dry run
            spec = replace(get_model(name), width=64, depth=2, heads=2, ffn_hidden=176, img_size=28)
            head = {"n_prototypes": 256, "bottleneck": 32, "hidden": 64}
            cfg = cfg.model_copy(update={"batch_size": 4 * world, "micro_batch": args.micro_batch or 2,
                                         "dino_head": cfg.dino_head.model_copy(update=head),
                                         "ibot_head": cfg.ibot_head.model_copy(update=head),
                                         "crops": cfg.crops.model_copy(update={"global_size": 28, "local_size": 14})})  # fmt: skip
        r = run_distributed(name, cfg, world, 1 if args.dry_run else args.warmup,
                            2 if args.dry_run else args.steps, args.dry_run, spec)  # fmt: skip
        ok = print_distributed(r) and ok
        results.append(r)
    if args.dry_run:
        print("dry run: distributed steps run, losses finite, state memory within 10% of the estimate"
              if ok else "dry run FAILED")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
