"""``run_eval(cell_dir, name)``: the eval stage of one cell, the entry point jobs call.

Reads ``cell.json`` (the eval config under ``evals`` whose stage name is ``name``, data
``sources``), loads ``train/teacher_backbone.pt``, runs the task and writes
``eval/<name>.json`` atomically (contract in docs/architecture.md), updating the stage
``eval/<name>`` in status.json as it goes.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from webssl_cli.errors import UserError
from webssl_cli.eval.config import EvalConfig, KnnEval, LinearEval, VqaEval
from webssl_cli.rundir import CellDir, atomic_write_json, now_iso


def eval_config(
    spec: dict[str, Any], name: str, where: str = "cell.json"
) -> KnnEval | LinearEval | VqaEval:
    """The eval of ``spec['evals']`` whose stage name is ``name``."""
    adapter: TypeAdapter[Any] = TypeAdapter(EvalConfig)
    names = []
    for i, raw in enumerate(spec.get("evals") or []):
        try:
            cfg = adapter.validate_python(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise UserError(f"{where}: evals.{i}.{loc}: {err['msg']}") from exc
        if cfg.stage_name == name:
            return cfg  # type: ignore[no-any-return]
        names.append(cfg.stage_name)
    raise UserError(
        f"{where}: no eval named {name!r}; this cell has: {', '.join(names) or '(none)'}"
    )


def settings_hash(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def image_size_for(cfg: Any, spec: dict[str, Any], encoder: Any) -> int:
    """The eval's image size: its own, else the cell's global crop size, else the model's."""
    crops = ((spec.get("train") or {}).get("crops") or {}).get("global_size")
    return int(cfg.image_size or crops or encoder.img_size)


def run_eval(cell_dir: Path, name: str) -> dict[str, Any]:
    cell = CellDir(cell_dir)
    spec = cell.read_spec()
    cfg = eval_config(spec, name, str(cell.cell_json))
    stage = f"eval/{name}"
    started, t0 = now_iso(), time.time()
    cell.update_stage(stage, state="running", started=started, host=socket.gethostname())
    try:
        out = _run(cell, spec, cfg, name, started, t0)
    except Exception as exc:
        cell.update_stage(
            stage,
            state="failed",
            ended=now_iso(),
            error=" ".join(f"{type(exc).__name__}: {exc}".split())[:500],
        )
        raise
    cell.update_stage(stage, state="done", ended=out["ended"], error=None)
    return out


def _run(
    cell: CellDir, spec: dict[str, Any], cfg: Any, name: str, started: str, t0: float
) -> dict[str, Any]:
    import torch

    from webssl_cli.eval.encoders import load_own

    if not cell.backbone_export.exists():
        raise UserError(
            f"{cell.backbone_export}: missing; the train stage writes it (run it first)"
        )
    encoder = load_own(cell.backbone_export)
    size = image_size_for(cfg, spec, encoder)
    settings = {
        **cfg.model_dump(mode="json"),
        "image_size": size,
        "encoder": encoder.name,
        "model": spec.get("model"),
    }
    if getattr(cfg, "dataset", None):
        from webssl_cli.eval.features import resolve_source

        settings["dataset_path"] = resolve_source(cfg.dataset, spec)
    shash = settings_hash(settings)
    details: dict[str, Any] = {}
    categories: dict[str, float] = {}
    timings: dict[str, float] = {}
    with torch.inference_mode(False):
        if isinstance(cfg, (KnnEval, LinearEval)):
            results, details, timings = _probe(cfg, spec, encoder, size)
        else:
            from webssl_cli.eval.vqa import run_vqa

            out = run_vqa(cell.eval_dir / f"{name}.cache", cfg, encoder, spec, size, shash)
            results, categories, timings, details = (
                out["results"],
                out["categories"],
                out["timings"],
                out["details"],
            )
    timings["total_s"] = time.time() - t0
    doc = {
        "task": cfg.task,
        "name": name,
        "cell": cell.uid,
        "settings": settings,
        "settings_hash": shash,
        "results": results,
        "categories": categories,
        "timings": timings,
        "details": details,
        "started": started,
        "ended": now_iso(),
    }
    atomic_write_json(cell.eval_json(name), doc)
    return doc


def _probe(
    cfg: KnnEval | LinearEval, spec: dict[str, Any], encoder: Any, size: int
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, float]]:
    import torch

    from webssl_cli.eval.features import extract, load_labelled, resolve_source

    t = time.time()
    train, val = load_labelled(resolve_source(cfg.dataset, spec), cfg.max_images)
    n_blocks = max(cfg.n_last_blocks) if isinstance(cfg, LinearEval) else 1
    ftr = extract(encoder, train.images, size, n_blocks=n_blocks, batch_size=cfg.batch_size)
    fva = extract(encoder, val.images, size, n_blocks=n_blocks, batch_size=cfg.batch_size)
    ytr, yva = torch.tensor(train.labels), torch.tensor(val.labels)
    timings = {"features_s": time.time() - t}
    t = time.time()
    details: dict[str, Any] = {
        "n_train": len(train),
        "n_val": len(val),
        "n_classes": len(set(train.labels) | set(val.labels)),
    }
    if isinstance(cfg, KnnEval):
        from webssl_cli.eval.knn import knn_top1

        top1 = knn_top1(
            ftr.cls[:, -1], ytr, fva.cls[:, -1], yva, k=cfg.k, temperature=cfg.temperature
        )
    else:
        from webssl_cli.eval.linear import linear_probe

        best, top1, grid = linear_probe(
            ftr,
            ytr,
            fva,
            yva,
            lrs=cfg.lrs,
            n_last_blocks=cfg.n_last_blocks,
            avgpool=cfg.avgpool,
            epochs=cfg.epochs,
            seed=0,
        )
        details.update(best=best.label, grid=grid)
    timings["probe_s"] = time.time() - t
    return (
        [{"benchmark": cfg.dataset, "category": None, "metric": "top1", "value": top1}],
        details,
        timings,
    )
