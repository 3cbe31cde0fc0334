"""Published classic-vision layouts -> webdataset shards the probes read (``eval.dense_data``,
``eval.features``). Every failure is a one-line UserError naming the file.

- ``ade20k``: ADEChallengeData2016/ with ``images/{training,validation}/*.jpg`` and
  ``annotations/{training,validation}/*.png`` (uint8, 0 = "other", classes 1..150). Labels are
  shifted as mmsegmentation's ``reduce_zero_label``: 0 -> 255 (ignored), k -> k - 1. Class names
  from ``objectInfo150.txt`` (or ``objectInfo150.csv``) when the folder has it.
- ``nyuv2``: the index files the BTS / monocular-depth-toolbox loaders (and DINOv2) read,
  ``nyu_train.txt`` and ``nyu_test.txt`` in SRC, one ``<rgb> <depth> [focal]`` line per image,
  paths relative to SRC (a leading ``/`` is allowed); depth PNGs are single-channel uint16 in
  millimetres (0 = missing), as those loaders expect. Test becomes val.
- ``class-folder``: ImageNet-style ``train/<class>/*`` and ``val/<class>/*`` (class names are
  the folder names, indices in sorted order of train/), for the knn and linear probes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from webssl_cli.errors import UserError

SHARD_LAYOUTS = ("ade20k", "nyuv2", "class-folder")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".ppm")
_ADE_SPLITS = (("training", "train"), ("validation", "val"))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def _image_size(path: Path, data: bytes) -> tuple[int, int]:
    """(width, height) of an image file whose bytes must be a readable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            size = im.size
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: not a readable image ({exc})") from exc
    return int(size[0]), int(size[1])


def _decode_png(path: Path, data: bytes, dtype: Any) -> np.ndarray:
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise UserError(f"{path}: not a readable PNG")
    if arr.ndim != 2 or arr.dtype != dtype:
        raise UserError(f"{path}: expected a single-channel {np.dtype(dtype).name} PNG, got "
                        f"{arr.dtype.name} with shape {arr.shape}")  # fmt: skip
    return arr


def _ext(path: Path) -> str:
    return path.suffix.lower().lstrip(".")


def _images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES
    )


def ade20k_samples(source: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    from webssl_cli.data.dense import encode_seg

    names = _ade_names(source)
    for folder, split in _ADE_SPLITS:
        img_dir, ann_dir = source / "images" / folder, source / "annotations" / folder
        if not img_dir.is_dir():
            raise UserError(f"{img_dir}: missing; give the ADEChallengeData2016 folder")
        for img in _images(img_dir):
            ann = ann_dir / f"{img.stem}.png"
            if not ann.is_file():
                raise UserError(f"{img}: its mask {ann} is missing")
            data, _, label = _pair(img, ann, np.uint8, "mask")
            # reduce_zero_label: 0 ("other") is ignored, classes 1..150 become 0..149
            shifted = np.where(label == 0, 255, label.astype(np.int16) - 1).astype(np.uint8)
            meta = {"split": split, "classes": names, "ignore_label": 255, "source": str(img)}
            yield f"ade_{split}_{img.stem}", {_ext(img): data, "seg.png": encode_seg(shifted),
                                              "json": _json(meta)}  # fmt: skip


def _pair(img: Path, target: Path, dtype: Any, what: str) -> tuple[bytes, bytes, np.ndarray]:
    """An image's bytes, its dense target's bytes and the target decoded (a PNG of ``dtype``,
    the image's size)."""
    data, raw = _read(img), _read(target)
    w, h = _image_size(img, data)
    arr = _decode_png(target, raw, dtype)
    if arr.shape != (h, w):
        raise UserError(f"{target}: {what} is {arr.shape[1]}x{arr.shape[0]}, its image "
                        f"{img.name} is {w}x{h}")  # fmt: skip
    return data, raw, arr


def _ade_names(source: Path) -> list[str]:
    for name in ("objectInfo150.txt", "objectInfo150.csv"):
        f = source / name
        if f.is_file():
            rows = [r.split("\t") if "\t" in r else r.split(",")
                    for r in f.read_text(encoding="utf-8", errors="replace").splitlines()[1:] if r.strip()]  # fmt: skip
            got = [r[-1].strip().split(";")[0] for r in rows]
            if len(got) == 150:
                return got
    return [str(i) for i in range(150)]


def nyuv2_samples(source: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    found = False
    for index, split in (("nyu_train.txt", "train"), ("nyu_test.txt", "val")):
        f = source / index
        if not f.is_file():
            continue
        found = True
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise UserError(f"{f}:{n}: expected '<rgb> <depth> [focal]', got {line!r}")
            rgb, dep = source / parts[0].lstrip("/"), source / parts[1].lstrip("/")
            for p in (rgb, dep):
                if not p.is_file():
                    raise UserError(f"{f}:{n}: {p} is missing")
            data, raw, _ = _pair(rgb, dep, np.uint16, "depth")
            key = "nyu_" + "_".join(Path(parts[0].lstrip("/")).with_suffix("").parts)
            meta = {"split": split, "depth_unit": "mm", "max_depth": 10.0, "source": str(rgb),
                    **({"focal": float(parts[2])} if len(parts) > 2 else {})}  # fmt: skip
            yield key.replace(".", "_"), {_ext(rgb): data, "depth.png": raw, "json": _json(meta)}
    if not found:
        raise UserError(f"{source}: no nyu_train.txt or nyu_test.txt index file")


def class_folder_samples(source: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    train = source / "train"
    if not train.is_dir() or not (source / "val").is_dir():
        raise UserError(f"{source}: expected train/<class>/* and val/<class>/* folders")
    classes = sorted(p.name for p in train.iterdir() if p.is_dir())
    if not classes:
        raise UserError(f"{train}: no class folders")
    index = {c: i for i, c in enumerate(classes)}
    for split in ("train", "val"):
        for cdir in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            if cdir.name not in index:
                raise UserError(f"{cdir}: class {cdir.name!r} has no folder in train/")
            for img in _images(cdir):
                data = _read(img)
                _image_size(img, data)
                meta = {"split": split, "class": index[cdir.name], "class_name": cdir.name}
                key = f"{split}_{cdir.name}_{img.stem}".replace(".", "_")
                yield key, {_ext(img): data, "json": _json(meta)}


def _json(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()


def convert_to_shards(
    layout: str, source: Path, out: Path, shard_size: int = 1000
) -> tuple[int, str]:
    """Write ``source`` (in ``layout``) as ``out/shard-*.tar``; (samples written, shard pattern)."""
    from webssl_cli.data.shards import shard_name, write_shard

    if not source.is_dir():
        raise UserError(f"{source}: not a folder; --layout {layout} reads the published folder")
    gen = {"ade20k": ade20k_samples, "nyuv2": nyuv2_samples,
           "class-folder": class_folder_samples}[layout](source)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    paths: list[Path] = []
    batch: list[tuple[str, dict[str, bytes]]] = []
    for sample in gen:
        batch.append(sample)
        n += 1
        if len(batch) == shard_size:
            paths.append(write_shard(out / shard_name(len(paths)), batch))
            batch = []
    if batch:
        paths.append(write_shard(out / shard_name(len(paths)), batch))
    if not paths:
        raise UserError(f"{source}: no images found for --layout {layout}")
    pattern = (
        str(paths[0])
        if len(paths) == 1
        else str(out / f"shard-{{000000..{len(paths) - 1:06d}}}.tar")
    )
    return n, pattern
