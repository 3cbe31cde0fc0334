"""Labelled image sets for the probes, and frozen-encoder features computed once per image.

A labelled set is an ImageFolder (``<root>/train/<class>/*`` and ``<root>/val/<class>/*``) or
a webdataset whose JSON carries an integer ``class``; its JSON's ``split`` ("train" or "val",
as ``webssl eval convert --layout class-folder`` writes) places a sample, else a fixed hash of
the sample key puts one in five samples in val (the same split every run).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from webssl_cli import device as dev
from webssl_cli.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".ppm")


@dataclass
class ImageSet:
    """Encoded images (bytes) and integer labels of one split."""

    keys: list[str]
    images: list[bytes]
    labels: list[int]
    class_names: dict[int, str]

    def __len__(self) -> int:
        return len(self.keys)


def resolve_source(name: str, spec: dict[str, Any] | None) -> str:
    """A dataset named in an eval config: a data source of the cell (``sources``) or a path."""
    sources = (spec or {}).get("sources") or {}
    if name in sources:
        src = sources[name]
        loc = src.get("shards") or src.get("path") if isinstance(src, dict) else src
        if not loc:
            raise UserError(f"cell.json: sources.{name}: has no 'shards' or 'path'")
        return str(loc)
    if Path(name).exists() or any(c in name for c in "{*?"):
        return name
    valid = ", ".join(sorted(sources)) or "(none in cell.json)"
    raise UserError(
        f"dataset {name!r} is neither a data source of the cell nor a path; sources: {valid}"
    )


def is_val_key(key: str, every: int = 5) -> bool:
    return zlib.crc32(key.encode()) % every == 0


def load_labelled(source: str, max_images: int | None = None) -> tuple[ImageSet, ImageSet]:
    """(train, val) from an ImageFolder root or a webdataset shard pattern."""
    root = Path(source)
    if root.is_dir() and (root / "train").is_dir() and (root / "val").is_dir():
        classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        index = {c: i for i, c in enumerate(classes)}
        names = dict(enumerate(classes))
        splits = []
        for split in ("train", "val"):
            keys, imgs, labels = [], [], []
            for c in classes:
                for f in sorted((root / split / c).glob("*")):
                    if f.suffix.lower() in IMAGE_SUFFIXES:
                        keys.append(f"{split}/{c}/{f.name}")
                        imgs.append(f.read_bytes())
                        labels.append(index[c])
            splits.append(ImageSet(keys, imgs, labels, names))
        train, val = splits
    else:
        from webssl_cli.data.shards import iter_shards, list_shards

        parts: dict[bool, ImageSet] = {
            False: ImageSet([], [], [], {}),
            True: ImageSet([], [], [], {}),
        }
        n = 0
        for s in iter_shards(list_shards(source)):
            meta = s.meta()
            if not isinstance(meta.get("class"), int) or s.image_bytes is None:
                continue
            split = str(meta.get("split", "")).lower()  # converted sets keep their published split
            part = parts[split in ("val", "validation", "test") if split else is_val_key(s.key)]
            part.keys.append(s.key)
            part.images.append(s.image_bytes)
            part.labels.append(int(meta["class"]))
            if "class_name" in meta:
                part.class_names[int(meta["class"])] = str(meta["class_name"])
            n += 1
            if max_images is not None and n >= max_images:
                break
        train, val = parts[False], parts[True]
        train.class_names.update(val.class_names)
        val.class_names = train.class_names
    if len(train) == 0 or len(val) == 0:
        raise UserError(
            f"{source}: needs labelled images in both train and val (found {len(train)} and {len(val)}); "
            "an ImageFolder with train/ and val/, or shards whose JSON has an integer 'class'"
        )
    return train, val


def decode_rgb(data: bytes) -> np.ndarray:
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise ValueError("undecodable image")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def preprocess(rgb: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Resize the short side to ``size`` and centre-crop a square: (3, size, size), normalised."""
    import cv2

    h, w = rgb.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    rgb = cv2.resize(rgb, (nw, nh), interpolation=interp)
    top, left = (nh - size) // 2, (nw - size) // 2
    rgb = rgb[top : top + size, left : left + size]
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255.0
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    return (x - m) / s


@dataclass
class Features:
    """Per image: the CLS token of each of the last blocks (N, n_blocks, D), oldest first, the
    average-pooled patch tokens of the last block (N, D), and optionally its patch tokens."""

    cls: Tensor
    avgpool: Tensor
    patches: Tensor | None = None


@torch.no_grad()
def extract(
    encoder: Any,
    images: Sequence[bytes],
    size: int,
    *,
    n_blocks: int = 1,
    batch_size: int = 64,
    keep_patches: bool = False,
) -> Features:
    """Encode ``images`` with the frozen ``encoder`` (one pass per image) on the encoder's
    device, under bf16 autocast on CUDA; the features come back on the CPU in fp32."""
    size = max(encoder.patch, size // encoder.patch * encoder.patch)
    device = encoder.device
    amp = dev.autocast_dtype(device)
    cls_out, pool_out, patch_out = [], [], []
    for i in range(0, len(images), batch_size):
        x = torch.stack(
            [
                preprocess(decode_rgb(b), size, encoder.mean, encoder.std)
                for b in images[i : i + batch_size]
            ]
        ).to(device)
        with dev.autocast(device, amp):
            outs = encoder.blocks(x, n_blocks)  # list of (cls (B, D), patches (B, N, D))
        cls_out.append(torch.stack([c for c, _ in outs], dim=1).float().cpu())
        pool_out.append(outs[-1][1].float().mean(dim=1).cpu())
        if keep_patches:
            patch_out.append(outs[-1][1].float().cpu())
    return Features(
        torch.cat(cls_out).float(),
        torch.cat(pool_out).float(),
        torch.cat(patch_out).float() if keep_patches else None,
    )
