"""A tiny labelled image generator for training tests: coloured shapes, one class per shape.

Written as real webdataset tar shards (``<key>.jpg`` + ``<key>.json`` with ``{"class": k}``).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import simplejpeg

N_CLASSES = 4


def draw(rng: np.random.Generator, cls: int, size: int = 64) -> np.ndarray:
    img = np.full((size, size, 3), rng.integers(0, 80, 3), dtype=np.uint8)
    img += rng.integers(0, 30, (size, size, 3), dtype=np.uint8)  # texture noise
    colour = tuple(int(c) for c in rng.integers(120, 256, 3))
    c = size // 2 + rng.integers(-size // 8, size // 8 + 1, 2)
    r = int(rng.integers(size // 5, size // 3))
    if cls == 0:
        cv2.circle(img, (int(c[0]), int(c[1])), r, colour, -1)
    elif cls == 1:
        cv2.rectangle(
            img, (int(c[0] - r), int(c[1] - r)), (int(c[0] + r), int(c[1] + r)), colour, -1
        )
    elif cls == 2:
        pts = np.array([[c[0], c[1] - r], [c[0] - r, c[1] + r], [c[0] + r, c[1] + r]], np.int32)
        cv2.fillPoly(img, [pts], colour)
    else:
        for k in range(-r, r + 1, max(r // 3, 2)):  # stripes
            cv2.line(img, (int(c[0] - r), int(c[1] + k)), (int(c[0] + r), int(c[1] + k)), colour, 2)
    return img


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def write_shards(
    out: Path, n_shards: int = 2, per_shard: int = 32, size: int = 64, seed: int = 0
) -> str:
    """Write ``n_shards`` shards; returns the brace pattern naming them."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for s in range(n_shards):
        with tarfile.open(out / f"shard-{s:06d}.tar", "w") as tar:
            for i in range(per_shard):
                cls = int(rng.integers(N_CLASSES))
                key = f"{s:06d}{i:06d}"
                jpg = simplejpeg.encode_jpeg(draw(rng, cls, size), quality=90, colorspace="RGB")
                _add(tar, f"{key}.jpg", jpg)
                _add(tar, f"{key}.json", json.dumps({"class": cls}).encode())
    return str(out / f"shard-{{000000..{n_shards - 1:06d}}}.tar")
