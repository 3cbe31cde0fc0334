"""Our training step vs the official DINOv2 ``SSLMetaArch`` step, side by side on CPU (1 thread).

Same configuration on both sides (patch 16, 2 x 112 px global + 4 x 48 px local crops, batch 8,
4096 prototypes in separate DINO/iBOT heads, Sinkhorn-Knopp, KoLeo, drop-path 0.4, widths 192
and 384, depth 12), same weights (ours copied into theirs), same images and iBOT masks. Prints,
per width:

- the loss of both on the first step, without drop-path (its random subsets are drawn in a
  different order): the equality check;
- the step time (schedules, forward, backward, per-module clip, AdamW, EMA): process CPU time
  in rounds that run the same iteration on both sides, A B then B A (so a drift in the
  machine's load cancels over a pair of rounds); the median time of each side, and the median,
  quartiles and range of the per-round ratios ours/theirs;
- the peak memory of one step, each side in its own process after a warm-up step: the peak
  of the live bytes of tensors the step creates (counted per op through a dispatch mode, as
  ``torch.cuda.max_memory_allocated`` counts on a GPU), and the growth of the peak RSS over
  the RSS before the step (large allocations unmapped on free; this one also depends on how
  the C allocator reuses freed pages, so the tensor count is the comparison).

The official code is read from a checkout named by ``DINOV2_SRC`` (github.com/facebookresearch/
dinov2); nothing else needs installing. Its CPU shims (below) stand in for xFormers (block-
diagonal attention as one SDPA per crop size, as ours runs it), ``.cuda()``, FSDP's per-module
clip and EMA, fvcore's checkpointer and OmegaConf (plain YAML of its default config), and a
gloo process group of one (its iBOT loss all-reduces unconditionally).

    DINOV2_SRC=/path/to/dinov2 .venv/bin/python benchmarks/vs_dinov2.py [--rounds 6] [--widths 192 384]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
import types
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402

torch.set_num_threads(1)

from webssl_cli.specs.registry import ModelSpec, get_model  # noqa: E402
from webssl_cli.specs.train import TrainConfig  # noqa: E402

PATCH, GLOBAL, LOCAL, N_LOCAL, BATCH, PROTOTYPES, DEPTH = 16, 112, 48, 4, 8, 4096, 12
DROP_PATH = 0.4


def our_spec(width: int) -> ModelSpec:
    return dataclasses.replace(
        get_model("vit-small"), name=f"vit-w{width}", width=width, depth=DEPTH,
        heads=width // 64, ffn="mlp", ffn_hidden=4 * width, patch=PATCH, img_size=GLOBAL,
    )  # fmt: skip


def our_config() -> TrainConfig:
    return TrainConfig(
        batch_size=BATCH, drop_path=DROP_PATH, warmup_iters=10, teacher_temp_warmup_iters=10,
        dino_head={"n_prototypes": PROTOTYPES}, ibot_head={"n_prototypes": PROTOTYPES},
        crops={"global_size": GLOBAL, "local_size": LOCAL, "n_local": N_LOCAL},
    )  # fmt: skip


# ---- our side (the adapter to our training loop's step) ---------------------------------------
def our_state(width: int) -> Any:
    """Our objective, optimiser and schedules, built as the training loop builds them."""
    from webssl_cli.train.objective import RunContext
    from webssl_cli.train.objectives import build_objective
    from webssl_cli.train.optim import build_optimizer
    from webssl_cli.train.schedules import Schedules
    from webssl_cli.train.step import Step

    cfg, cpu = our_config(), torch.device("cpu")
    ctx = RunContext(cpu, None, seed=0, iterations=100, micro=BATCH, accum=1, strategy="ddp")
    objective = build_objective(our_spec(width), cfg, ctx)
    optimizer = build_optimizer(objective.param_groups(), cpu)
    return Step(objective, optimizer, Schedules(cfg, ctx.iterations), cfg, ctx)


def our_step(state: Any, batch: Any, it: int) -> float:
    from webssl_cli.train.step import train_step

    return float(train_step(state, batch, it)["loss"])


def our_models(state: Any) -> tuple[Any, Any]:
    """(student, teacher), each with ``backbone``, ``dino_head`` and ``ibot_head``."""
    return state.objective.student, state.objective.teacher


def our_masks(state: Any, it: int) -> torch.Tensor:
    """The (2B, N) iBOT masks our step uses at ``it``, view-major."""
    return torch.from_numpy(state.objective.masks(it)).reshape(2 * BATCH, -1)


def our_drop_path(state: Any, rate: float) -> None:
    for blk in our_models(state)[0].backbone.blocks:
        blk.drop_path = rate


def make_batch(seed: int) -> Any:
    from webssl_cli.data.stream import Position
    from webssl_cli.train.batches import Batch

    g = torch.Generator().manual_seed(seed)
    u8 = lambda *s: torch.randint(0, 256, s, generator=g, dtype=torch.uint8)  # noqa: E731
    return Batch(
        u8(2, BATCH, GLOBAL, GLOBAL, 3), u8(N_LOCAL, BATCH, LOCAL, LOCAL, 3), {0: Position()}
    )


# ---- CPU shims for the official code ------------------------------------------------------------
class BlockDiagonalMask:
    """xFormers' block-diagonal attention bias, as far as DINOv2 uses it: sequences of several
    lengths concatenated along dim 1 of a (1, T, ...) tensor, grouped by batch."""

    def __init__(self, seqlens: list[int]) -> None:
        self.seqlens = seqlens
        self._batch_sizes: list[int] | None = None

    @classmethod
    def from_seqlens(cls, seqlens: list[int]) -> BlockDiagonalMask:
        return cls(list(seqlens))

    @classmethod
    def from_tensor_list(
        cls, tensors: list[torch.Tensor]
    ) -> tuple[BlockDiagonalMask, torch.Tensor]:
        bias = cls([t.shape[1] for t in tensors for _ in range(t.shape[0])])
        bias._batch_sizes = [t.shape[0] for t in tensors]
        return bias, torch.cat([t.reshape(1, -1, *t.shape[2:]) for t in tensors], dim=1)

    def groups(self) -> list[tuple[int, int]]:
        """(batch, length) of each tensor of the list (every caller in DINOv2 sets the sizes)."""
        assert self._batch_sizes is not None
        out, i = [], 0
        for b in self._batch_sizes:
            out.append((b, self.seqlens[i]))
            i += b
        return out

    def split(self, x: torch.Tensor) -> list[torch.Tensor]:
        parts = x.reshape(-1, *x.shape[2:]).split([b * n for b, n in self.groups()])
        return [
            p.reshape(b, n, *x.shape[2:]) for p, (b, n) in zip(parts, self.groups(), strict=True)
        ]


def memory_efficient_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_bias: BlockDiagonalMask | None = None
) -> torch.Tensor:
    """(B, N, H, hd) attention; with a block-diagonal bias, one SDPA call per crop size."""

    def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return o.transpose(1, 2)

    if attn_bias is None:
        return sdpa(q, k, v)
    outs = []
    for qi, ki, vi in zip(attn_bias.split(q), attn_bias.split(k), attn_bias.split(v), strict=True):
        outs.append(sdpa(qi, ki, vi).reshape(1, -1, *q.shape[2:]))
    return torch.cat(outs, dim=1)


def scaled_index_add(
    x: torch.Tensor, index: torch.Tensor, source: torch.Tensor, scaling: torch.Tensor | None = None,
    alpha: float = 1.0,
) -> torch.Tensor:  # fmt: skip
    src = source * scaling if scaling is not None else source
    return torch.index_add(x, 0, index, src, alpha=alpha)


def index_select_cat(sources: list[torch.Tensor], indices: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([s[i].flatten() for s, i in zip(sources, indices, strict=True)])


def install_shims(src: Path) -> None:
    fmha = types.ModuleType("xformers.ops.fmha")
    fmha.BlockDiagonalMask = BlockDiagonalMask  # type: ignore[attr-defined]
    ops = types.ModuleType("xformers.ops")
    ops.fmha = fmha  # type: ignore[attr-defined]
    ops.memory_efficient_attention = memory_efficient_attention  # type: ignore[attr-defined]
    ops.unbind = torch.unbind  # type: ignore[attr-defined]
    ops.scaled_index_add = scaled_index_add  # type: ignore[attr-defined]
    ops.index_select_cat = index_select_cat  # type: ignore[attr-defined]
    # no ops.SwiGLU: DINOv2 then uses its own SwiGLUFFN (these models use the MLP FFN anyway)
    xformers = types.ModuleType("xformers")
    xformers.ops = ops  # type: ignore[attr-defined]
    ckpt = types.ModuleType("fvcore.common.checkpoint")
    ckpt.Checkpointer = object  # type: ignore[attr-defined]  # imported, unused by the step
    common = types.ModuleType("fvcore.common")
    common.checkpoint = ckpt  # type: ignore[attr-defined]
    fvcore = types.ModuleType("fvcore")
    fvcore.common = common  # type: ignore[attr-defined]
    sys.modules.update({
        "xformers": xformers, "xformers.ops": ops, "xformers.ops.fmha": fmha,
        "fvcore": fvcore, "fvcore.common": common, "fvcore.common.checkpoint": ckpt,
    })  # fmt: skip
    sys.path.insert(0, str(src))
    # dinov2.train's __init__ imports the whole training script (data, OmegaConf); only the
    # meta-architecture is needed, so the package is registered without running it.
    pkg = types.ModuleType("dinov2.train")
    pkg.__path__ = [str(src / "dinov2" / "train")]  # type: ignore[attr-defined]
    importlib.import_module("dinov2")
    sys.modules["dinov2.train"] = pkg
    # The iBOT loss all-reduces its token count unconditionally: a process group of one.
    import tempfile

    import torch.distributed as dist

    if not dist.is_initialized():
        rendezvous = Path(tempfile.mkdtemp()) / "pg"
        dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=0, world_size=1)


class Cfg(dict):
    """Attribute access over a nested dict (what the official code reads from OmegaConf)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


