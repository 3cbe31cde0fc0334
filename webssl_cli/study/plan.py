"""The compute plan of a study: one row a cell plus totals, as a table, JSON or CSV.

JSON output (stable, documented in the README)::

    {"study": str, "cluster": str, "peak_tflops": float, "mfu": float,
     "cells": [{"uid", "method", "model", "params", "head_params", "samples_seen", "data_filter",
                "batch_size", "iterations", "flops_per_sample", "flops", "gpu_hours",
                "checkpoint_bytes", "stages": [str], "axes": {...},
                "resolution", "init_from" (adaptation cells only: their own stage's
                iterations and FLOPs at their token count; stages start "after <uid>:train"),
                "evals": {"eval/<vqa name>": estimate (study/vqa_cost.py)}, "eval_gpu_hours",
                "memory": {"gpus", "strategy", "micro_batch", "accumulation",
                           "activation_checkpointing": bool, "auto": [str], "memory_bytes",
                           "memory_parts": {params, grads, optimizer, teacher, gathered,
                                            activations, logits, reserve},
                           "memory_fits": bool | null, "memory_fix": str}}],
     "totals": {"cells", "flops", "gpu_hours", "checkpoint_bytes", "eval_gpu_hours"}}

``micro_batch`` and ``activation_checkpointing`` are what the cell's training will use: the
study's values, or for those it leaves at 'auto' (listed in ``auto``) the values chosen to fit
the profile's GPU memory (``study/memory.py``); `study run` writes the same into cell.json.
Each cell is priced for its method (``specs/compute.py``, ``study/memory.py``): ``head_params``
are the DINO and iBOT heads (webdino), the decoder (mae) or the text tower (clip).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from webssl_cli.specs.compute import backbone_forward_flops, estimate
from webssl_cli.specs.evals import CLIP_ONLY_TASKS, VqaEval
from webssl_cli.specs.registry import get_model
from webssl_cli.specs.train import TrainConfig
from webssl_cli.specs.units import format_count
from webssl_cli.study.loader import LoadedStudy
from webssl_cli.study.memory import choose_operational, plan_memory, resolve_train
from webssl_cli.study.vqa_cost import eval_world, price_vqa

DEFAULT_PEAK_TFLOPS = 989.0  # H100/H200 SXM dense bf16
DEFAULT_MFU = 0.4


def cluster_speed(loaded: LoadedStudy, profile_name: str | None = None) -> tuple[float, float]:
    """(peak TFLOP/s per GPU, assumed utilisation) from the study's cluster profile if known."""
    from webssl_cli.errors import UserError
    from webssl_cli.launch.profiles import load_profile

    try:
        profile = load_profile(profile_name or loaded.study.cluster)
    except UserError as exc:
        if profile_name:
            raise UserError(f"--profile {profile_name}: {exc.message}") from None
        raise loaded.source_map.error(("cluster",), str(exc.message)) from None
    gpu = getattr(profile, "gpu", None)
    peak = getattr(gpu, "peak_tflops", 0.0) or DEFAULT_PEAK_TFLOPS  # 0: a CPU-only profile
    mfu = getattr(profile, "mfu", None) or DEFAULT_MFU
    return float(peak), float(mfu)


def cluster_memory(
    loaded: LoadedStudy, profile_name: str | None = None
) -> tuple[float, dict[str, int], int]:
    """(GPU memory in GB, GPUs per training job by model, most GPUs a job may use) from the
    cluster profile; memory 0 when unknown (the fit check is then skipped)."""
    try:
        from webssl_cli.launch.profiles import load_profile

        profile = load_profile(profile_name or loaded.study.cluster)
    except Exception:  # noqa: BLE001 - a bad profile is reported by cluster_speed
        return 0.0, {}, 1
    return profile_memory(profile, {c.model for c in loaded.cells})


def cluster_eval_ranks(loaded: LoadedStudy, profile_name: str | None = None) -> int:
    """Ranks the cluster profile gives an evaluation job (``eval``: nodes x tasks per node)."""
    try:
        from webssl_cli.launch.profiles import load_profile

        res = load_profile(profile_name or loaded.study.cluster).eval
    except Exception:  # noqa: BLE001 - a bad profile is reported by cluster_speed
        return 1
    return int(res.nodes * res.tasks)


