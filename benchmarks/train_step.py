"""Training-step benchmarks on CPU, 1 thread, fp32, interleaved A/B rounds (ABBA), medians.

(a) our ViT forward+backward on a multi-crop batch vs transformers' Dinov2Model of the same
    dimensions (SwiGLU, LayerScale, SDPA attention), each crop size as its own batch;
    the two are first checked to compute the same function (weights copied across).
(b) the full training step (teacher, student, 3 losses, clip, AdamW, EMA) of the one loop vs
    the earlier single-process loop (extracted from git: ``--baseline REV``), at the smoke
    preset (vit-pico) and on a width-192 model; each side in its own process, ABBA rounds.
(c) our multi-crop loader (decode + 2 global + 8 local crops with all augmentations, to
    normalised float) vs a plain PIL implementation of the same operations: images/s per core.

    .venv/bin/python benchmarks/train_step.py [--rounds 8] [--quick] [--only b] [--baseline REV]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from webssl_cli.specs.registry import ModelSpec  # noqa: E402
from webssl_cli.specs.train import TrainConfig  # noqa: E402


def cpu_time(fn, reps: int = 1) -> float:
    t = time.process_time()
    for _ in range(reps):
        fn()
    return (time.process_time() - t) / reps


def abba(fa, fb, rounds: int) -> tuple[float, float, float]:
    """Median times of A and B and the median of per-round ratios A/B (A B B A order)."""
    fa(), fb()  # warm up
    ta, tb, ratios = [], [], []
    for r in range(rounds):
        if r % 2 == 0:
            a, b = cpu_time(fa), cpu_time(fb)
        else:
            b, a = cpu_time(fb), cpu_time(fa)
        ta.append(a)
        tb.append(b)
        ratios.append(a / b)
    return statistics.median(ta), statistics.median(tb), statistics.median(ratios)


# ---- (a) backbone vs Hugging Face Dinov2Model ----------------------------------------------
def to_hf(state: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    out = {
        "embeddings.cls_token": state["cls_token"],
        "embeddings.mask_token": state["mask_token"],
        "embeddings.position_embeddings": state["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
        "layernorm.weight": state["norm.weight"],
        "layernorm.bias": state["norm.bias"],
    }
    for i in range(depth):
        s, h = f"blocks.{i}.", f"encoder.layer.{i}."
        for n in ("norm1", "norm2"):
            out[h + n + ".weight"], out[h + n + ".bias"] = (
                state[s + n + ".weight"],
                state[s + n + ".bias"],
            )
        for p in ("weight", "bias"):
            q, k, v = state[s + "attn.qkv." + p].chunk(3)
            out[h + "attention.q_proj." + p], out[h + "attention.k_proj." + p] = q, k
            out[h + "attention.v_proj." + p] = v
            out[h + "attention.o_proj." + p] = state[s + "attn.proj." + p]
            gate, up = state[s + "mlp.w12." + p].chunk(2)
            out[h + "mlp.gate_proj." + p], out[h + "mlp.up_proj." + p] = gate, up
            out[h + "mlp.down_proj." + p] = state[s + "mlp.w3." + p]
        out[h + "layer_scale1.lambda1"] = state[s + "ls1.gamma"]
        out[h + "layer_scale2.lambda1"] = state[s + "ls2.gamma"]
    return out


def bench_backbone(spec: ModelSpec, batch: int, n_local: int, local: int, rounds: int) -> float:
    import transformers
    from transformers import Dinov2Config, Dinov2Model

    from webssl_cli.train.vit import build_backbone

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    ours = build_backbone(spec, layerscale=1e-5)
    cfg = Dinov2Config(
        hidden_size=spec.width, num_hidden_layers=spec.depth, num_attention_heads=spec.heads,
        mlp_ratio=4, use_swiglu_ffn=True, layerscale_value=1e-5, image_size=spec.img_size,
        patch_size=spec.patch, drop_path_rate=0.0, attn_implementation="sdpa",
    )  # fmt: skip
    hf = Dinov2Model(cfg)
    assert hf.config._attn_implementation == "sdpa"
    hf.load_state_dict(to_hf(ours.state_dict(), spec.depth), strict=True)
    ours.train(), hf.train()
    g = torch.randn(2 * batch, 3, spec.img_size, spec.img_size)
    loc = torch.randn(n_local * batch, 3, local, local)
    with torch.no_grad():  # same function: proves the dimensions (and weights) match
        for x in (g, loc):
            diff = (ours.forward_features(x)["x_prenorm"] - hf(x).last_hidden_state).abs().max()
            diff = (
                (ours.norm(ours.forward_features(x)["x_prenorm"]) - hf(x).last_hidden_state)
                .abs()
                .max()
            )
            assert diff < 1e-4, f"our ViT and Dinov2Model disagree: {diff}"

    def run_ours():
        for x in (g, loc):
            ours.forward_features(x)["x_norm_patchtokens"].sum().backward()

    def run_hf():
        for x in (g, loc):
            hf(x).last_hidden_state[:, 1:].sum().backward()

    t_ours, t_hf, ratio = abba(run_ours, run_hf, rounds)
    n_params = sum(p.numel() for p in ours.parameters())
    print(f"(a) backbone fwd+bwd, {spec.width}w x {spec.depth}d SwiGLU ({n_params / 1e6:.1f}M), batch {batch}: "
          f"2x{spec.img_size} + {n_local}x{local} crops, each crop size as its own batch")  # fmt: skip
    print(f"    ours {t_ours * 1e3:.0f} ms, transformers Dinov2Model {t_hf * 1e3:.0f} ms, "
          f"ratio ours/HF = {ratio:.3f} (target <= 1.0)")  # fmt: skip
    if hasattr(ours, "forward_features_list"):  # the packed multi-crop pass (one call, all crops)

        def run_packed():
            outs = ours.forward_features_list([g, loc], [None, None])
            sum(o["x_norm_patchtokens"].sum() for o in outs).backward()

        t_p, t_hf2, ratio_p = abba(run_packed, run_hf, rounds)
        print(
            f"    packed crops: ours {t_p * 1e3:.0f} ms vs Dinov2Model {t_hf2 * 1e3:.0f} ms, ratio = {ratio_p:.3f}"
        )
    return ratio


# ---- (b) the full training step: the one loop's vs the earlier single-process loop's -------
# Each side runs in its own process (the earlier code is extracted from git), alternately.
_NEW_STEP = """
import json, sys, time, statistics, numpy as np, torch
torch.set_num_threads(1)
from webssl_cli.specs.registry import ModelSpec
from webssl_cli.specs.train import TrainConfig
a = json.loads(sys.argv[1]); spec = ModelSpec(**a["spec"]); cfg = TrainConfig.model_validate(a["cfg"])
B, c = cfg.batch_size, cfg.crops
rng = np.random.default_rng(0)
g = torch.from_numpy(rng.integers(0, 256, (2, B, c.global_size, c.global_size, 3), dtype=np.uint8))
loc = torch.from_numpy(rng.integers(0, 256, (c.n_local, B, c.local_size, c.local_size, 3), dtype=np.uint8))
"""
_NEW_STEP_BODY = """
from webssl_cli.train.batches import Batch
from webssl_cli.train.objective import RunContext
from webssl_cli.train.objectives import build_objective
from webssl_cli.train.optim import build_optimizer
from webssl_cli.train.schedules import Schedules
from webssl_cli.train.step import Step, train_step
ctx = RunContext(torch.device("cpu"), None, 0, 1000, micro=B)
obj = build_objective(spec, cfg, ctx)
state = Step(obj, build_optimizer(obj.param_groups(), ctx.device), Schedules(cfg, 1000), cfg, ctx)
batch = Batch(g, loc, {})
"""
_OLD_STEP_BODY = """
from webssl_cli.train.batches import Batch
from webssl_cli.train.loop import State, train_step
from webssl_cli.train.schedules import Schedules
from webssl_cli.train.ssl_model import Centers, build_models, param_groups
torch.manual_seed(0)
dev = torch.device("cpu")
student, teacher = build_models(spec, cfg, dev)
opt = torch.optim.AdamW(param_groups(student, cfg), lr=0.0)
state = State(student, teacher, opt, Centers(), cfg, Schedules(cfg, 1000), dev, None, 0)
batch = Batch(g, loc, None)
"""
_TIME_STEPS = """
train_step(state, batch, 10)
times = []
for it in range(11, 11 + a["steps"]):
    t = time.process_time(); train_step(state, batch, it); times.append(time.process_time() - t)
