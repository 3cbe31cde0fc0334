"""The segmentation and depth evaluations of one cell: features of the encoder and of its
random-init twin on the same images, the probe on each, result rows, per-image outcomes and
(segmentation) per-image class counts. ``run.run_eval`` calls ``run_dense``.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from webssl_cli.eval.dense_data import DenseSet, load_dense
from webssl_cli.eval.dense_features import DenseFeatures, extract_dense
from webssl_cli.eval.segmentation import HEADS
from webssl_cli.outcomes import Outcome
from webssl_cli.rundir import atomic_write_bytes
from webssl_cli.specs.evals import DepthEval, SegmentationEval

log = logging.getLogger(__name__)
CountRow = tuple[str, str, str, list[int], list[int]]


def cached_features(encoder: Any, data: DenseSet, size: int, n_blocks: int, batch: int,
                    cache: Path | None) -> DenseFeatures:  # fmt: skip
    """Features of ``data``, loaded from ``cache`` when it holds them (weights only)."""
    if cache is not None and cache.exists():
        try:
            blob = torch.load(cache, weights_only=True)
            return DenseFeatures(blob["patches"], blob["cls"])
        except Exception as exc:  # noqa: BLE001 - any unreadable cache is rebuilt
            log.warning("feature cache %s does not load (%s); computing it again", cache, exc)
    f = extract_dense(encoder, data.images, size, n_blocks=n_blocks, batch_size=batch)
    if cache is not None:
        buf = io.BytesIO()
        torch.save({"patches": f.patches, "cls": f.cls}, buf)
        atomic_write_bytes(cache, buf.getvalue())
    return f


def run_dense(
    cfg: SegmentationEval | DepthEval,
    source: str,
    encoder: Any,
    size: int,
    twin: Callable[[], Any | None],
    cache_dir: Path | None = None,
    cache_key: Callable[[str], str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, float], list[Outcome], list[CountRow]]:
    """Rows, details, timings, outcomes and count rows of the probe on ``encoder`` and on each
    baseline (``twin()``: the random-init twin, or None when there is none)."""
    t0 = time.time()
    train, val = load_dense(source, cfg.task, cfg.max_images)
    n_blocks = HEADS[cfg.head]
    encoders: list[tuple[str, Any]] = [("encoder", encoder)]
    details: dict[str, Any] = {"n_train": len(train), "n_val": len(val), "head": cfg.head,
                               "image_size": size}  # fmt: skip
    for b in cfg.baselines:
        tw = twin()
        if tw is None:
            details.setdefault("baselines_skipped", {})[b] = (
                "the encoder is not a webssl checkpoint: its training initialisation is unknown"
            )
            continue
        encoders.append((b, tw.to(encoder.device)))
    timings: dict[str, float] = {"load_s": time.time() - t0}
    rows: list[dict[str, Any]] = []
    outcomes: list[Outcome] = []
    counts: list[CountRow] = []
    for variant, enc in encoders:
        t = time.time()
        paths = [None, None] if cache_dir is None or cache_key is None else [
            cache_dir / f".dense-{cache_key(f'{variant}/{split}')}.pt" for split in ("train", "val")]  # fmt: skip
        ftr = cached_features(enc, train, size, n_blocks, cfg.batch_size, paths[0])
        fva = cached_features(enc, val, size, n_blocks, cfg.batch_size, paths[1])
        timings[f"{variant}_features_s"] = time.time() - t
        t = time.time()
        if isinstance(cfg, SegmentationEval):
            r, d, o, c = _segmentation(cfg, variant, train, val, ftr, fva, size)
            counts += c
        else:
            r, d, o = _depth(cfg, variant, train, val, ftr, fva, size)
        timings[f"{variant}_probe_s"] = time.time() - t
        rows += [x if variant == "encoder" else {**x, "variant": variant} for x in r]
        outcomes += o
        if variant == "encoder":
            details.update(d)
        else:
            details.setdefault("baseline_details", {})[variant] = d
    return rows, details, timings, outcomes, counts


def _segmentation(cfg: SegmentationEval, variant: str, train: DenseSet, val: DenseSet,
                  ftr: DenseFeatures, fva: DenseFeatures, size: int
                  ) -> tuple[list[dict[str, Any]], dict[str, Any], list[Outcome], list[CountRow]]:  # fmt: skip
    from webssl_cli.eval.dense_metrics import miou_shares
    from webssl_cli.eval.segmentation import seg_probe

    ignore = train.ignore_label if cfg.ignore_label is None else cfg.ignore_label
    n_classes = (
        cfg.n_classes
        or len(train.class_names)
        or 1 + max(int(t[t != ignore].max(initial=0)) for t in train.targets + val.targets)
    )
    res = seg_probe(ftr, train.targets, fva, val.targets, n_classes=n_classes, head=cfg.head,
                    lrs=cfg.lrs, epochs=cfg.epochs, batch_size=cfg.head_batch,
                    label_size=cfg.label_size or size, ignore_index=ignore)  # fmt: skip
    shares = miou_shares(res.inter, res.union)
    bench = cfg.dataset
    outcomes = [Outcome(variant, bench, k, float(v)) for k, v in zip(val.keys, shares, strict=True)]
    counts = [(variant, bench, k, i.tolist(), u.tolist())
              for k, i, u in zip(val.keys, res.inter, res.union, strict=True)]  # fmt: skip
    union = res.union.sum(0)
    per_class = {(train.class_names[c] if c < len(train.class_names) else str(c)):
                 float(res.inter[:, c].sum() / union[c]) for c in range(n_classes) if union[c] > 0}  # fmt: skip
    row = {"benchmark": bench, "category": None, "metric": "miou", "value": res.miou}
    details = {"best_lr": res.lr, "grid": res.grid, "n_classes": n_classes, "ignore_label": ignore,
               "iou_per_class": per_class}  # fmt: skip
    return [row], details, outcomes, counts


def _depth(cfg: DepthEval, variant: str, train: DenseSet, val: DenseSet, ftr: DenseFeatures,
           fva: DenseFeatures, size: int
           ) -> tuple[list[dict[str, Any]], dict[str, Any], list[Outcome]]:  # fmt: skip
    from webssl_cli.eval.depth import METRICS, depth_probe

    res = depth_probe(ftr, train.targets, fva, val.targets, head=cfg.head, mode=cfg.mode,
                      n_bins=cfg.n_bins, lrs=cfg.lrs, epochs=cfg.epochs, batch_size=cfg.head_batch,
                      label_size=cfg.label_size or size, min_depth=cfg.min_depth,
                      max_depth=cfg.max_depth, crop=cfg.crop, upsample=cfg.bins_upsample)  # fmt: skip
    rows, outcomes = [], []
    for m in METRICS:
        # one benchmark name per metric: outcomes are matched to a score by its benchmark
        bench = f"{cfg.dataset}/{m}"
        rows.append({"benchmark": bench, "category": None, "metric": m, "value": res.scores[m]})
        outcomes += [Outcome(variant, bench, k, float(p[m]))
                     for k, p in zip(val.keys, res.per_image, strict=True) if p is not None]  # fmt: skip
    skipped = sum(p is None for p in res.per_image)
    details = {"best_lr": res.lr, "grid_rmse": res.grid, "mode": cfg.mode, "crop": cfg.crop,
               "max_depth": cfg.max_depth, "images_without_valid_depth": skipped,
               "valid_pixels": int(np.sum([p["n"] for p in res.per_image if p is not None]))}  # fmt: skip
    return rows, details, outcomes