def profile_memory(profile: Any, models: set[str]) -> tuple[float, dict[str, int], int]:
    """(GPU memory in GB, GPUs per training job by model, most GPUs a job may use) of a loaded
    cluster profile."""
    gpus = {
        m: (r.nodes * max(r.gpus_per_node, 1)) for m in models for r in [profile.train_resources(m)]
    }
    return profile.gpu.memory_gb, gpus, profile.max_nodes * max(profile.node.gpus, 1)


def resolve_operational(loaded: LoadedStudy, profile: Any) -> None:
    """Replace every cell's 'auto' micro-batch and activation checkpointing with the values
    the plan chooses for ``profile`` (``memory.choose_operational``), so that cell.json, and
    the training job reading it, hold concrete values. Both are operational fields: uids stay."""
    gpu_memory_gb, gpus_of, _ = profile_memory(profile, {c.model for c in loaded.cells})
    done: dict[tuple[str, int, str], dict[str, Any]] = {}  # cells share train dicts: once each
    for cell in loaded.cells:
        key = (cell.model, id(cell.train), cell.method)
        train = done.get(key)
        if train is None:
            cfg = TrainConfig.model_validate(cell.train)
            op = choose_operational(
                get_model(cell.model), cfg, gpus_of.get(cell.model, 1), gpu_memory_gb, cell.method
            )
            train = done[key] = resolve_train(cfg, op).model_dump(mode="json")
        if train != cell.train:
            cell.train = train
            cell._spec = None  # rebuilt from the resolved train config on first use


