"""Dense probes on the synthetic scenes: a trained encoder against its random-init twin.

Writes a dense synthetic set (``webssl data synth --dense``), then runs the segmentation probe
(mIoU) and the depth probe (RMSE, AbsRel, δ1) on the frozen features of a trained webssl
checkpoint and of the same architecture initialised as the trainer does (same seed), on the same
images, and prints each score with a 95% bootstrap interval over val images (mIoU recomputed
from the resampled images' class counts) and the paired difference trained - random.

    OMP_NUM_THREADS=1 python benchmarks/dense_probes.py CHECKPOINT [--n 400] [--size 96]

CHECKPOINT: a cell's train/teacher_backbone.pt (e.g. a cell of the smoke study).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def twin_of(path: Path, seed: int) -> object:
    from webssl_cli.eval.encoders import Encoder, spec_from_dict
    from webssl_cli.train.vit import build_backbone

    spec = spec_from_dict(torch.load(path, map_location="cpu", weights_only=True)["spec"])
    torch.manual_seed(seed)
    return Encoder(build_backbone(spec, drop_path=0.0, layerscale=spec.layerscale),
                   name=f"{spec.name}-random-init", width=spec.width, patch=spec.patch,
                   img_size=spec.img_size)  # fmt: skip


def paired(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))
    reps = a[idx].mean(1) - b[idx].mean(1)
    return (
        float(a.mean() - b.mean()),
        float(np.quantile(reps, 0.025)),
        float(np.quantile(reps, 0.975)),
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--size", type=int, default=96, help="evaluation image size")
    ap.add_argument("--seed", type=int, default=0, help="the trainer's seed (the twin's init)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--head", default="linear")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument(
        "--bins-upsample",
        type=int,
        default=1,
        help="depth bins normalised at the patch grid x this (DINOv2: 4; 1 is 16x cheaper)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    from webssl_cli.data.dense import synthesize_dense
    from webssl_cli.eval.dense_data import load_dense
    from webssl_cli.eval.dense_features import extract_dense
    from webssl_cli.eval.dense_metrics import bootstrap_miou
    from webssl_cli.eval.depth import depth_probe
    from webssl_cli.eval.encoders import load_own
    from webssl_cli.eval.segmentation import HEADS, seg_probe

    encoders = {
        "trained": load_own(args.checkpoint),
        "random-init": twin_of(args.checkpoint, args.seed),
    }
    lrs = (1e-3, 3e-3, 1e-2)
    with tempfile.TemporaryDirectory() as tmp:
        synthesize_dense(tmp, n=args.n, seed=1, shard_size=256, image_size=args.size)
        src = f"{tmp}/shard-*.tar"
        seg_tr, seg_va = load_dense(src, "segmentation")
        dep_tr, dep_va = load_dense(src, "depth")
    print(f"{len(seg_tr)} train / {len(seg_va)} val images at {args.size} px; head {args.head}; "
          f"checkpoint {args.checkpoint}")  # fmt: skip
    nb = HEADS[args.head]
    seg, seg3, dep = {}, {}, {}
    for name, enc in encoders.items():
        t = time.time()
        ftr = extract_dense(enc, seg_tr.images, args.size, n_blocks=nb)
        fva = extract_dense(enc, seg_va.images, args.size, n_blocks=nb)
        s = seg_probe(ftr, seg_tr.targets, fva, seg_va.targets, n_classes=len(seg_tr.class_names),
                      head=args.head, lrs=lrs, epochs=args.epochs, label_size=args.size)  # fmt: skip
        d = depth_probe(ftr, dep_tr.targets, fva, dep_va.targets, head=args.head, lrs=lrs,
                        epochs=args.epochs, label_size=args.size, upsample=args.bins_upsample)  # fmt: skip
        # the same features, classes merged to wall / floor / object: objectness without the
        # shape's identity (which a tiny encoder may not know yet)
        merged = (
            [np.minimum(t, 2) for t in seg_tr.targets],
            [np.minimum(t, 2) for t in seg_va.targets],
        )
        s3 = seg_probe(ftr, merged[0], fva, merged[1], n_classes=3, head=args.head, lrs=lrs,
                       epochs=args.epochs, label_size=args.size)  # fmt: skip
        seg[name], seg3[name], dep[name] = s, s3, d
        m, lo, hi = bootstrap_miou(s.inter, s.union, n_boot=args.n_boot)
        m3, lo3, hi3 = bootstrap_miou(s3.inter, s3.union, n_boot=args.n_boot)
        print(f"{name:12s} mIoU {100 * m:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] (lr {s.lr:g})  "
              f"3-class mIoU {100 * m3:.1f} [{100 * lo3:.1f}, {100 * hi3:.1f}]  "
              + "  ".join(f"{k} {v:.3f}" for k, v in d.scores.items()) + f" (lr {d.lr:g})  "
              f"[{time.time() - t:.0f} s]")  # fmt: skip
        iou = s.inter.sum(0) / np.maximum(s.union.sum(0), 1)
        print(
            "  IoU per class: "
            + " ".join(f"{c}={100 * v:.0f}" for c, v in zip(seg_tr.class_names, iou, strict=False))
        )
    # paired over the same val images: mIoU recomputed per replicate from both sets of counts
    from webssl_cli.eval.dense_metrics import miou

    for label, res in (("mIoU", seg), ("3-class mIoU", seg3)):
        a, b = res["trained"], res["random-init"]
        idx = np.random.default_rng(0).integers(0, len(a.inter), size=(args.n_boot, len(a.inter)))
        diffs = np.array([miou(a.inter[r], a.union[r]) - miou(b.inter[r], b.union[r]) for r in idx])
        print(f"{label} trained - random: {100 * (a.miou - b.miou):+.1f} "
              f"[{100 * np.quantile(diffs, 0.025):+.1f}, {100 * np.quantile(diffs, 0.975):+.1f}]")  # fmt: skip
    for metric in ("delta1", "rmse", "absrel"):
        va = np.array([p[metric] for p in dep["trained"].per_image if p is not None])
        vb = np.array([p[metric] for p in dep["random-init"].per_image if p is not None])
        v, lo, hi = paired(va, vb, args.n_boot, 1)
        print(f"{metric} trained - random: {v:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
