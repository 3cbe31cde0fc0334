"""Images with dense targets for the segmentation and depth probes.

A dense dataset is a webdataset: ``<key>.jpg`` (or another image), ``<key>.seg.png`` (uint8
class per pixel, 255 = ignore), ``<key>.depth.png`` (uint16 millimetres, 0 = invalid) and a JSON
that may carry ``split`` ("train" or "val": the converted ADE20K and NYUv2 keep their published
splits), ``classes`` (class names by index) and ``ignore_label``. Without ``split``, a fixed hash
of the key puts one sample in five in val (as for the labelled classification sets). Written by
``webssl data synth --dense`` and by ``webssl eval convert`` (layouts ade20k, nyuv2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from webssl_cli.data.dense import decode_depth, decode_seg
from webssl_cli.errors import UserError
from webssl_cli.eval.features import is_val_key

TARGETS = {"segmentation": "seg.png", "depth": "depth.png"}


@dataclass
class DenseSet:
    """One split: encoded images and their decoded targets (class masks or depth in metres)."""

    keys: list[str] = field(default_factory=list)
    images: list[bytes] = field(default_factory=list)
    targets: list[np.ndarray] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    ignore_label: int = 255

    def __len__(self) -> int:
        return len(self.keys)


def split_of(key: str, meta: dict[str, object]) -> str:
    s = str(meta.get("split", "")).lower()
    if s in ("train", "training"):
        return "train"
    if s in ("val", "validation", "test"):
        return "val"
    return "val" if is_val_key(key) else "train"


def load_dense(
    source: str, target: str, max_images: int | None = None
) -> tuple[DenseSet, DenseSet]:
    """(train, val) of a dense webdataset for ``target`` (segmentation | depth)."""
    from webssl_cli.data.shards import iter_shards, list_shards

    ext = TARGETS[target]
    parts = {"train": DenseSet(), "val": DenseSet()}
    n = 0
    for s in iter_shards(list_shards(source)):
        raw = s.members.get(ext)
        if raw is None or s.image_bytes is None:
            continue
        try:
            arr = decode_seg(raw) if target == "segmentation" else decode_depth(raw)
        except ValueError as exc:
            raise UserError(f"{s.shard}: {s.key}.{ext}: {exc}") from exc
        meta = s.meta()
        part = parts[split_of(s.key, meta)]
        part.keys.append(s.key)
        part.images.append(s.image_bytes)
        part.targets.append(arr)
        if isinstance(meta.get("classes"), list) and not part.class_names:
            part.class_names = [str(c) for c in meta["classes"]]  # type: ignore[union-attr]
        if isinstance(meta.get("ignore_label"), int):
            part.ignore_label = int(meta["ignore_label"])  # type: ignore[arg-type]
        n += 1
        if max_images is not None and n >= max_images:
            break
    train, val = parts["train"], parts["val"]
    if len(train) == 0 or len(val) == 0:
        raise UserError(
            f"{source}: needs images with a {ext} target in both train and val (found {len(train)} "
            f"and {len(val)}); write one with `webssl data synth --dense` or `webssl eval convert`"
        )
    names = train.class_names or val.class_names
    train.class_names = val.class_names = names
    return train, val