def _cfg(d: Any) -> Any:
    return Cfg({k: _cfg(v) for k, v in d.items()}) if isinstance(d, dict) else d


def official_config(src: Path, width: int) -> Cfg:
    import yaml

    base = yaml.safe_load((src / "dinov2/configs/ssl_default_config.yaml").read_text())
    ours = our_config()
    over = {
        "compute_precision": {"grad_scaler": False},
        "dino": {"head_n_prototypes": PROTOTYPES, "head_bottleneck_dim": 384},  # as vitg14.yaml
        "ibot": {"separate_head": True, "head_n_prototypes": PROTOTYPES},
        "train": {"centering": "sinkhorn_knopp", "batch_size_per_gpu": BATCH},
        "student": {
            "arch": f"vit_w{width}", "patch_size": PATCH, "drop_path_rate": DROP_PATH,
            "ffn_layer": "mlp", "block_chunks": 0, "layerscale": ours.layerscale,
        },
        "crops": {"global_crops_size": GLOBAL, "local_crops_size": LOCAL, "local_crops_number": N_LOCAL},
        "optim": {"layerwise_decay": ours.layerwise_decay, "patch_embed_lr_mult": ours.patch_embed_lr_mult},
    }  # fmt: skip
    for section, values in over.items():
        base[section].update(values)
    return _cfg(base)  # type: ignore[no-any-return]


