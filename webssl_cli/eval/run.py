"""``run_eval(cell_dir, name)``: the eval stage of one cell, the entry point jobs call.

Reads ``cell.json`` (the eval config under ``evals`` whose stage name is ``name``, data
``sources``), loads ``train/teacher_backbone.pt``, runs the task and writes
``eval/<name>.json`` atomically (contract in docs/architecture.md), updating the stage
``eval/<name>`` in status.json as it goes.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import time
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from webssl_cli.errors import UserError
from webssl_cli.rundir import CellDir, atomic_write_bytes, atomic_write_json, now_iso
from webssl_cli.specs.evals import EvalConfig, KnnEval, LinearEval, VqaEval


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

    from webssl_cli.eval.encoders import load_encoder, load_own

    threads = cfg.threads or (spec.get("train") or {}).get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    if cfg.encoder is not None:
        encoder = load_encoder(cfg.encoder)
    elif not cell.backbone_export.exists():
        raise UserError(
            f"{cell.backbone_export}: missing; the train stage writes it (run it first)"
        )
    else:
        encoder = load_own(cell.backbone_export)
    from webssl_cli.device import pick_device

    encoder = encoder.to(pick_device())  # the probes and the VQA model follow the same choice
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
    if isinstance(cfg, (KnnEval, LinearEval)):
        results, details, timings = _probe(cfg, spec, encoder, size, cell)
    else:
        from webssl_cli.eval.vqa import run_vqa

        # The cache also depends on the encoder's weights: a retrained cell starts afresh.
        cache_key = settings_hash({"settings": shash, "weights": _weights_id(cfg, cell)})
        out = run_vqa(cell.eval_dir / f"{name}.cache", cfg, encoder, spec, size, cache_key)
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
    cfg: KnnEval | LinearEval, spec: dict[str, Any], encoder: Any, size: int, cell: CellDir
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, float]]:
    import torch

    from webssl_cli.eval.features import extract, load_labelled, resolve_source

    t = time.time()
    source = resolve_source(cfg.dataset, spec)
    # kNN and linear of one cell share features: the last 4 blocks are kept (DINOv2's largest
    # setting), cached under eval/ keyed by everything they depend on.
    n_blocks = max(4, *cfg.n_last_blocks) if isinstance(cfg, LinearEval) else 4
    ckpt = Path(cfg.encoder) if cfg.encoder else cell.backbone_export
    key = settings_hash({"source": source, "max_images": cfg.max_images, "size": size, "n_blocks": n_blocks,
                         "encoder": str(cfg.encoder or ckpt), "weights": _weights_id(cfg, cell)})  # fmt: skip
    cache = cell.eval_dir / f".features-{key}.pt"
    if cache.exists():
        blob = torch.load(cache, weights_only=False)
        ftr, fva, ytr, yva, names = (
            blob["train"],
            blob["val"],
            blob["ytr"],
            blob["yva"],
            blob["names"],
        )
    else:
        train, val = load_labelled(source, cfg.max_images)
        ftr = extract(encoder, train.images, size, n_blocks=n_blocks, batch_size=cfg.batch_size)
        fva = extract(encoder, val.images, size, n_blocks=n_blocks, batch_size=cfg.batch_size)
        ytr, yva, names = torch.tensor(train.labels), torch.tensor(val.labels), train.class_names
        buf = io.BytesIO()
        torch.save({"train": ftr, "val": fva, "ytr": ytr, "yva": yva, "names": names}, buf)
        atomic_write_bytes(cache, buf.getvalue())
    timings = {"features_s": time.time() - t}
    t = time.time()
    details: dict[str, Any] = {
        "n_train": len(ytr),
        "n_val": len(yva),
        "n_classes": len(set(ytr.tolist()) | set(yva.tolist())),
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


def _weights_id(cfg: Any, cell: CellDir) -> str:
    """Identity of the encoder's weights for caches: path, size and mtime of its file(s)."""
    path = Path(cfg.encoder) if cfg.encoder else cell.backbone_export
    files = sorted(path.glob("*")) if path.is_dir() else [path]
    parts = [f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.exists()]
    return settings_hash({"files": parts or [str(cfg.encoder)]})