print(json.dumps(statistics.median(times)))
"""


def _baseline_tree(rev: str | None) -> str:
    """A directory holding the webssl_cli package of ``rev`` (default: the commit before the
    single-process loop was merged into the one loop)."""
    import subprocess
    import tempfile

    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
    if rev is None:
        removed = subprocess.run(
            ["git", "log", "-1", "--format=%H", "--diff-filter=D", "--",
             "webssl_cli/train/dist_loop.py"], cwd=root, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        rev = f"{removed}^"
    import atexit
    import shutil

    out = tempfile.mkdtemp(prefix="webssl-baseline-")
    atexit.register(shutil.rmtree, out, True)
    archive = subprocess.run(["git", "archive", rev, "webssl_cli"], cwd=root, capture_output=True,
                             check=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", out], input=archive, check=True)
    return out


def _step_time(pythonpath: str, body: str, spec: ModelSpec, cfg: TrainConfig, steps: int) -> float:
    import dataclasses
    import json
    import subprocess
    import sys

    arg = json.dumps({"spec": dataclasses.asdict(spec), "cfg": cfg.model_dump(mode="json"),
                      "steps": steps})  # fmt: skip
    env = {**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _NEW_STEP + body + _TIME_STEPS, arg], env=env,
                          cwd=pythonpath, capture_output=True, text=True)  # fmt: skip
    if proc.returncode:
        raise SystemExit(f"step timing in {pythonpath} failed:\n{proc.stderr[-3000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def bench_step(spec: ModelSpec, cfg: TrainConfig, rounds: int, steps: int, baseline: str) -> float:
    """Median step time of the one loop's ``train_step`` vs the earlier single-process one
    (A B B A rounds, each a fresh process timing ``steps`` steps); returns new/old."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    new = lambda: _step_time(here, _NEW_STEP_BODY, spec, cfg, steps)  # noqa: E731
    old = lambda: _step_time(baseline, _OLD_STEP_BODY, spec, cfg, steps)  # noqa: E731
    tn, to, ratios = [], [], []
    for r in range(rounds):
        a, b = (new(), old()) if r % 2 == 0 else tuple(reversed((old(), new())))
        tn.append(a)
        to.append(b)
        ratios.append(a / b)
    c, B = cfg.crops, cfg.batch_size
    ratio = statistics.median(ratios)
    print(f"(b) full training step, {spec.width}w x {spec.depth}d, batch {B} (2x{c.global_size} + "
          f"{c.n_local}x{c.local_size}), heads K={cfg.dino_head.n_prototypes}, 1 thread: "
          f"one loop {statistics.median(tn) * 1e3:.1f} ms, earlier single-process loop "
          f"{statistics.median(to) * 1e3:.1f} ms, ratio new/old = {ratio:.3f}")  # fmt: skip
    return ratio