def official_model(src: Path, width: int, state: Any) -> tuple[Any, torch.optim.Optimizer]:
    """DINOv2's SSLMetaArch of this width with our student's and teacher's weights."""
    vits = importlib.import_module("dinov2.models.vision_transformer")
    layers = importlib.import_module("dinov2.layers")

    def arch(patch_size: int = 16, num_register_tokens: int = 0, **kw: Any) -> Any:
        return vits.DinoVisionTransformer(
            patch_size=patch_size, embed_dim=width, depth=DEPTH, num_heads=width // 64, mlp_ratio=4,
            block_fn=functools.partial(vits.Block, attn_class=layers.MemEffAttention),
            num_register_tokens=num_register_tokens, **kw,
        )  # fmt: skip

    vits.__dict__[f"vit_w{width}"] = arch
    meta = importlib.import_module("dinov2.train.ssl_meta_arch")
    model = meta.SSLMetaArch(official_config(src, width))
    model.need_to_synchronize_fsdp_streams = False  # CUDA streams of FSDP: none here
    for side, ours in zip(("student", "teacher"), our_models(state), strict=True):
        for name in ("backbone", "dino_head", "ibot_head"):
            getattr(model, side)[name].load_state_dict(getattr(ours, name).state_dict())
    model.train()
    groups = model.get_params_groups()
    return model, torch.optim.AdamW(groups, betas=(0.9, 0.999))


