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
import logging
import socket
import time
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from webssl_cli.errors import UserError
from webssl_cli.outcomes import Outcome, counts_path, examples_path, write_counts, write_outcomes
from webssl_cli.rundir import CellDir, atomic_write_bytes, atomic_write_json, now_iso
from webssl_cli.specs.evals import (
    DepthEval,
    EvalConfig,
    KnnEval,
    LinearEval,
    RetrievalEval,
    SegmentationEval,
    VqaEval,
    ZeroShotEval,
)

log = logging.getLogger(__name__)


def eval_config(
    spec: dict[str, Any], name: str, where: str = "cell.json"
) -> KnnEval | LinearEval | SegmentationEval | DepthEval | VqaEval | ZeroShotEval | RetrievalEval:
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
    """The eval's image size: its own, else the cell's resolution (the study's resolution axis;
    an adaptation cell is evaluated at the side it adapted to), else its global crop size, else
    the model's."""
    crops = ((spec.get("train") or {}).get("crops") or {}).get("global_size")
    return int(cfg.image_size or spec.get("resolution") or crops or encoder.img_size)


def run_eval(cell_dir: Path, name: str) -> dict[str, Any]:
    """Every task of the job calls this: a VQA evaluation spreads over the job's ranks
    (``eval.vqa_dist``), a probe runs on rank 0 alone; rank 0 alone writes status and results."""
    from webssl_cli.eval.vqa_dist import job_rank

    cell = CellDir(cell_dir)
    spec = cell.read_spec()
    cfg = eval_config(spec, name, str(cell.cell_json))
    lead = job_rank() == 0
    if not lead and not isinstance(cfg, VqaEval):
        return {}  # the probes run in one process; another task of the job has nothing to do
    stage = f"eval/{name}"
    started, t0 = now_iso(), time.time()
    if lead:
        cell.update_stage(stage, state="running", started=started, host=socket.gethostname())
    try:
        out = _run(cell, spec, cfg, name, started, t0)
    except Exception as exc:
        if lead:
            cell.update_stage(
                stage,
                state="failed",
                ended=now_iso(),
                error=" ".join(f"{type(exc).__name__}: {exc}".split())[:500],
            )
        raise
    if lead:
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
    if isinstance(cfg, VqaEval):
        from webssl_cli.eval.vqa_dist import joined

        with joined() as ranks:  # this rank's device; the group for the whole evaluation
            return _document(cell, spec, cfg, name, started, t0, encoder.to(ranks.device), ranks)
    from webssl_cli.device import pick_device

    return _document(cell, spec, cfg, name, started, t0, encoder.to(pick_device()), None)


def _document(
    cell: CellDir,
    spec: dict[str, Any],
    cfg: Any,
    name: str,
    started: str,
    t0: float,
    encoder: Any,
    ranks: Any,
) -> dict[str, Any]:
    """Run the evaluation on ``encoder`` (on its device) and write ``eval/<name>.json`` (rank 0
    of ``ranks``, the VQA evaluation's job ranks; None for the probes)."""
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
    extra: dict[str, Any] = {}  # baselines' categories and gains over them (VQA)
    if isinstance(cfg, (KnnEval, LinearEval)):
        results, details, timings, outcomes = _probe(cfg, spec, encoder, size, cell)
        # outcomes first: an eval json on disk implies its outcomes are there too
        write_outcomes(examples_path(cell.eval_json(name)), outcomes)
    elif isinstance(cfg, (ZeroShotEval, RetrievalEval)):
        from webssl_cli.eval.zeroshot import run_clip_eval

        results, details, timings, outcomes = run_clip_eval(cfg, spec, encoder, size, cell)
        write_outcomes(examples_path(cell.eval_json(name)), outcomes)
    elif isinstance(cfg, (SegmentationEval, DepthEval)):
        from webssl_cli.eval.dense_run import run_dense

        wid = _weights_id(cfg, cell)
        results, details, timings, outcomes, counts = run_dense(
            cfg, settings["dataset_path"], encoder, size, lambda: _random_twin(cfg, spec, cell),
            cell.eval_dir, lambda tag: settings_hash({"settings": shash, "weights": wid, "part": tag}),
        )  # fmt: skip
        if counts:
            write_counts(counts_path(cell.eval_json(name)), counts)
        write_outcomes(examples_path(cell.eval_json(name)), outcomes)
    else:
        from webssl_cli.eval.vqa import run_vqa

        # The cache also depends on the encoder's weights: a retrained cell starts afresh.
        cache_key = settings_hash({"settings": shash, "weights": _weights_id(cfg, cell)})
        out = run_vqa(cell.eval_dir / f"{name}.cache", cfg, encoder, spec, size, cache_key, ranks)
        results, categories, timings, details = (
            out["results"],
            out["categories"],
            out["timings"],
            out["details"],
        )
        extra = {k: out[k] for k in ("categories_by_variant", "gains") if k in out}
    timings["total_s"] = time.time() - t0
    doc = {
        "task": cfg.task,
        "name": name,
        "cell": cell.uid,
        "settings": settings,
        "settings_hash": shash,
        "results": results,
        "categories": categories,
        **extra,
        "timings": timings,
        "details": details,
        "started": started,
        "ended": now_iso(),
    }
    if ranks is None or ranks.lead:
        atomic_write_json(cell.eval_json(name), doc)
    return doc


