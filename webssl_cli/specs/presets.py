"""Training presets: named partial overrides of TrainConfig defaults (the paper's recipe).

A study picks one with ``preset:``; its ``train:`` block and the grid override it. A preset
names a scale (``webdino``: the paper's; ``smoke``: CPU; ``test``: unit tests); a method
(``webdino``, ``clip``, ``mae``) brings its own recipe at that scale: ``preset_settings(preset,
method)`` is the preset's settings with the method's on top (METHOD_PRESETS), so ``preset:
smoke`` with method ``mae`` is the smoke CPU settings with MAE's optimiser and a small decoder.
docs/methods.md lists the values and where they come from.
"""

from __future__ import annotations

import copy
from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # The Web-DINO / DINOv2 ViT-g recipe, unchanged (TrainConfig's defaults).
    "webdino": {},
    # CPU smoke and scaling studies: 48 px global / 24 px local crops (patch 8: 6x6 and 3x3
    # patches), small heads, short schedules. Measured with benchmarks/train_learns.py
    # (docs/smoke/learning.md): with LayerScale at 1e-5 every image's CLS token starts out the
    # same and the Sinkhorn targets stay exactly uniform, so LayerScale is off; a colder teacher
    # (0.02 -> 0.03) and 256 prototypes give targets at 0.80-0.88 log K. A teacher momentum of
    # 0.9 and lr 4e-3 (DINOv2's 0.992+ would leave the teacher mostly at its initialisation
    # after a few hundred steps): kNN on the class object's colour, vit-pico at 2K samples,
    # 59.4% against 42.2% with momentum 0.98 and lr 2e-3 (random init 42.6%). The lr is 4e-3 at
    # vit-pico's width (64) and falls as 1/width (lr_width_ref): vit-micro (128) at 2e-3 went
    # from 32.2% to 43.2% kNN top-1 between 2K and 8K samples, at 4e-3 from 31.5% to 33.0%.
    # Warm-ups of 8 / 15 / 15 steps (lr / teacher temperature / frozen prototypes), not 15 /
    # 30 / 30 (half of the 63 steps of a 2K-sample run): vit-micro at 2K samples beat its random
    # init in 4 of 4 training seeds (+7.1 to +9.1 points) against 4 of 6 (+2.1 to +10.3).
    "smoke": {
        "batch_size": 32,
        "base_lr": 4e-3,
        "lr_width_ref": 64,
        "lr_scaling": "none",
        "min_lr": 1e-5,
        "warmup_iters": 8,
        "weight_decay": 0.04,
        "weight_decay_end": 0.1,
        "momentum_teacher": 0.9,
        "teacher_temp": 0.02,
        "teacher_temp_end": 0.03,
        "teacher_temp_warmup_iters": 15,
        "layerscale": None,
        "dino_head": {"n_prototypes": 256, "bottleneck": 64, "hidden": 256},
        "ibot_head": {"n_prototypes": 256, "bottleneck": 64, "hidden": 256},
        "drop_path": 0.0,
        "freeze_last_layer_iters": 15,
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

# An attempt at encoders that learn shape on the synthetic corpus (docs/smoke/learning.md): the
# `smoke` settings, DINO's loss alone (no iBOT, no KoLeo), colour jitter over the whole hue
# wheel, crops that keep the large object (global 0.6-1, local 0.15-0.5 of the image) and
# DINOv2's blur scaled to 48 px crops. With the `smoke` preset the encoders learn the object's
# colour (kNN on colour: random init of the same configuration 42.6%, trained 54.1% at 4K and
# 71.9% at 16K samples), not its shape. Chosen on a separate corpus (benchmarks/train_learns.py
# --data-seed 5), vit-pico's kNN top-1 on shape beat random init (10.2%) at 8K samples (16.2%,
# +5.9, paired 95% interval +1.8 to +9.9) and 16K (16.0%), the only one of 9 settings to;
# vit-nano at 8K did not (10.6% against 11.1%), nor did vit-pico at 16K on the smoke study's own
# corpus (9.8% against 9.2%, +0.5 [-2.8, +3.9]). Not a preset that learns shape: the best
# measured attempt, kept to reproduce those figures.
PRESETS["cpu-dino"] = PRESETS["smoke"] | {
    "base_lr": 2e-3,  # the smoke settings at the time of those measurements
    "lr_width_ref": None,
    "momentum_teacher": 0.98,
    "warmup_iters": 15,
    "teacher_temp_warmup_iters": 30,
    "freeze_last_layer_iters": 30,
    "ibot_weight": 0.0,
    "koleo_weight": 0.0,
    "crops": {
        "global_size": 48,
        "local_size": 24,
        "n_local": 4,
        "global_scale": (0.6, 1.0),
        "local_scale": (0.15, 0.5),
        "blur_scale": 48 / 224,
        "hue": 0.5,
    },
}


# What the CLIP and MAE recipes share at every scale: their own AdamW, no stochastic depth,
# no layer-wise decay or patch-embedding lr factor (DINOv2-only), a cosine to zero.
_CLIP_OPTIM: dict[str, Any] = {
    # OpenCLIP's defaults for ViT towers, which MetaCLIP's configurations keep.
    "adam_betas": (0.9, 0.98),
    "adam_eps": 1e-6,
    "weight_decay": 0.2,
    "weight_decay_end": 0.2,
    "lr_scaling": "none",
    "min_lr": 0.0,
    "drop_path": 0.0,
    "patch_embed_lr_mult": 1.0,
}
_MAE_OPTIM: dict[str, Any] = {
    # MAE's pre-training recipe (He et al. 2022, appendix A.1).
    "adam_betas": (0.9, 0.95),
    "weight_decay": 0.05,
    "weight_decay_end": 0.05,
    "lr_scaling": "linear",
    "min_lr": 0.0,
    "drop_path": 0.0,
    "patch_embed_lr_mult": 1.0,
}

METHOD_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "webdino": {},
    "clip": {
        # MetaCLIP (the paper's CLIP arm): batch 32,768, lr 4e-4, 2K warmup iterations.
        "webdino": {**_CLIP_OPTIM, "batch_size": 32768, "base_lr": 4e-4, "warmup_iters": 2000},
        "smoke": {
            **_CLIP_OPTIM,
            "base_lr": 1e-3,
            "lr_width_ref": None,  # measured at one lr for every width (tests/eval)
            "warmup_iters": 15,
            "clip": {
                "text_width": 64,
                "text_layers": 2,
                "text_heads": 2,
                "embed_dim": 64,
                "context_length": 32,
                "vocab_size": 2048,
            },
        },  # fmt: skip
        "test": {
            **_CLIP_OPTIM,
            "base_lr": 1e-3,
            "warmup_iters": 2,
            "clip": {
                "text_width": 16,
                "text_layers": 1,
                "text_heads": 2,
                "embed_dim": 16,
                "context_length": 16,
                "vocab_size": 300,
            },
        },  # fmt: skip
    },
    "mae": {
        # Web-MAE: batch 4096, peak lr 1.6e-3 (4e-4 per 1024 images, linear), 80K warmup.
        "webdino": {**_MAE_OPTIM, "batch_size": 4096, "base_lr": 4e-4, "warmup_iters": 80_000},
        "smoke": {
            **_MAE_OPTIM,
            "base_lr": 1.5e-3,
            "lr_width_ref": None,  # measured at one lr for every width (tests/train)
            "lr_scaling": "none",
            "warmup_iters": 15,
            "mae": {"decoder_width": 64, "decoder_layers": 2, "decoder_heads": 2},
        },  # fmt: skip
        "test": {
            **_MAE_OPTIM,
            "base_lr": 1e-3,
            "lr_scaling": "none",
            "warmup_iters": 2,
            "mae": {"decoder_width": 16, "decoder_layers": 1, "decoder_heads": 2},
        },  # fmt: skip
    },
}
"""Per method, per preset: the method's settings on top of the preset (see the docstring)."""
for _recipes in (METHOD_PRESETS["clip"], METHOD_PRESETS["mae"]):
    _recipes["cpu-dino"] = _recipes["smoke"]  # the CPU settings, not the paper batch