# ---- (c) the multi-crop loader vs plain PIL ---------------------------------------------------
def make_jpegs(n: int, seed: int = 0) -> list[bytes]:
    import cv2
    import simplejpeg

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = int(rng.integers(256, 513)), int(rng.integers(256, 513))
        img = cv2.resize(
            rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8),
            (w, h),
            interpolation=cv2.INTER_CUBIC,
        )
        for _ in range(6):  # a few shapes for edges
            c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.circle(
                img,
                c,
                int(rng.integers(10, 80)),
                tuple(int(v) for v in rng.integers(0, 256, 3)),
                -1,
            )
        img = np.clip(img.astype(np.int16) + rng.integers(-12, 13, img.shape), 0, 255).astype(
            np.uint8
        )
        out.append(simplejpeg.encode_jpeg(img, quality=90, colorspace="RGB"))
    return out


MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def _normalise(crop: np.ndarray) -> np.ndarray:
    return ((crop.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)


class PlainPIL:
    """The same operations with PIL (what torchvision's transforms do on PIL images)."""

    def __init__(self, global_size=224, local_size=98, n_local=8):
        self.g, self.l, self.n = global_size, local_size, n_local

    def _jitter(self, rng, img):
        from PIL import Image, ImageEnhance

        f = (
            rng.uniform(0.6, 1.4),
            rng.uniform(0.6, 1.4),
            rng.uniform(0.8, 1.2),
            rng.uniform(-0.1, 0.1),
        )
        for op in rng.permutation(4):
            if op == 0:
                img = ImageEnhance.Brightness(img).enhance(f[0])
            elif op == 1:
                img = ImageEnhance.Contrast(img).enhance(f[1])
            elif op == 2:
                img = ImageEnhance.Color(img).enhance(f[2])
            else:
                h, s, v = img.convert("HSV").split()
                h = Image.fromarray(
                    (np.asarray(h).astype(np.int16) + int(f[3] * 255)).astype(np.uint8), "L"
                )
                img = Image.merge("HSV", (h, s, v)).convert("RGB")
        return img

    def _crop(self, rng, img, size, scale, blur_p, sol_p=0.0) -> np.ndarray:
        from PIL import Image, ImageFilter, ImageOps

        from webssl_cli.data.multicrop import crop_box

        top, left, h, w = crop_box(rng, img.height, img.width, scale)
        out = img.resize((size, size), Image.BICUBIC, box=(left, top, left + w, top + h))
        if rng.random() < 0.5:
            out = out.transpose(Image.FLIP_LEFT_RIGHT)
        if rng.random() < 0.8:
            out = self._jitter(rng, out)
        if rng.random() < 0.2:
            out = out.convert("L").convert("RGB")
        if rng.random() < blur_p:
            out = out.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.1, 2.0)))
        if rng.random() < sol_p:
            out = ImageOps.solarize(out, 128)
        return np.asarray(out)

    def __call__(self, data, rng):
        from PIL import Image

        img = Image.open(io.BytesIO(data)).convert("RGB")
        g = [
            self._crop(rng, img, self.g, (0.32, 1.0), 0.0),
            self._crop(rng, img, self.g, (0.32, 1.0), 0.9, 0.2),
        ]
        return g, [self._crop(rng, img, self.l, (0.05, 0.32), 0.5) for _ in range(self.n)]