def official_inputs(batch: Any, masks: torch.Tensor) -> dict[str, Any]:
    """The official collate's dictionary for our images and masks (upperbound as it computes)."""
    from webssl_cli.train.batches import to_model_input

    cpu = torch.device("cpu")
    n_tokens = masks.shape[1]
    n_masked_images = int(masks.shape[0] * our_config().mask_prob)
    lo, hi = our_config().mask_ratio
    edges = torch.linspace(lo, hi, n_masked_images + 1)
    flat_idx = masks.flatten().nonzero().flatten()
    weights = (1 / masks.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks]
    return {
        "collated_global_crops": to_model_input(batch.globals_u8, cpu),
        "collated_local_crops": to_model_input(batch.locals_u8, cpu),
        "collated_masks": masks,
        "mask_indices_list": flat_idx,
        "masks_weight": weights,
        "upperbound": int(sum(int(n_tokens * float(p)) for p in edges[1:])),
        "n_masked_patches": torch.full((1,), flat_idx.shape[0], dtype=torch.long),
    }


def official_step(model: Any, opt: torch.optim.Optimizer, data: dict[str, Any], h: Any) -> float:
    """DINOv2's train loop body (train.py) for one unsharded process."""
    for g in opt.param_groups:  # its apply_optim_scheduler
        g["weight_decay"] = h.weight_decay * g["wd_multiplier"]
        g["lr"] = (h.last_layer_lr if g["is_last_layer"] else h.lr) * g["lr_multiplier"]
    opt.zero_grad(set_to_none=True)
    seen: list[float] = []
    backprop = model.backprop_loss

    def record_then_backprop(loss: torch.Tensor) -> None:
        seen.append(float(loss.detach()))
        backprop(loss)

    model.backprop_loss = record_then_backprop
    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    try:
        model.forward_backward(data, teacher_temp=h.teacher_temp)
    finally:
        torch.Tensor.cuda = cuda  # type: ignore[method-assign]
        del model.backprop_loss
    for v in model.student.values():  # FSDP's per-module clip_grad_norm_
        torch.nn.utils.clip_grad_norm_(v.parameters(), our_config().clip_grad)
    opt.step()
    with torch.no_grad():  # its update_teacher, on the unsharded parameters
        s = [p for k in model.student for p in model.student[k].parameters()]
        t = [p for k in model.student for p in model.teacher[k].parameters()]
        torch._foreach_mul_(t, h.momentum)
        torch._foreach_add_(t, s, alpha=1 - h.momentum)
    return seen[0]


def official_drop_path(model: Any, rate: float) -> None:
    for blk in model.student.backbone.blocks:
        blk.sample_drop_ratio = rate


# ---- the comparison ---------------------------------------------------------------------------
class Pair:
    def __init__(self, src: Path, width: int, sides: tuple[str, ...] = ("ours", "official")):
        self.state = our_state(width)
        self.official = official_model(src, width, self.state) if "official" in sides else None

    def ours(self, it: int) -> float:
        return our_step(self.state, make_batch(it), it)

    def theirs(self, it: int) -> float:
        assert self.official is not None
        model, opt = self.official
        h = self.state.schedules.at(it)
        return official_step(
            model, opt, official_inputs(make_batch(it), our_masks(self.state, it)), h
        )

    def drop_path(self, rate: float) -> None:
        our_drop_path(self.state, rate)
        if self.official is not None:
            official_drop_path(self.official[0], rate)


def cpu_time(fn: Callable[[], Any]) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