_FEATURES_VERSION = 2  # cache layout: + val keys


def _features(cfg: KnnEval | LinearEval, encoder: Any, size: int, n_blocks: int, cache: Path,
              source: str) -> dict[str, Any]:  # fmt: skip
    """Train/val features, labels, class names and val keys; cached at ``cache``."""
    import torch

    from webssl_cli.eval.features import Features, extract, load_labelled

    if cache.exists():
        # Weights only: tensors (in Features records), labels and names; a cache that does not
        # load that way (damaged, or planted to run code) is computed again.
        try:
            with torch.serialization.safe_globals([Features]):
                return torch.load(cache, weights_only=True)  # type: ignore[no-any-return]
        except Exception as exc:  # noqa: BLE001 - any unreadable cache is rebuilt
            log.warning("feature cache %s does not load (%s); computing it again", cache, exc)
    train, val = load_labelled(source, cfg.max_images)
    blob = {
        "train": extract(encoder, train.images, size, n_blocks=n_blocks, batch_size=cfg.batch_size),
        "val": extract(encoder, val.images, size, n_blocks=n_blocks, batch_size=cfg.batch_size),
        "ytr": torch.tensor(train.labels), "yva": torch.tensor(val.labels),
        "names": train.class_names, "kva": list(val.keys),
    }  # fmt: skip
    buf = io.BytesIO()
    torch.save(blob, buf)
    atomic_write_bytes(cache, buf.getvalue())
    return blob


def _probe(
    cfg: KnnEval | LinearEval, spec: dict[str, Any], encoder: Any, size: int, cell: CellDir
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, float], list[Outcome]]:
    """The probe on the encoder and on each baseline: result rows, details, timings, and every
    validation image's outcome (1.0 correct, 0.0 wrong) per variant."""
    from webssl_cli.eval.features import resolve_source

    t = time.time()
    source = resolve_source(cfg.dataset, spec)
    # kNN and linear of one cell share features: the last 4 blocks are kept (DINOv2's largest
    # setting), cached under eval/ keyed by everything they depend on.
    n_blocks = max(4, *cfg.n_last_blocks) if isinstance(cfg, LinearEval) else 4
    ckpt = Path(cfg.encoder) if cfg.encoder else cell.backbone_export
    base_key = {"source": source, "max_images": cfg.max_images, "size": size, "n_blocks": n_blocks,
                "v": _FEATURES_VERSION}  # fmt: skip
    key = settings_hash({**base_key, "encoder": str(cfg.encoder or ckpt), "weights": _weights_id(cfg, cell)})  # fmt: skip
    blob = _features(cfg, encoder, size, n_blocks, cell.eval_dir / f".features-{key}.pt", source)
    timings = {"features_s": time.time() - t}
    ytr, yva = blob["ytr"], blob["yva"]
    details: dict[str, Any] = {
        "n_train": len(ytr),
        "n_val": len(yva),
        "n_classes": len(set(ytr.tolist()) | set(yva.tolist())),
        "features": feature_stats(blob["train"].cls[:, -1], blob["val"].cls[:, -1]),
    }
    t = time.time()
    top1, correct, extra = _score(cfg, blob)
    details.update(extra)
    variants = [("encoder", top1, correct)]
    for b in cfg.baselines:
        twin = _random_twin(cfg, spec, cell)
        if twin is None:
            details.setdefault("baselines_skipped", {})[b] = (
                "the encoder is not a webssl checkpoint: its training initialisation is unknown"
            )
            continue
        tb = time.time()
        twin_seed = _cell_seed(spec)
        tkey = settings_hash({**base_key, "random-init": twin.name, "seed": twin_seed,
                              "weights": _weights_id(cfg, cell)})  # fmt: skip
        tblob = _features(cfg, twin, size, n_blocks, cell.eval_dir / f".features-{tkey}.pt", source)
        b_top1, b_correct, b_extra = _score(cfg, tblob)
        details.setdefault("features_by_variant", {})[b] = feature_stats(
            tblob["train"].cls[:, -1], tblob["val"].cls[:, -1]
        )
        details.setdefault("baseline_details", {})[b] = {"seed": twin_seed, **b_extra}
        variants.append((b, b_top1, b_correct))
        timings[f"{b}_s"] = time.time() - tb
    timings["probe_s"] = time.time() - t
    rows, outcomes = [], []
    for variant, score, corr in variants:
        row = {"benchmark": cfg.dataset, "category": None, "metric": "top1", "value": score}
        rows.append(row if variant == "encoder" else {**row, "variant": variant})
        outcomes += [Outcome(variant, cfg.dataset, str(k), float(v))
                     for k, v in zip(blob["kva"], corr.tolist(), strict=True)]  # fmt: skip
    return rows, details, timings, outcomes


