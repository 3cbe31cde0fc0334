"""It learns: train on the smoke study's synthetic corpus, then kNN against random init.

Generates (once, cached under ``--data``) the smoke study's data: 1000 unlabelled web-like
images and a labelled set of natural images (10 shape classes), as ``studies/smoke.yaml``
does. For each samples budget it trains a DINOv2 encoder with the bundled trainer
(``webssl_cli.train.loop.train``) on a preset plus overrides, then reports:

- the teacher's target entropy at the end, against log K (log K = the uniform assignment);
- 20-NN top-1 (DINO's weighted vote, the study's kNN eval on the last CLS token, at the
  global crop size) of the trained teacher and of two random-init encoders of the same size:
  the registry's (what the study's random-init baseline evaluates) and one with the training
  config's LayerScale setting (the same network as the trained one at step 0);
- the trained - random difference with a paired bootstrap 95% interval over validation images
  (1000 replicates, percentile), and between budgets the larger - smaller difference.

    .venv/bin/python benchmarks/train_learns.py --model vit-pico --samples 2000,4000 \
        --train '{"layerscale": null}' [--preset smoke] [--out /tmp/learns] [--json res.jsonl]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from webssl_cli.data.stream import expand_urls
from webssl_cli.data.synth import shard_pattern, synthesize
from webssl_cli.rundir import CellDir
from webssl_cli.specs.presets import preset_settings
from webssl_cli.specs.registry import get_model
from webssl_cli.specs.train import TrainConfig


def smoke_data(root: Path, n_web: int, n_labelled: int, seed: int = 0) -> tuple[str, str]:
    """Shard patterns of the web corpus and the labelled set (the smoke study's sources at
    ``seed`` 0; another seed gives a fresh corpus and labelled set to choose settings on)."""
    out = []
    for name, kw in (
        ("web", {"n": n_web, "seed": 2 * seed, "shard_size": 125}),
        (
            "labelled",
            {"n": n_labelled, "seed": 2 * seed + 1, "shard_size": 500, "mix": {"natural": 1.0}},
        ),
    ):
        d = root / f"{name}-{kw['n']}" if seed == 0 else root / f"{name}-{kw['n']}-s{seed}"
        done = d / "done"
        if not done.exists():
            shutil.rmtree(d, ignore_errors=True)
            paths = synthesize(d, image_size=96, **kw)  # type: ignore[arg-type]
            done.write_text(shard_pattern(paths))
        out.append(done.read_text())
    return out[0], out[1]


def correct(encoder: Any, train: Any, val: Any, size: int, token: str = "cls") -> np.ndarray:
    """Per validation image: 1 if the 20-NN vote is right, on the last CLS token (DINOv2's kNN
    protocol) or on the average-pooled patch tokens (``token="avgpool"``)."""
    from webssl_cli.eval.features import extract
    from webssl_cli.eval.knn import knn_predict

    ftr = extract(encoder, train.images, size)
    fva = extract(encoder, val.images, size)
    a, b = (ftr.cls[:, -1], fva.cls[:, -1]) if token == "cls" else (ftr.avgpool, fva.avgpool)
    pred = knn_predict(a, torch.tensor(train.labels), b)
    return (pred == torch.tensor(val.labels)).numpy().astype(float)


def relabel_by_colour(labelled: str, *sets: Any) -> None:
    """Replace each image's label by the colour of its class object (the last one drawn)."""
    from webssl_cli.data.shards import iter_shards, list_shards

    colour = {s.key: s.meta()["objects"][-1]["color"] for s in iter_shards(list_shards(labelled))}
    index = {c: i for i, c in enumerate(sorted(set(colour.values())))}
    for s in sets:
        s.labels = [index[colour[k]] for k in s.keys]


