"""The synthetic VQA suite on CPU: a briefly trained tiny encoder vs the same encoder at
random init, both frozen, through the same MLLM evaluation (same LM seed, steps, data).

    .venv/bin/python benchmarks/vqa_synthetic.py [--trained PATH/teacher_backbone.pt]
        [--model vit-pico] [--train-samples 30000] [--images 3000] [--out results.json]

Without --trained it trains one with the trainer's loop (smoke preset). Prints the table:
benchmark, category, metric, n, majority-answer baseline ("chance"), uniform chance where the
answer set is closed, trained, random; then the category means. At this scale the ordering of
trained vs random is a finding, not a requirement: nothing here is tuned to favour either.

Measured 2026-11-29 with the defaults (vit-pico trained 30K samples with the smoke preset;
3,000 images at 64 px, 614 test images; 16 tokens; LM 128 wide x 2 layers; 100 + 600 steps,
batch 64; ~550 s per eval on a shared 2-core machine). Majority = always the most common
training answer. kNN top-1 (13 classes, same data): trained 0.292, random 0.157.

| benchmark | category | n | majority | trained | random |
|---|---|---|---|---|---|
| synth-kind | General | 614 | 0.48 | 0.73 | 0.73 |
| synth-object | General | 474 | 0.11 | 0.11 | 0.13 |
| synth-text | General | 614 | 0.52 | 0.74 | 0.74 |
| synth-chart-max | Knowledge | 45 | 0.31 | 0.31 | 0.31 |
| synth-chart-type | Knowledge | 46 | 0.37 | 0.74 | 0.61 |
| synth-object-mc | Knowledge | 474 | 0.25 | 0.27 | 0.26 |
| synth-chart-value | OCR & Chart | 46 | 0.07 | 0.07 | 0.07 |
| synth-doc-field | OCR & Chart | 94 | 0.01 | 0.00 | 0.00 |
| synth-word | OCR & Chart | 180 | 0.02 | 0.01 | 0.01 |
| synth-color | Vision-Centric | 450 | 0.20 | 0.40 | 0.39 |
| synth-count | Vision-Centric | 474 | 0.27 | 0.27 | 0.27 |
| synth-position | Vision-Centric | 229 | 0.48 | 0.48 | 0.48 |
| General / Knowledge / OCR & Chart / Vision-Centric / Average | | | | .530/.441/.024/.383/.344 | .535/.395/.024/.380/.333 |
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

# Uniform chance where the answers come from a closed set (choices or a fixed vocabulary).
UNIFORM = {
    "synth-kind": 1 / 5, "synth-text": 1 / 2, "synth-object": 1 / 10, "synth-object-mc": 1 / 4,
    "synth-chart-type": 1 / 3, "synth-chart-max": None, "synth-color": 1 / 10, "synth-count": 1 / 4,
    "synth-position": 1 / 2, "synth-word": None, "synth-chart-value": None, "synth-doc-field": None,
}  # fmt: skip


def vqa_settings(args: argparse.Namespace) -> dict:
    return {
        "task": "vqa", "tokens": args.tokens, "lm_width": args.lm_width, "lm_layers": args.lm_layers, "lm_heads": 4,
        "adapter_depth": 2, "stage1_steps": args.stage1_steps, "stage1_lr": 1e-3, "stage1_batch": 64,
        "stage2_steps": args.stage2_steps, "stage2_lr": 1e-3, "stage2_batch": 64, "max_new_tokens": 6,
        "batch_size": 128, "seed": 0,
    }  # fmt: skip


def make_cell(
    root: Path, shards: str, model: str, evals: list[dict], train: dict, samples: int
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    spec = {
        "uid": root.name, "model": model, "samples_seen": samples,
        "data": {"source": "synth", "shards": shards, "filter": "none", "filter_dir": None},
        "train": train, "evals": evals, "sources": {"synth-vqa": {"shards": shards}}, "seed": 0,
    }  # fmt: skip
    (root / "cell.json").write_text(json.dumps(spec))
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trained", type=Path, help="a teacher_backbone.pt; default: train one")
    ap.add_argument("--model", default="vit-pico")
    ap.add_argument("--train-samples", type=int, default=30000)
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--lm-width", type=int, default=128)
    ap.add_argument("--lm-layers", type=int, default=2)
    ap.add_argument("--stage1-steps", type=int, default=100)
    ap.add_argument("--stage2-steps", type=int, default=600)
    ap.add_argument("--work", type=Path, default=Path("runs/bench-vqa-synthetic"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from webssl_cli.data.synth import shard_pattern, synthesize
    from webssl_cli.eval.encoders import save_own
    from webssl_cli.eval.run import run_eval
    from webssl_cli.specs.presets import PRESETS
    from webssl_cli.specs.registry import get_model
    from webssl_cli.specs.train import TrainConfig
    from webssl_cli.train.vit import build_backbone

    work = args.work
    data_dir = work / "data"
    if not data_dir.exists():
        synthesize(data_dir, args.images, 0, 500, 64, None)
    shards = shard_pattern(sorted(data_dir.glob("*.tar")))
    train_cfg = TrainConfig.model_validate(PRESETS["smoke"]).model_dump(mode="json")
    evals = [vqa_settings(args)]
    spec = get_model(args.model)

    trained = work / "trained"
    if args.trained is not None:
        shutil.rmtree(trained, ignore_errors=True)
        make_cell(trained, shards, args.model, evals, train_cfg, args.train_samples)
        (trained / "train").mkdir(parents=True, exist_ok=True)
        shutil.copy(args.trained, trained / "train" / "teacher_backbone.pt")
    elif not (trained / "train" / "teacher_backbone.pt").exists():
        from webssl_cli.train.loop import train_cell

        make_cell(trained, shards, args.model, evals, train_cfg, args.train_samples)
        t = time.time()
        state = train_cell(trained)
        print(
            f"trained {args.model} for {args.train_samples} samples in {time.time() - t:.0f} s: {state}",
            file=sys.stderr,
        )
    random_cell = make_cell(work / "random", shards, args.model, evals, train_cfg, 0)
    if not (random_cell / "train" / "teacher_backbone.pt").exists():  # caches key on this file
        torch.manual_seed(0)
        save_own(
            build_backbone(spec, layerscale=spec.layerscale),
            spec,
            random_cell / "train" / "teacher_backbone.pt",
        )

    outs = {}
    for label, cell in (("trained", trained), ("random", random_cell)):
        t = time.time()
        outs[label] = run_eval(cell, "vqa")
        print(
            f"{label}: eval {time.time() - t:.0f} s {json.dumps(outs[label]['timings'])}",
            file=sys.stderr,
        )

    tr, ra = ({r["benchmark"]: r for r in outs[k]["results"]} for k in ("trained", "random"))
    chance = outs["trained"]["details"]["chance"]
    print(
        f"\n| benchmark | category | metric | n | majority | uniform | trained ({args.model}) | random init |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for b in sorted(tr, key=lambda b: (tr[b]["category"], b)):
        u = UNIFORM.get(b)
        print(
            f"| {b} | {tr[b]['category']} | {tr[b]['metric']} | {tr[b]['n']} | {chance.get(b, float('nan')):.2f} | "
            f"{'-' if u is None else f'{u:.2f}'} | {tr[b]['value']:.2f} | {ra[b]['value']:.2f} |"
        )
    print("\n| category | trained | random init |\n|---|---|---|")
    for c in ("General", "Knowledge", "OCR & Chart", "Vision-Centric", "Average"):
        print(
            f"| {c} | {outs['trained']['categories'].get(c, float('nan')):.3f} | {outs['random']['categories'].get(c, float('nan')):.3f} |"
        )
    if args.out:
        args.out.write_text(json.dumps(outs, indent=2, default=str))


if __name__ == "__main__":
    main()