def _score(cfg: KnnEval | LinearEval, blob: dict[str, Any]) -> tuple[float, Any, dict[str, Any]]:
    """(top-1, per-val-image correctness (float64 tensor), details) of the probe on ``blob``."""
    ftr, fva, ytr, yva = blob["train"], blob["val"], blob["ytr"], blob["yva"]
    if isinstance(cfg, KnnEval):
        from webssl_cli.eval.knn import knn_predict

        pred = knn_predict(
            ftr.cls[:, -1], ytr, fva.cls[:, -1], k=cfg.k, temperature=cfg.temperature
        )
        correct = (pred == yva).double()
        return float(correct.mean()), correct, {}
    from webssl_cli.eval.linear import linear_probe

    best, top1, grid, correct = linear_probe(
        ftr, ytr, fva, yva, lrs=cfg.lrs, n_last_blocks=cfg.n_last_blocks, avgpool=cfg.avgpool,
        epochs=cfg.epochs, seed=0,
    )  # fmt: skip
    return top1, correct, {"best": best.label, "grid": grid}


def feature_stats(*parts: Any) -> dict[str, float]:
    """Collapse diagnostics of CLS features (N, D): effective rank (exp of the entropy of the
    normalised singular values of the centred features; 1 = all on one direction), the
    per-dimension standard deviation across images (mean and min over dimensions) and the
    features' root mean square, the scale that spread is small or large against."""
    import torch

    x = torch.cat([p.double() for p in parts])
    rms = float(x.pow(2).mean().sqrt())
    x = x - x.mean(0, keepdim=True)
    s = torch.linalg.svdvals(x)
    # float32 features: directions below 1e-6 of the largest are round-off, not spread
    s = s[s > 1e-6 * float(s.max())] if len(s) and float(s.max()) > 0 else s[:0]
    p = s / s.sum()
    nz = p[p > 0]
    rank = float(torch.exp(-(nz * nz.log()).sum())) if len(nz) else 0.0
    std = x.std(0) if len(x) > 1 else torch.zeros(x.shape[1], dtype=torch.double)
    return {"effective_rank": rank, "dim_std_mean": float(std.mean()),
            "dim_std_min": float(std.min()), "dim": int(x.shape[1]), "feature_rms": rms}  # fmt: skip


def _cell_seed(spec: dict[str, Any]) -> int:
    train = spec.get("train") or {}
    return int(train.get("seed", spec.get("seed", 0)) or 0)


def _random_twin(cfg: Any, spec: dict[str, Any], cell: CellDir) -> Any:
    """The cell's architecture initialised as the trainer initialises it (same seed), untrained;
    None for an encoder that is not a webssl checkpoint (Hugging Face, timm)."""
    import torch

    from webssl_cli.eval.encoders import Encoder, spec_from_dict

    path = Path(cfg.encoder) if cfg.encoder else cell.backbone_export
    if not path.is_file():
        return None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    if not isinstance(ck, dict) or "spec" not in ck:
        return None
    mspec = spec_from_dict(ck["spec"])
    from webssl_cli.specs.train import TrainConfig
    from webssl_cli.train.vit import build_backbone

    try:
        tcfg = TrainConfig(**(spec.get("train") or {}))
        drop_path, layerscale = tcfg.drop_path, tcfg.layerscale
    except (ValidationError, TypeError):
        drop_path, layerscale = 0.0, mspec.layerscale
    # the trainer seeds, then builds the student's backbone first (train.loop, ssl_model)
    torch.manual_seed(_cell_seed(spec))
    backbone = build_backbone(mspec, drop_path=drop_path, layerscale=layerscale)
    return Encoder(backbone, name=f"{mspec.name}-random-init", width=mspec.width,
                   patch=mspec.patch, img_size=mspec.img_size)  # fmt: skip


def _weights_id(cfg: Any, cell: CellDir) -> str:
    """Identity of the encoder's weights for caches: path, size and mtime of its file(s)."""
    path = Path(cfg.encoder) if cfg.encoder else cell.backbone_export
    files = sorted(path.glob("*")) if path.is_dir() else [path]
    parts = [f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.exists()]
    return settings_hash({"files": parts or [str(cfg.encoder)]})