class TensorPeak(TorchDispatchMode):
    """Peak bytes of the tensor storages created while active and still alive: what
    ``torch.cuda.max_memory_allocated`` counts, for CPU tensors (views and in-place results
    share their input's storage and are not counted again)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {
            a.untyped_storage().data_ptr()
            for a in tree_flatten((args, kwargs))[0]
            if isinstance(a, torch.Tensor)
        }
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key, n = storage.data_ptr(), storage.nbytes()
            if key in inputs or key in self.live or n == 0:
                continue
            self.live[key] = n
            self.current += n
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._free, key)
        return out

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def memory_child(src: Path, width: int, side: str) -> None:
    """One side in this process: peak RSS growth of one step after a warm-up step (MiB)."""
    install_shims(src)
    pair = Pair(src, width, ("ours", side))
    step = pair.ours if side == "ours" else pair.theirs
    step(0)
    gc.collect()
    before = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
    step(1)
    rss = (_status_kb("VmHWM") - before) / 1024
    gc.collect()
    with TensorPeak() as tracked:
        step(2)
    print(json.dumps({"rss_mib": rss, "tensor_mib": tracked.peak / 2**20}))


def measure_memory(src: Path, width: int, side: str) -> dict[str, float]:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    cmd = [sys.executable, __file__, "--memory-child", side, "--widths", str(width)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def compare(src: Path, width: int, rounds: int) -> dict[str, float]:
    pair = Pair(src, width)
    pair.drop_path(0.0)  # the equality check: no random subsets
    loss_ours, loss_theirs = pair.ours(0), pair.theirs(0)
    pair.drop_path(DROP_PATH)
    pair.ours(1), pair.theirs(1)  # warm-up with drop-path
    t_ours, t_theirs, ratios = [], [], []
    for r in range(rounds):  # the same iteration on both sides in each round, A B then B A
        it = 2 + r
        if r % 2 == 0:
            a = cpu_time(functools.partial(pair.ours, it))
            b = cpu_time(functools.partial(pair.theirs, it))
        else:
            b = cpu_time(functools.partial(pair.theirs, it))
            a = cpu_time(functools.partial(pair.ours, it))
        t_ours.append(a)
        t_theirs.append(b)
        ratios.append(a / b)
    del pair
    gc.collect()
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return {
        "loss_ours": loss_ours,
        "loss_official": loss_theirs,
        "ours_s": statistics.median(t_ours),
        "official_s": statistics.median(t_theirs),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_q1": quartiles[0],
        "ratio_q3": quartiles[2],
        "ratio_max": max(ratios),
        **{f"{k}_ours": v for k, v in measure_memory(src, width, "ours").items()},
        **{f"{k}_official": v for k, v in measure_memory(src, width, "official").items()},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--widths", type=int, nargs="+", default=[192, 384])
    ap.add_argument("--memory-child", choices=["ours", "official"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    src_env = os.environ.get("DINOV2_SRC")
    if not src_env or not (Path(src_env) / "dinov2/train/ssl_meta_arch.py").exists():
        print(
            "vs_dinov2: set DINOV2_SRC to a checkout of github.com/facebookresearch/dinov2 "
            "(the directory holding dinov2/train/ssl_meta_arch.py); nothing compared."
        )
        return 0
    src = Path(src_env).resolve()
    if args.memory_child:
        memory_child(src, args.widths[0], args.memory_child)
        return 0
    install_shims(src)
    print(
        f"CPU, 1 thread, fp32; patch {PATCH}, 2x{GLOBAL} + {N_LOCAL}x{LOCAL} px crops, batch {BATCH}, "
        f"{PROTOTYPES} prototypes, depth {DEPTH}, drop-path {DROP_PATH}; {args.rounds} A/B rounds"
    )
    failed = False
    for width in args.widths:
        r = compare(src, width, args.rounds)
        rel = abs(r["loss_ours"] - r["loss_official"]) / abs(r["loss_official"])
        failed |= not rel <= 1e-4
        print(
            f"width {width}: first-step loss ours {r['loss_ours']:.6f} official "
            f"{r['loss_official']:.6f} (rel. diff {rel:.1e}, {'equal' if rel <= 1e-4 else 'DIFFERENT'})\n"
            f"  step time ours {r['ours_s']:.3f} s official {r['official_s']:.3f} s, "
            f"ratio ours/official {r['ratio']:.3f} (median of {args.rounds} rounds; quartiles "
            f"{r['ratio_q1']:.3f}-{r['ratio_q3']:.3f}, range {r['ratio_min']:.3f}-{r['ratio_max']:.3f})\n"
            f"  peak tensor memory of a step ours {r['tensor_mib_ours']:.1f} MiB official "
            f"{r['tensor_mib_official']:.1f} MiB (ratio {r['tensor_mib_ours'] / r['tensor_mib_official']:.3f}); "
            f"peak RSS growth ours {r['rss_mib_ours']:.1f} MiB official {r['rss_mib_official']:.1f} MiB"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main())
