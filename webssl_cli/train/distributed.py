"""Process groups and model parallelism: who am I, how do I talk to the others, how is the
model spread over us.

- Rank, world size and rendezvous come from torchrun's variables (``RANK``, ``WORLD_SIZE``,
  ``MASTER_ADDR``...) or, under SLURM (one task per GPU, as submitit launches them), from
  ``SLURM_PROCID`` / ``SLURM_NTASKS`` / ``SLURM_LOCALID`` / ``SLURM_JOB_NODELIST``, with the
  master port drawn from the job id exactly as submitit's ``TorchDistributedEnvironment`` does.
- NCCL on CUDA, gloo on CPU.
- Strategies: 'ddp' (replicated student, gradients all-reduced) or 'fsdp' (FSDP2
  ``fully_shard`` per transformer block and per head, then the root; bf16 parameters with fp32
  reductions on CUDA). 'auto' picks FSDP2 from ``AUTO_FSDP_PARAMS`` backbone parameters.
- A frozen copy (an EMA teacher) is sharded like the trainable model; its EMA runs on the local
  shards (``ema.ema_update``, no all-gather), because both are sharded identically.
"""

from __future__ import annotations

import os
import random
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from webssl_cli.specs.train import resolve_strategy

__all__ = ["resolve_strategy"]


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    source: str = "single"  # "torchrun" | "slurm" | "single"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def first_host(nodelist: str) -> str:
    """First host of a SLURM node list: 'gpu[003-005,9],cpu1' -> 'gpu003'."""
    m = re.match(r"^([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not m:
        raise ValueError(f"cannot parse SLURM node list {nodelist!r}")
    prefix, ranges = m.group(1), m.group(2)
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def slurm_master_port(job_id: str) -> int:
    """The port submitit's TorchDistributedEnvironment picks for a job (same seed, same range)."""
    return random.Random(job_id).randint(20000, 60000)


def detect_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """The process's place in the job: torchrun's variables first, then SLURM's (or submitit's
    LocalExecutor's), else a single process."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", "0")),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", "29500")),
            source="torchrun",
        )
    ntasks = int(env.get("SLURM_NTASKS", env.get("SLURM_STEP_NUM_TASKS", "1")) or 1)
    if "SLURM_PROCID" in env and ntasks > 1:
        job_id = env.get("SLURM_ARRAY_JOB_ID", env.get("SLURM_JOB_ID", "0"))
        if "SLURM_ARRAY_TASK_ID" in env:
            job_id = f"{job_id}_{env['SLURM_ARRAY_TASK_ID']}"
        nodelist = env.get("SLURM_JOB_NODELIST", env.get("SLURM_NODELIST", "127.0.0.1"))
        return DistEnv(
            rank=int(env["SLURM_PROCID"]),
            world_size=ntasks,
            local_rank=int(env.get("SLURM_LOCALID", "0")),
            master_addr=env.get("MASTER_ADDR") or first_host(nodelist),
            master_port=int(env.get("MASTER_PORT") or slurm_master_port(job_id)),
            source="slurm",
        )
    local_tasks = int(env.get("SUBMITIT_LOCAL_NTASKS", "1") or 1)
    if (
        "SUBMITIT_LOCAL_GLOBALID" in env and local_tasks > 1
    ):  # submitit's LocalExecutor, tasks_per_node > 1
        return DistEnv(
            rank=int(env["SUBMITIT_LOCAL_GLOBALID"]),
            world_size=local_tasks,
            local_rank=int(env.get("SUBMITIT_LOCAL_LOCALID", env["SUBMITIT_LOCAL_GLOBALID"])),
            master_addr="127.0.0.1",
            master_port=int(
                env.get("MASTER_PORT") or slurm_master_port(env.get("SUBMITIT_LOCAL_JOB_ID", "0"))
            ),
            source="slurm",  # same rendezvous: exported variables + env://
        )
    return DistEnv()


def init_process_group(env: DistEnv, device: torch.device) -> None:
    """Join the job's process group (NCCL on CUDA, gloo on CPU); a no-op when already joined.

    A single process gets a one-rank group too, so the same code path (collectives,
    torch.distributed.checkpoint) runs at every world size.
    """
    if dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = timedelta(minutes=30)
    if env.source == "single":  # nobody to meet: a private store on a free port, no env changes
        store = dist.TCPStore("127.0.0.1", free_port(), 1, is_master=True, timeout=timeout)
        dist.init_process_group(backend, store=store, rank=0, world_size=1, timeout=timeout)
        return
    if env.source == "slurm":  # what submitit's TorchDistributedEnvironment().export() sets
        os.environ.update(MASTER_ADDR=env.master_addr, MASTER_PORT=str(env.master_port),
                          RANK=str(env.rank), WORLD_SIZE=str(env.world_size),
                          LOCAL_RANK=str(env.local_rank))  # fmt: skip
    # env:// also joins torchrun's agent store when it hosts one (TORCHELASTIC_USE_AGENT_STORE)
    dist.init_process_group(backend, init_method="env://", rank=env.rank,
                            world_size=env.world_size, timeout=timeout)  # fmt: skip


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def device_for(env: DistEnv, requested: torch.device) -> torch.device:
    """One process per GPU: CUDA device ``local_rank`` on GPU machines, else the CPU."""
    if requested.type == "cuda":
        return torch.device("cuda", env.local_rank % max(torch.cuda.device_count(), 1))
    return requested


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def all_reduce_sum(x: Tensor) -> Tensor:
    """Sum over ranks (a copy); the ``reduce`` hook of Sinkhorn-Knopp and the EMA centre."""
    if world() == 1:
        return x
    y = x.clone()
    dist.all_reduce(y)
    return y


def all_reduce_mean(values: list[float], device: torch.device) -> list[float]:
    """Means over ranks of a few scalars (metrics), in one collective."""
    if world() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / world()).tolist()


# ---- spreading a model over the ranks ---------------------------------------------------------
# FSDP2 determines its root by the first module whose forward runs, and DDP synchronises only
# through its own forward: each side of an objective (student, teacher) therefore runs its
# whole forward as one call of a root module, which is what gets wrapped.


def wrap(
    root: nn.Module,
    units: list[nn.Module],
    strategy: str,
    device: torch.device,
    *,
    trainable: bool,
) -> nn.Module:
    """``root`` spread over the default group with ``strategy`` ('ddp' | 'fsdp').

    'fsdp': FSDP2 ``fully_shard`` on each of ``units`` (blocks, heads), then on the root (bf16
    parameters with fp32 reductions on CUDA). 'ddp': a trainable root is wrapped in DDP when
    there are several ranks; a frozen one (an EMA teacher) is replicated as it is. Call before
    building the optimiser: FSDP2 replaces the parameters by sharded DTensors.
    """
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # Our blocks return views (the packed pass splits one tensor per crop size) and nothing
        # modifies them in place, which is the case FSDP2 warns about.
        warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
        mesh = init_device_mesh(device.type, (world(),))
        mp = (
            MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            if device.type == "cuda"
            else MixedPrecisionPolicy()
        )
        for unit in units:
            fully_shard(unit, mesh=mesh, mp_policy=mp)
        fully_shard(root, mesh=mesh, mp_policy=mp)
        return root
    if strategy != "ddp":
        raise ValueError(f"unknown strategy {strategy!r}; valid: ddp, fsdp")
    if trainable and world() > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(
            root,
            device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=False,
            gradient_as_bucket_view=True,  # gradients live in the buckets: no second copy
        )
    return root


def is_sharded(module: nn.Module) -> bool:
    return any(type(p).__name__ == "DTensor" for p in module.parameters())


def no_sync(root: nn.Module, last_micro_batch: bool) -> Any:
    """DDP: skip the all-reduce on all but the last micro-batch of a step. FSDP2 keeps
    reduce-scattering every micro-batch: skipping it would keep whole unsharded gradients
    (in bf16 on GPU) until the last one, which defeats the sharding."""
    import contextlib

    if not last_micro_batch and hasattr(root, "no_sync"):
        return root.no_sync()  # type: ignore[operator]
    return contextlib.nullcontext()


def reshard(root: nn.Module) -> None:
    """FSDP2 keeps the root's parameters gathered after forward (it expects a backward); a
    frozen root has none, so free them (its EMA then sees the same shards as the student)."""
    if hasattr(root, "reshard"):
        root.reshard()  # type: ignore[operator]


def local(t: Tensor) -> Tensor:
    """The local shard of a DTensor (a view: in-place ops update the parameter), else ``t``."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


@torch.no_grad()
def clip_grad_norm(params: list[nn.Parameter], max_norm: float, sharded: bool) -> Tensor:
    """Clip the gradients of ``params`` to a global L2 norm of ``max_norm``; returns the norm.

    On sharded parameters the squared norms of the local shards are summed over ranks, so the
    norm is the full model's, as unsharded clipping would compute it.
    """
    grads = [local(p.grad) for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    sq = torch.stack(torch._foreach_norm(grads)).float().square().sum()
    if sharded:
        sq = all_reduce_sum(sq)
    norm = sq.sqrt()
    coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    if float(coef) < 1.0:  # a factor of exactly 1 changes nothing: skip the pass over memory
        torch._foreach_mul_(grads, coef.to(grads[0].device))
    return norm


def state_bytes(module: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Bytes this rank holds for ``module``'s parameters and gradients and the optimiser's state
    (local shards under FSDP2; each storage counted once)."""
    storages: dict[int, int] = {}

    def add(t: Tensor | None) -> None:
        if isinstance(t, Tensor):
            st = local(t).untyped_storage()
            storages[st.data_ptr()] = st.nbytes()

    for p in module.parameters():
        add(p)
        add(p.grad)
    if optimizer is not None:
        for st in optimizer.state.values():
            for v in st.values():
                add(v)
    return sum(storages.values())


def peak_memory_bytes(device: torch.device) -> int:
    """Peak allocated accelerator memory of this process (0 on CPU, where it is not tracked)."""
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else 0


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on at least one (one small all-reduce)."""
    if world() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (a list of one at world size 1)."""
    if world() == 1:
        return [obj]
    out: list[Any] = [None] * world()
    dist.all_gather_object(out, obj)
    return out


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient of the gathered tensor and returns
    this rank's slice (a reduce-scatter as an all-reduce: gloo has no reduce-scatter)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        parts = [torch.empty_like(x) for _ in range(world())]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        return total[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_rows(x: Tensor, with_grad: bool = True) -> Tensor:
    """(N, ...) of every rank concatenated in rank order (every rank has the same N).

    ``with_grad``: gradients flow back through the gather (OpenCLIP's ``gather_with_grad``):
    each rank computes the same loss over the global rows, each rank's rows receive the sum of
    every rank's gradient, and the data-parallel average of the parameter gradients is then the
    gradient of that global loss. Without it, the other ranks' rows are constants here and only
    the local rows carry gradient (OpenCLIP's default)."""
    if world() == 1:
        return x
    if with_grad:
        return _GatherWithGrad.apply(x)  # type: ignore[no-any-return]
    parts = [torch.empty_like(x) for _ in range(world())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts)