def preset_settings(preset: str, method: str = "webdino") -> dict[str, Any]:
    """The TrainConfig overrides of ``preset`` for ``method`` (a fresh dict: callers may
    modify it). A preset a method has no entry for gets the method's paper recipe on top."""
    base = copy.deepcopy(PRESETS[preset])
    recipes = METHOD_PRESETS[method]
    over = recipes.get(preset, recipes.get("webdino", {}))
    for key, value in copy.deepcopy(over).items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


# The high-resolution adaptation stage, per preset: ``iterations`` (the stage's length) and
# TrainConfig overrides applied on top of the base cell's resolved settings. An adaptation cell
# also holds the teacher temperature at the base's final value (no warmup: the teacher is
# trained), scales the crops to its resolution and starts a fresh AdamW state.
# webdino: the paper's recipe, 20K iterations at batch 2048 and lr 1.41e-5 = 1e-5 x
# sqrt(2048 / 1024) (sqrt scaling, as the base recipe). Its warmup (1,000 iterations, 5% of
# the stage) and the unfrozen prototype layer are this project's choices: the paper states
# only the three numbers above.
ADAPT_RECIPES: dict[str, dict[str, Any]] = {
    "webdino": {
        "iterations": 20_000,
        "batch_size": 2048,
        "base_lr": 1e-5,
        "lr_scaling": "sqrt",
        "warmup_iters": 1000,
        "freeze_last_layer_iters": 0,
    },
    # CPU: a few dozen steps at a tenth of the smoke preset's lr (the paper's ratio of
    # adaptation to pre-training peak lr is about 1/25; a tenth moves a few-hundred-step
    # network measurably within 30 steps).
    "smoke": {
        "iterations": 30,
        "base_lr": 2e-4,
        "warmup_iters": 5,
        "freeze_last_layer_iters": 0,
    },
    "test": {
        "iterations": 4,
        "base_lr": 1e-4,
        "warmup_iters": 1,
        "freeze_last_layer_iters": 0,
    },
}
