"""It learns: a 3-5 minute CPU run on labelled synthetic shapes, then a kNN probe.

Trains the bundled DINOv2 trainer (``webssl_cli.train.loop.train``) on webdataset shards of
coloured shapes (4 classes: disc, square, triangle, stripes; colours and positions random),
then reports: the loss at the start and the end, the teacher's target entropy (per image and
of the batch mean), the std of the L2-normalised CLS features (collapse -> 0, spread over the
sphere -> 1/sqrt(D)), and a 20-NN cosine kNN probe (DINO's weighted vote) on held-out images
for the trained teacher vs the same network at its random initialisation.

    .venv/bin/python benchmarks/train_learns.py [--samples 8000] [--out /tmp/learns]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "train"))

from shapes import N_CLASSES, draw, write_shards  # noqa: E402

from webssl_cli.data.stream import expand_urls  # noqa: E402
from webssl_cli.rundir import CellDir  # noqa: E402
from webssl_cli.specs.presets import PRESETS  # noqa: E402
from webssl_cli.specs.registry import get_model  # noqa: E402
from webssl_cli.specs.train import TrainConfig  # noqa: E402
from webssl_cli.train.batches import to_model_input  # noqa: E402
from webssl_cli.train.vit import build_backbone  # noqa: E402

# A 250-step run needs a shorter teacher-momentum horizon and a last layer frozen for half the
# run: with the smoke preset's 10 frozen iterations the student's prototypes rotate to match the
# near-uniform early targets (DINO loss pinned at log K) before the features separate.
SHORT_RUN = {
    "batch_size": 32,
    "base_lr": 2e-3,
    "warmup_iters": 25,
    "teacher_temp_warmup_iters": 50,
    "freeze_last_layer_iters": 125,
    "momentum_teacher": 0.98,
}


def labelled_set(n: int, seed: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_CLASSES, n)
    imgs = np.stack([draw(rng, int(c), size) for c in labels])
    return torch.from_numpy(imgs), torch.from_numpy(labels)


@torch.no_grad()
def features(model, imgs: torch.Tensor, pool: str = "cls") -> torch.Tensor:
    """L2-normalised CLS tokens, or the mean of the normalised patch tokens."""
    model.eval()
    out = []
    for i in range(0, len(imgs), 256):
        f = model.forward_features(to_model_input(imgs[i : i + 256], torch.device("cpu")))
        out.append(f["x_norm_clstoken"] if pool == "cls" else f["x_norm_patchtokens"].mean(1))
    return torch.nn.functional.normalize(torch.cat(out), dim=-1)


def knn(train_f, train_y, test_f, test_y, k: int = 20, t: float = 0.07) -> float:
    sim = test_f @ train_f.t()
    top, idx = sim.topk(k, dim=1)
    votes = torch.zeros(len(test_f), N_CLASSES).scatter_add_(1, train_y[idx], (top / t).exp())
    return float((votes.argmax(1) == test_y).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--samples", type=int, default=8000)
    ap.add_argument("--model", default="vit-pico")
    ap.add_argument("--out", type=Path, default=Path("/tmp/webssl-learns"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--probe-only", action="store_true", help="reuse the run in --out")
    ap.add_argument(
        "--train",
        default=json.dumps(SHORT_RUN),
        help="TrainConfig overrides (JSON) on top of the smoke preset; default: the short-run settings",
    )
    args = ap.parse_args()
    if not args.probe_only:
        shutil.rmtree(args.out, ignore_errors=True)
    spec = get_model(args.model)
    size = spec.img_size
    pattern = str(args.out / "data" / "shard-{000000..000007}.tar")
    if not args.probe_only:
        pattern = write_shards(args.out / "data", n_shards=8, per_shard=500, size=96, seed=1)
    cfg = TrainConfig.model_validate(
        PRESETS["smoke"] | {"threads": args.threads, "num_workers": args.workers, "metrics_every": 10,
                            "checkpoint_every": 200, "crops": {"global_size": size, "local_size": size // 2, "n_local": 4}}
        | json.loads(args.train)
    )  # fmt: skip
    run = CellDir(args.out / "cell")
    t0 = time.time()
    from webssl_cli.train.loop import train

    state = train(run, spec, cfg, expand_urls(pattern), args.samples, seed=0)  # resumes: a no-op
    wall = time.time() - t0
    lines = [json.loads(x) for x in run.metrics_jsonl.read_text().splitlines()]
    first, last = lines[:3], lines[-3:]

    def avg(rows, key):
        return sum(r[key] for r in rows) / len(rows)

    export = torch.load(run.backbone_export, weights_only=False)
    trained = build_backbone(spec, layerscale=cfg.layerscale)
    trained.load_state_dict(export["state_dict"])
    torch.manual_seed(0)  # the loop seeds the same way before building the student/teacher
    random_init = build_backbone(spec, drop_path=cfg.drop_path, layerscale=cfg.layerscale)
    xtr, ytr = labelled_set(2000, 101, size)
    xte, yte = labelled_set(1000, 202, size)
    res = {}
    for name, model in (("random init", random_init), ("trained teacher", trained)):
        for pool in ("cls", "patch-mean"):
            ftr, fte = features(model, xtr, pool), features(model, xte, pool)
            res[f"{name}, {pool}"] = (knn(ftr, ytr, fte, yte), float(fte.std(dim=0).mean()))
    print(f"run: {state}, {args.model}, {args.samples} samples ({lines[-1]['step']} steps of {cfg.batch_size}) "
          + ("(probe only)" if args.probe_only else f"in {wall:.0f} s wall, {lines[-1]['images_per_s']:.0f} img/s at the end"))  # fmt: skip
    for key in (
        "loss",
        "dino_loss",
        "ibot_loss",
        "koleo_loss",
        "teacher_entropy",
        "teacher_marginal_entropy",
    ):
        print(f"  {key:26s} start {avg(first, key):8.4f}   end {avg(last, key):8.4f}")
    k = cfg.dino_head.n_prototypes
    print(
        f"  (log K = {np.log(k):.3f} for K = {k} prototypes; 1/sqrt(D) = {1 / np.sqrt(spec.width):.4f})"
    )
    for name, (acc, std) in res.items():
        print(f"  {name:28s} 20-NN top-1 {acc * 100:5.1f}%   std of normalised features {std:.4f}")
    print(f"  chance {100 / N_CLASSES:.1f}%")


if __name__ == "__main__":
    main()
