"""Training presets: named partial overrides of TrainConfig defaults (the paper's recipe).

A study picks one with ``preset:``; its ``train:`` block and the grid override it.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # The Web-DINO / DINOv2 ViT-g recipe, unchanged (TrainConfig's defaults).
    "webdino": {},
    # CPU smoke and scaling studies: 48 px global / 24 px local crops (patch 8: 6x6 and 3x3
    # patches), small heads, short schedules. Measured with benchmarks/train_learns.py on the
    # smoke corpus: with LayerScale at 1e-5 every image's CLS token starts out the same and the
    # Sinkhorn targets stay exactly uniform (entropy log K); without LayerScale the teacher's
    # prototype scores differ between images only by about its temperature (0.04-0.07), so the
    # targets stay within 5% of log K. A colder teacher (0.02 -> 0.03) and 256 prototypes give
    # targets at 0.80-0.85 log K. Within a few hundred steps this does not yet make the CLS
    # token beat a random-init network on kNN (see the benchmark), so studies built on this
    # preset must compare against that baseline rather than assume learning.
    "smoke": {
        "batch_size": 32,
        "base_lr": 2e-3,
        "lr_scaling": "none",
        "min_lr": 1e-5,
        "warmup_iters": 15,
        "weight_decay": 0.04,
        "weight_decay_end": 0.1,
        "momentum_teacher": 0.98,
        "teacher_temp": 0.02,
        "teacher_temp_end": 0.03,
        "teacher_temp_warmup_iters": 30,
        "layerscale": None,
        "dino_head": {"n_prototypes": 256, "bottleneck": 64, "hidden": 256},
        "ibot_head": {"n_prototypes": 256, "bottleneck": 64, "hidden": 256},
        "drop_path": 0.0,
        "freeze_last_layer_iters": 30,
        "crops": {"global_size": 48, "local_size": 24, "n_local": 4},
        "metrics_every": 5,
        "checkpoint_every": 100,
        "keep_checkpoints": 2,
        "num_workers": 1,
        "threads": 1,
    },
    # Unit tests: the smallest thing that exercises every code path.
    "test": {
        "batch_size": 8,
        "base_lr": 1e-3,
        "lr_scaling": "none",
        "warmup_iters": 2,
        "teacher_temp_warmup_iters": 2,
        "dino_head": {"n_prototypes": 64, "bottleneck": 16, "hidden": 32},
        "ibot_head": {"n_prototypes": 64, "bottleneck": 16, "hidden": 32},
        "drop_path": 0.0,
        "freeze_last_layer_iters": 1,
        "crops": {"global_size": 32, "local_size": 16, "n_local": 2},
        "metrics_every": 1,
        "checkpoint_every": 2,
        "keep_checkpoints": 2,
        "num_workers": 0,
        "threads": 1,
    },
}
