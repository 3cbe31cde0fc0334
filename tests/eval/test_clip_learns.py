"""CLIP learns on the CPU in a few minutes: zero-shot accuracy and retrieval on held-out
synthetic images (another seed's corpus, its validation split) against the random-init twin of
both towers, side by side on the same images, with 95% intervals of the paired difference.

Run: ``pytest -m slow -s tests/eval/test_clip_learns.py`` (prints the table).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from webssl_cli.data.synth import shard_pattern, synthesize
from webssl_cli.eval.run import run_eval
from webssl_cli.rundir import CellDir
from webssl_cli.specs.cell import CellData, CellSpec
from webssl_cli.specs.presets import PRESETS
from webssl_cli.specs.train import TrainConfig
from webssl_cli.train.loop import train_cell

STEPS = 400
RECIPE = {
    "batch_size": 64, "base_lr": 4e-3, "lr_scaling": "none", "min_lr": 1e-5, "warmup_iters": 20,
    "weight_decay": 0.1, "weight_decay_end": 0.1, "drop_path": 0.0, "layerscale": None,
    "patch_embed_lr_mult": 1.0, "clip_grad": 1.0,
    "crops": {"global_size": 48, "global_scale": [0.6, 1.0], "n_local": 0, "local_size": 16},
    "clip": {"text_layers": 3, "context_length": 24, "vocab_size": 1000, "crop_scale": [0.6, 1.0]},
    "checkpoint_every": 1000, "metrics_every": 25, "num_workers": 1,
}  # fmt: skip


def paired_interval(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Mean of a - b and its 95% normal interval (paired over the same examples)."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    m = sum(d) / len(d)
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / max(len(d) - 1, 1))
    half = 1.96 * sd / math.sqrt(len(d))
    return m, m - half, m + half


def _by_variant(cell: Path, name: str) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for line in (cell / "eval" / f"{name}.examples.jsonl").read_text().splitlines():
        r = json.loads(line)
        out.setdefault(r["benchmark"], {}).setdefault(r["variant"], {})[r["example"]] = r["value"]
    return out


@pytest.mark.slow
def test_clip_beats_its_random_init_twin_on_held_out_images(tmp_path: Path) -> None:
    train = shard_pattern(
        synthesize(tmp_path / "train", n=2048, seed=0, shard_size=256, image_size=64)
    )
    held = shard_pattern(
        synthesize(tmp_path / "held", n=1000, seed=1, shard_size=500, image_size=64)
    )
    spec = CellSpec.build(
        uid="clip", model="vit-pico", samples_seen=64 * STEPS,
        train=TrainConfig.model_validate(PRESETS["test"] | RECIPE),
        data=CellData(source="synth", shards=train), seed=0, method="clip",
        evals=[{"task": "zeroshot", "batch_size": 128}, {"task": "retrieval", "batch_size": 128}],
        sources={"synth-labelled": {"shards": held}},
    )  # fmt: skip
    cell = tmp_path / "clip"
    CellDir(cell).write_cell(spec)
    assert train_cell(cell) == "done"
    lows: dict[str, float] = {}
    for name in ("zeroshot", "retrieval"):
        out = run_eval(cell, name)
        for bench, variants in _by_variant(cell, name).items():
            keys = sorted(variants["encoder"])
            enc = [variants["encoder"][k] for k in keys]
            rnd = [variants["random-init"][k] for k in keys]
            m, lo, hi = paired_interval(enc, rnd)
            lows[bench] = lo
            print(f"{bench:28s} n={len(keys):4d} encoder {sum(enc) / len(enc):.3f} "
                  f"random-init {sum(rnd) / len(rnd):.3f} difference {m:+.3f} [{lo:+.3f}, {hi:+.3f}]")  # fmt: skip
        if name == "zeroshot":
            chance = out["details"]["chance_top1"]
            print(f"zero-shot chance (majority class) {chance:.3f}")
    # zero-shot top-1 and recall@5 both ways: the paired 95% interval excludes no gain
    assert lows["synth-labelled"] > 0
    assert lows["synth-labelled-i2t-r5"] > 0 and lows["synth-labelled-t2i-r5"] > 0
