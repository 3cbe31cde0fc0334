"""Synthetic scenes with dense ground truth: per-pixel class masks and metric depth maps.

A scene is a room seen by a pinhole camera 1.5 m above a floor: a fronto-parallel back wall at
6-9.5 m, a chequered floor whose depth grows towards the horizon, and one to four objects (the
shapes of ``painter.SHAPES``) standing on the floor at known depths. Objects are drawn far to
near, each through one binary mask that colours the image, writes its class into the mask and
its depth into the depth map, so occlusion in the three agrees pixel for pixel. Depth cues are
those of photographs: height in the image (objects rest on the floor), apparent size, the
floor's perspective texture and haze that grows with distance.

Written as webdataset samples ``<key>.jpg``, ``<key>.seg.png`` (uint8 class per pixel; 255 is
the ignore label) and ``<key>.depth.png`` (uint16 millimetres; 0 is invalid), with a JSON of the
scene. A separate generator (seeded by (seed, index) and a tag of its own) draws every scene, so
these samples do not depend on, nor change, the images of ``synth.synthesize``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw

from webssl_cli.data import painter as P
from webssl_cli.data.synth import write_synthetic_shards

DENSE_CLASSES = ("wall", "floor", *P.SHAPES)
IGNORE_LABEL = 255
MAX_DEPTH_M = 10.0
DENSE_GENERATOR_VERSION = 1
"""Stamped beside the shards (``generator.json``); raise it when a seed's scenes change."""
_STREAM_TAG = 0xDE75  # a generator stream of its own: never the one of synth.make_sample
_CAMERA_HEIGHT = 1.5
_HAZE = np.array([200.0, 205.0, 215.0], np.float32)


def _shape_mask(
    shape: str, cx: float, cy: float, r: float, rot: float, w: int, h: int
) -> np.ndarray:
    """The pixels ``painter.draw_shape`` fills for this shape, as a boolean (h, w) mask."""
    canvas = Image.new("RGB", (w, h), (0, 0, 0))
    P.draw_shape(ImageDraw.Draw(canvas), shape, cx, cy, r, (255, 255, 255), rot, (0, 0, 0))
    return np.asarray(canvas)[..., 0] > 127


def render_scene(
    rng: np.random.Generator, w: int, h: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """(RGB uint8 (h, w, 3), class mask uint8 (h, w), depth in metres float32 (h, w), meta)."""
    f = float(w) * rng.uniform(0.9, 1.2)  # focal length in pixels (about 50-60 degrees across)
    horizon = h * rng.uniform(0.28, 0.45)
    wall_z = float(rng.uniform(6.0, 9.5))
    wall_row = horizon + f * _CAMERA_HEIGHT / wall_z  # where the floor meets the wall
    rows = np.arange(h, dtype=np.float32)[:, None] + 0.5
    cols = np.arange(w, dtype=np.float32)[None, :] + 0.5
    below = rows > wall_row
    floor_z = np.where(below, f * _CAMERA_HEIGHT / np.maximum(rows - horizon, 1e-3), wall_z)
    depth = np.broadcast_to(floor_z, (h, w)).astype(np.float32).copy()
    seg = np.broadcast_to(np.where(below, 1, 0), (h, w)).astype(np.uint8).copy()

    wall = P.smooth_background(rng, w, h).astype(np.float32)
    if rng.random() < 0.5:
        wall = P.add_texture(wall.astype(np.uint8), rng).astype(np.float32)
    # The floor: tiles laid on the ground plane, so their projection shrinks with distance.
    tile = float(rng.uniform(0.4, 0.9))
    x_world = (cols - w / 2) * depth / f
    checks = (np.floor(x_world / tile) + np.floor(depth / tile)) % 2
    c0 = np.array(P.PALETTE[str(P.COLOR_NAMES[int(rng.integers(len(P.COLOR_NAMES)))])], np.float32)
    c1 = c0 * rng.uniform(0.45, 0.8)
    floor = np.where(checks[..., None] > 0, c0, c1)
    img = np.where(below[..., None], floor, wall)

    objects = []
    n = int(rng.integers(1, 5))
    for _ in range(n):
        cls = int(rng.integers(len(P.SHAPES)))
        z = float(rng.uniform(1.2, wall_z - 0.4))
        size = float(rng.uniform(0.5, 1.2))  # metres
        r = f * size / z
        x = float(rng.uniform(-0.8, 0.8)) * z * w / (2 * f)  # metres; inside the view at that depth
        cx = w / 2 + f * x / z
        cy = horizon + f * _CAMERA_HEIGHT / z - r  # resting on the floor
        objects.append((z, cls, cx, cy, r, float(rng.uniform(0, 2 * math.pi)),
                        str(P.COLOR_NAMES[int(rng.integers(len(P.COLOR_NAMES)))])))  # fmt: skip
    objects.sort(key=lambda o: -o[0])  # far first: nearer objects cover them
    meta_objects = []
    for z, cls, cx, cy, r, rot, color in objects:
        m = _shape_mask(P.SHAPES[cls], cx, cy, r, rot, w, h)
        if not m.any():
            continue
        shade = 0.75 + 0.25 * (rows - (cy - r)) / max(2 * r, 1.0)  # lit from above
        img = np.where(m[..., None], np.array(P.PALETTE[color], np.float32) * shade[..., None], img)
        seg[m] = 2 + cls
        depth[m] = z
        ys, xs = np.nonzero(m)
        meta_objects.append({"shape": P.SHAPES[cls], "class": 2 + cls, "color": color,
                             "depth": round(z, 4), "pixels": int(m.sum()),
                             "bbox": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]})  # fmt: skip
    haze = 1.0 - np.exp(-depth / rng.uniform(8.0, 20.0))
    img = img * (1 - haze[..., None]) + _HAZE * haze[..., None]
    arr = P.camera(np.clip(img, 0, 255).astype(np.uint8), rng)
    meta = {"kind": "dense", "width": w, "height": h, "classes": list(DENSE_CLASSES),
            "ignore_label": IGNORE_LABEL, "depth_unit": "mm", "max_depth": MAX_DEPTH_M,
            "wall_depth": round(wall_z, 4), "objects": meta_objects}  # fmt: skip
    return arr, seg, depth, meta