def bench_loader(rounds: int, n_images: int) -> float:
    from webssl_cli.data.multicrop import MultiCrop
    from webssl_cli.specs.train import CropConfig

    jpegs = make_jpegs(n_images)
    ours_t = MultiCrop(CropConfig())
    pil_t = PlainPIL()

    def run(t, normalise):
        def f():
            for i, d in enumerate(jpegs):
                g, loc = t(d, np.random.default_rng(i))
                if normalise:
                    [_normalise(x) for x in g + loc]

        return f

    # As shipped: both give uint8 crops (ours normalises later, batched on the device).
    t_ours, t_pil, ratio = abba(run(ours_t, False), run(pil_t, False), rounds)
    print(
        f"(c) multi-crop loader, {n_images} JPEGs 256-512 px q90, decode + 2x224 + 8x98 crops, all augmentations, 1 core:"
    )
    print(f"    uint8 crops: ours {n_images / t_ours:.1f} img/s, plain PIL {n_images / t_pil:.1f} img/s, "
          f"speed-up = {1 / ratio:.2f}x (target >= 3)")  # fmt: skip
    t_on, t_pn, ratio_n = abba(run(ours_t, True), run(pil_t, True), rounds)
    print(f"    + float normalisation on the CPU in both: ours {n_images / t_on:.1f} img/s, "
          f"PIL {n_images / t_pn:.1f} img/s, speed-up = {1 / ratio_n:.2f}x")  # fmt: skip
    return 1 / ratio


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    ap.add_argument("--only", choices=["a", "b", "c"], action="append")
    ap.add_argument("--baseline", help="git revision of the earlier loop for (b)")
    args = ap.parse_args()
    parts = args.only or ["a", "b", "c"]
    width, depth = (96, 2) if args.quick else (192, 4)
    hidden = int(4 * width * 2 / 3 + 7) // 8 * 8
    spec = ModelSpec("bench", width, depth, width // 64, "swiglu", hidden, patch=14, img_size=224)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, fp32, median of {args.rounds} ABBA rounds"
    )
    if "a" in parts:
        bench_backbone(spec, batch=1 if args.quick else 2, n_local=8, local=98, rounds=args.rounds)
    if "b" in parts:
        from webssl_cli.specs.presets import PRESETS
        from webssl_cli.specs.registry import get_model

        baseline = _baseline_tree(args.baseline)
        steps = 3 if args.quick else 10
        bench_step(get_model("vit-pico"), TrainConfig.model_validate(PRESETS["smoke"]),
                   args.rounds, steps, baseline)  # fmt: skip
        head = {"n_prototypes": 8192, "bottleneck": 256, "hidden": 512}
        cfg = TrainConfig(
            batch_size=2 if args.quick else 4,
            drop_path=0.0,
            dino_head=head,
            ibot_head=head,
            threads=1,
        )
        bench_step(spec, cfg, args.rounds, max(2, steps // 3), baseline)
    if "c" in parts:
        bench_loader(args.rounds, 4 if args.quick else 16)


if __name__ == "__main__":
    main()