def paired_ci(a: np.ndarray, b: np.ndarray, reps: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of mean(a - b) under a paired bootstrap over examples."""
    rng = np.random.default_rng(seed)
    d = a - b
    idx = rng.integers(0, len(d), (reps, len(d)))
    means = d[idx].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_one(args: argparse.Namespace, web: str, cfg: TrainConfig, samples: int) -> dict[str, Any]:
    from webssl_cli.train.loop import train

    spec = get_model(args.model)
    run = CellDir(args.out / f"{args.model}-{samples}")
    shutil.rmtree(run.root, ignore_errors=True)  # a fresh run, never a resume
    t0, c0, k0 = time.time(), time.process_time(), _children_cpu()
    state = train(run, spec, cfg, expand_urls(web), samples, seed=args.seed, method=args.method)
    # CPU seconds of this process plus the finished data-loading workers: the shared machine
    # makes wall time meaningless, CPU time is what a cell costs.
    wall, cpu = time.time() - t0, time.process_time() - c0 + _children_cpu() - k0
    lines = [json.loads(x) for x in run.metrics_jsonl.read_text().splitlines()]
    return {"state": state, "wall_s": wall, "cpu_s": cpu, "steps": lines[-1]["step"],
            "entropy_end": lines[-1].get("teacher_entropy", math.nan),
            "marginal_end": lines[-1].get("teacher_marginal_entropy", math.nan),
            "loss_start": lines[0]["loss"], "loss_end": lines[-1]["loss"],
            "export": str(run.backbone_export)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="vit-pico")
    ap.add_argument("--samples", default="2000,4000", help="comma-separated budgets")
    ap.add_argument("--preset", default="smoke")
    ap.add_argument(
        "--method",
        choices=("webdino", "clip", "mae"),
        default="webdino",
        help="objective; the preset's settings for it (specs.presets.preset_settings)",
    )
    ap.add_argument("--train", default="{}", help="TrainConfig overrides (JSON) on the preset")
    ap.add_argument("--n-web", type=int, default=1000)
    ap.add_argument("--n-labelled", type=int, default=1500)
    ap.add_argument("--data", type=Path, default=Path("/tmp/webssl-smoke-data"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/webssl-learns"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-seed", type=int, default=0,
                    help="0: the smoke study's corpus; another value: a fresh validation corpus")  # fmt: skip
    ap.add_argument("--tag", default="")
    ap.add_argument("--token", choices=("cls", "avgpool"), default="cls")
    ap.add_argument("--eval-size", type=int, help="image side for the kNN (default: global crop)")
    ap.add_argument("--json", type=Path, help="append one JSON line per budget here")
    ap.add_argument("--label", choices=("shape", "colour"), default="shape",
                    help="what the kNN predicts: the shape class (the study's kNN) or the class "
                         "object's colour (what colour-keeping augmentations teach)")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(1)
    web, labelled = smoke_data(args.data, args.n_web, args.n_labelled, args.data_seed)
    overrides = json.loads(args.train)
    cfg = TrainConfig.model_validate(preset_settings(args.preset, args.method) | overrides)
    spec = get_model(args.model)
    size = args.eval_size or cfg.crops.global_size

    from webssl_cli.eval.encoders import Encoder, load_own, random_encoder
    from webssl_cli.eval.features import load_labelled
    from webssl_cli.train.vit import build_backbone

    tr, va = load_labelled(labelled)
    if args.label == "colour":
        relabel_by_colour(labelled, tr, va)
    torch.manual_seed(args.seed)
    same = Encoder(build_backbone(spec, layerscale=cfg.layerscale), name="rand", width=spec.width,
                   patch=spec.patch, img_size=spec.img_size)  # fmt: skip
    rand = {"registry": correct(random_encoder(args.model, args.seed), tr, va, size, args.token),
            "same-config": correct(same, tr, va, size, args.token)}  # fmt: skip
    logk = math.log(cfg.dino_head.n_prototypes)
    prev = None
    for samples in [int(s) for s in args.samples.split(",")]:
        r = run_one(args, web, cfg, samples)
        ok = correct(load_own(Path(r["export"])), tr, va, size, args.token)
        row = {"tag": args.tag, "label": args.label, "model": args.model, "samples": samples, "train": overrides,
               "n_val": len(va), "log_k": logk, **{k: v for k, v in r.items() if k != "export"},
               "entropy_ratio": r["entropy_end"] / logk, "knn_trained": float(ok.mean())}  # fmt: skip
        for name, c in rand.items():
            row[f"knn_random_{name}"] = float(c.mean())
            row[f"diff_{name}_ci"] = paired_ci(ok, c)
        if prev is not None:
            row["diff_vs_prev_budget_ci"] = paired_ci(ok, prev)
        prev = ok
        print(
            f"{args.tag:14s} {args.model:9s} {samples:6d} steps {r['steps']:4d} H/logK {row['entropy_ratio']:.3f} "
            f"knn {ok.mean() * 100:5.1f} rand(reg) {rand['registry'].mean() * 100:5.1f} "
            f"rand(same) {rand['same-config'].mean() * 100:5.1f} d(same) "
            f"[{row['diff_same-config_ci'][0] * 100:+.1f},{row['diff_same-config_ci'][1] * 100:+.1f}] "
            + (f"d(budget) [{row['diff_vs_prev_budget_ci'][0] * 100:+.1f},{row['diff_vs_prev_budget_ci'][1] * 100:+.1f}] " if prev is not None and "diff_vs_prev_budget_ci" in row else "")
            + f"{r['wall_s']:.0f}s wall {r['cpu_s']:.0f}s cpu",
            flush=True,
        )  # fmt: skip
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