def plan_rows(
    loaded: LoadedStudy,
    peak_tflops: float | None = None,
    mfu: float | None = None,
    profile: str | None = None,
) -> dict[str, Any]:
    if peak_tflops is None or mfu is None:
        p, m = cluster_speed(loaded, profile)
        peak_tflops = peak_tflops or p
        mfu = mfu or m
    # Cells share TrainConfig dicts (the loader caches them): estimate once per distinct
    # (model, train config) and scale by samples; 100,000 cells plan in about a second.
    cfg_cache: dict[int, TrainConfig] = {}
    per_sample: dict[tuple[str, int, str], Any] = {}
    gpu_memory_gb, gpus_of, max_gpus = cluster_memory(loaded, profile)
    eval_ranks = cluster_eval_ranks(loaded, profile)
    memory: dict[tuple[str, int, str], dict[str, Any]] = {}  # per (model, config, method)
    eval_stages = [f"eval/{n}" for n in loaded.eval_names]
    clip_only = {
        f"eval/{e['name'] or e['task']}" for e in loaded.evals if e["task"] in CLIP_ONLY_TASKS
    }
    stages_of = {
        name: ([f"filter:{j.key}"] if (j := loaded.filter_for_name(name)) else [])
        + ["train", *eval_stages]
        for name in loaded.study.data.filters
    }
    rows: list[dict[str, Any]] = []
    eval_cost: dict[tuple[str, int, str], dict[str, Any]] = {}  # per (model, config, method)
    for cell in loaded.cells:
        cfg = cfg_cache.get(id(cell.train))
        if cfg is None:
            cfg = cfg_cache[id(cell.train)] = TrainConfig.model_validate(cell.train)
        key = (cell.model, id(cell.train), cell.method)
        unit = per_sample.get(key)
        if unit is None:
            spec = get_model(cell.model)
            unit = per_sample[key] = estimate(
                spec, cfg, cfg.batch_size, peak_tflops=peak_tflops, mfu=mfu, method=cell.method
            )
            memory[key] = plan_memory(spec, cfg, gpus_of.get(cell.model, 1), gpu_memory_gb,
                                      max_gpus, cell.method)  # fmt: skip
        mem = memory[key]
        if key not in eval_cost:
            eval_cost[key] = price_evals(loaded, cell.model, cfg, eval_ranks, gpu_memory_gb,
                                         peak_tflops, mfu)  # fmt: skip
        iterations = -(-cell.samples_seen // cfg.batch_size)
        stages = stages_of[cell.data_filter]
        if cell.method != "clip":  # zero-shot and retrieval run on CLIP cells only
            stages = [x for x in stages if x not in clip_only]
        if cell.adapt:  # its own stage, after the base cell's training, at its token count
            iterations = cell.adapt["iterations"]
            stages = [
                f"after {cell.adapt['from']}:train",
                *stages[1 if stages[0].startswith("filter:") else 0 :],
            ]
        scale = iterations / unit.iterations  # unit: one step
        est = unit
        rows.append(
            {
                "uid": cell.uid,
                "method": cell.method,
                "model": cell.model,
                "params": est.params,
                "head_params": est.head_params,
                "samples_seen": cell.samples_seen,
                "data_filter": cell.data_filter,
                "batch_size": cfg.batch_size,
                "iterations": iterations,
                "flops_per_sample": est.flops_per_sample,
                "flops": est.total_flops * scale,
                "gpu_hours": est.gpu_hours * scale,
                "checkpoint_bytes": est.checkpoint_bytes,
                "stages": stages,
                "axes": cell.axes,
                "memory": mem,  # shared by the cells of one (model, config): one key a row
                "evals": eval_cost[key],
                "eval_gpu_hours": sum(
                    e.get("gpu_hours_total") or 0.0 for e in eval_cost[key].values()
                ),
                **adaptation_fields(cell),
            }
        )
    totals = {
        "cells": len(rows),
        "flops": sum(r["flops"] for r in rows),
        "gpu_hours": sum(r["gpu_hours"] for r in rows),
        "checkpoint_bytes": sum(r["checkpoint_bytes"] for r in rows),
        "eval_gpu_hours": sum(r["eval_gpu_hours"] for r in rows),
    }
    return {
        "study": loaded.study.name,
        "cluster": profile or loaded.study.cluster,
        "peak_tflops": peak_tflops,
        "mfu": mfu,
        "cells": rows,
        "totals": totals,
    }


def adaptation_fields(cell: Any) -> dict[str, Any]:
    """An adaptation cell's row fields: its resolution and the base cell it continues from."""
    if not cell.adapt:
        return {}
    return {"resolution": cell.adapt["resolution"], "init_from": cell.adapt["from"]}


def price_evals(
    loaded: LoadedStudy, model: str, cfg: TrainConfig, gpus: int, gpu_memory_gb: float,
    peak_tflops: float, mfu: float,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """The VQA evaluations' estimates (``study/vqa_cost.py``) by stage, for one model;
    ``gpus``: the ranks of the profile's evaluation job, which a VQA evaluation uses unless its
    placement is 'single' (``vqa_cost.eval_world``)."""
    out = {}
    for ev in loaded.evals:
        if ev["task"] != "vqa":
            continue
        vcfg = VqaEval.model_validate(ev)
        n = [x for x in (vcfg.stage1_samples, vcfg.stage2_samples) if x is not None]
        size = vcfg.image_size or cfg.crops.global_size
        out[f"eval/{vcfg.stage_name}"] = price_vqa(
            vcfg, gpus=eval_world(vcfg.placement, gpus), gpu_memory_gb=gpu_memory_gb, peak_tflops=peak_tflops, mfu=mfu,
            encoder_forward_flops=backbone_forward_flops(get_model(model), size),
            images=sum(n) if n else None,
        )  # fmt: skip
    return out


def _extra_axes(plan: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for row in plan["cells"]:
        for k in row["axes"]:
            if k not in ("model", "samples_seen", "data_filter") and k not in names:
                names.append(k)
    return names


def _num(x: float) -> str:
    """Readable at every scale: 3 significant digits when small, thousands separators when large."""
    if x == 0:
        return "0"
    return f"{x:,.1f}" if abs(x) >= 100 else f"{x:.3g}"


def to_table(plan: dict[str, Any]) -> str:
    from tabulate import tabulate

    extra = _extra_axes(plan)
    headers = [
        "uid",
        "model",
        "params",
        "samples",
        "filter",
        *extra,
        "iters",
        "FLOPs",
        "GPU-h",
        "eval GPU-h",
        "ckpt GB",
        "GPUs",
        "micro",
        "ckpt",
        "GB/GPU",
        "stages",
    ]
    body = []
    for r in plan["cells"]:
        body.append(
            [
                r["uid"],
                r["model"],
                format_count(r["params"]),
                format_count(r["samples_seen"]),
                r["data_filter"],
                *[r["axes"].get(k, "") for k in extra],
                format_count(r["iterations"]),
                f"{r['flops']:.3g}",
                _num(r["gpu_hours"]),
                _num(r["eval_gpu_hours"]),
                _num(r["checkpoint_bytes"] / 1e9),
                r["memory"]["gpus"],
                _micro(r["memory"]),
                ("yes" if r["memory"]["activation_checkpointing"] else "no")
                + ("*" if "activation_checkpointing" in r["memory"]["auto"] else ""),
                f"{r['memory']['memory_bytes'] / 1e9:,.1f}"
                + ("!" if r["memory"]["memory_fits"] is False else ""),
                " > ".join(r["stages"]),
            ]
        )
    t = plan["totals"]
    body.append(
        [
            "total",
            f"{t['cells']} cells",
            "",
            "",
            "",
            *[""] * len(extra),
            "",
            f"{t['flops']:.3g}",
            _num(t["gpu_hours"]),
            _num(t["eval_gpu_hours"]),
            _num(t["checkpoint_bytes"] / 1e9),
            "",
            "",
            "",
            "",
            "",
        ]
    )
    note = f"GPU-hours at {plan['mfu']:.0%} of {plan['peak_tflops']:g} TFLOP/s per GPU (cluster profile {plan['cluster']!r})."
    return tabulate(body, headers=headers, disable_numparse=True) + "\n" + note + _memory_note(plan)


def _micro(mem: dict[str, Any]) -> str:
    """Micro-batch x accumulation steps, '*' when the plan chose it ('auto')."""
    star = "*" if "micro_batch" in mem["auto"] else ""
    return f"{mem['micro_batch']}x{mem['accumulation']}{star}"


def _memory_note(plan: dict[str, Any]) -> str:
    """One line per model and config whose estimate exceeds the GPU memory, with the fix."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for row in plan["cells"]:
        if row["memory"]["memory_fits"] is False:
            seen.setdefault((row["model"], row["memory"]["memory_fix"]), row["memory"])
    lines = [
        f"\n! {m}: {r['memory_bytes'] / 1e9:,.0f} GB per GPU estimated on {r['gpus']} GPUs "
        f"({r['strategy']}, micro-batch {r['micro_batch']}) does not fit; {fix}"
        for (m, fix), r in seen.items()
    ]
    return "".join(lines) + (
        "\nGB/GPU: estimated peak per GPU (webssl_cli/study/memory.py). micro: images per GPU"
        " per pass x accumulation steps; ckpt: activation checkpointing; * chosen to fit the"
        " GPU memory (train.micro_batch / train.dist.activation_checkpointing: auto)."
        if plan["cells"]
        else ""
    )


def to_json(plan: dict[str, Any]) -> str:
    return json.dumps(plan, indent=2, sort_keys=True)


def to_csv(plan: dict[str, Any]) -> str:
    extra = _extra_axes(plan)
    out = io.StringIO()
    fields = [
        "uid",
        "model",
        "params",
        "head_params",
        "samples_seen",
        "data_filter",
        *extra,
        "batch_size",
        "iterations",
        "flops_per_sample",
        "flops",
        "gpu_hours",
        "eval_gpu_hours",
        "checkpoint_bytes",
        "stages",
    ]
    mem_fields = ["gpus", "strategy", "micro_batch", "accumulation", "activation_checkpointing",
                  "auto", "memory_bytes", "memory_fits", "memory_fix"]  # fmt: skip
    writer = csv.DictWriter(out, fieldnames=fields + mem_fields, lineterminator="\n")
    writer.writeheader()
    for r in plan["cells"]:
        row = {k: r[k] for k in fields if k in r and k not in extra}
        row.update({k: r["axes"].get(k, "") for k in extra})
        row["stages"] = " > ".join(r["stages"])
        row.update({k: r["memory"][k] for k in mem_fields})
        row["auto"] = " ".join(r["memory"]["auto"])
        writer.writerow(row)
    return out.getvalue()
