"""Training presets: named partial overrides of TrainConfig defaults (the paper's recipe).

A study picks one with ``preset:``; its ``train:`` block and the grid override it.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # The Web-DINO / DINOv2 ViT-g recipe, unchanged (TrainConfig's defaults).
    "webdino": {},
    # CPU smoke studies: 48 px global / 24 px local crops (patch 8: 6x6 and 3x3 patches), small
    # heads, short schedules. A faster teacher (momentum 0.98) and a longer last-layer freeze
    # let a run of a few hundred steps move away from the uniform prototype assignment.
    "smoke": {
        "batch_size": 32,
        "base_lr": 1e-3,
        "lr_scaling": "none",
        "min_lr": 1e-5,
        "warmup_iters": 15,
        "weight_decay": 0.04,
        "weight_decay_end": 0.1,
        "momentum_teacher": 0.98,
        "teacher_temp_warmup_iters": 30,
        "dino_head": {"n_prototypes": 1024, "bottleneck": 64, "hidden": 256},
        "ibot_head": {"n_prototypes": 1024, "bottleneck": 64, "hidden": 256},
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