# ---- encodings shared by the synthesizer, the converters and the probes' loader ------------------
def encode_seg(seg: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(seg.astype(np.uint8)))
    if not ok:
        raise ValueError("class mask does not encode as PNG")
    return buf.tobytes()


def encode_depth(depth_m: np.ndarray) -> bytes:
    """Metres -> uint16 millimetre PNG (0: invalid; values past 65.535 m saturate)."""
    mm = np.clip(np.round(np.nan_to_num(depth_m, nan=0.0) * 1000.0), 0, 65535).astype(np.uint16)
    ok, buf = cv2.imencode(".png", mm)
    if not ok:
        raise ValueError("depth map does not encode as PNG")
    return buf.tobytes()


def decode_seg(data: bytes) -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError("undecodable class mask")
    return arr if arr.ndim == 2 else arr[..., 0]


def decode_depth(data: bytes) -> np.ndarray:
    """A uint16 millimetre PNG -> metres (float32; 0 where invalid)."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError("undecodable depth map")
    if arr.ndim != 2 or arr.dtype != np.uint16:
        raise ValueError(f"depth map is not a single-channel uint16 PNG ({arr.dtype}, {arr.shape})")
    return arr.astype(np.float32) / 1000.0


# ---- the corpus ----------------------------------------------------------------------------------
def make_dense_sample(seed: int, index: int, image_size: int) -> tuple[str, dict[str, bytes]]:
    """One sample as (key, {"jpg", "seg.png", "depth.png", "json"}); depends only on its arguments."""
    import simplejpeg

    rng = np.random.default_rng([seed, index, _STREAM_TAG])
    aspect = float((1.0, 0.75)[int(rng.integers(2))])  # height / width: square or landscape
    w, h = image_size, int(round(image_size * aspect / 8) * 8)
    arr, seg, depth, meta = render_scene(rng, w, h)
    key = f"d{seed}_{index:08d}"
    jpg = simplejpeg.encode_jpeg(np.ascontiguousarray(arr), quality=90, colorspace="RGB")
    js = json.dumps({"key": key, **meta}, sort_keys=True, separators=(",", ":")).encode()
    return key, {
        "jpg": jpg,
        "seg.png": encode_seg(seg),
        "depth.png": encode_depth(depth),
        "json": js,
    }


def synthesize_dense(
    out_dir: str | Path, n: int = 512, seed: int = 0, shard_size: int = 256, image_size: int = 224
) -> list[Path]:
    """Write ``n`` dense scenes to ``out_dir/shard-000000.tar``...; byte-identical per seed."""
    return write_synthetic_shards(
        out_dir,
        n,
        shard_size,
        image_size,
        lambda i: make_dense_sample(seed, i, image_size),
        generator={"generator": "dense", "version": DENSE_GENERATOR_VERSION},
    )
