"""Frozen-encoder features on disk in fixed-size shards, read one image at a time.

The VQA evaluation's features do not fit in memory at the paper's scale (Cambrian-7M at 576
tokens per image), so they are written once, in half precision, to
``<root>/shard-NNNNN.bin`` (raw rows of ``tokens x dim`` values, fp16 or bf16 bits) with
``index.json`` naming the keys, their order and the row shape. A shard is written to a temporary
file and renamed, then its ``.done`` marker: a killed build keeps every finished shard and
continues with the first missing one. Reads seek to one row and convert it to fp32; no shard is
mapped or held in memory, so a process's footprint does not grow with the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from webssl_cli.rundir import atomic_write_json

DTYPES = ("fp16", "bf16")


def _keys_hash(keys: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


class FeatureCache(Mapping[str, Tensor]):
    """A finished cache as a read-only mapping key -> (tokens, dim) fp32 tensor."""

    def __init__(self, root: Path) -> None:
        self.root = root
        index = json.loads((root / "index.json").read_text())
        self.keys_order: list[str] = index["keys"]
        self.shape: tuple[int, int] = tuple(index["shape"])  # type: ignore[assignment]
        self.dtype: str = index["dtype"]
        self.shard_size: int = index["shard_size"]
        self._pos = {k: i for i, k in enumerate(self.keys_order)}
        self._row_bytes = 2 * self.shape[0] * self.shape[1]

    def __getitem__(self, key: str) -> Tensor:
        i = self._pos[key]
        shard, row = divmod(i, self.shard_size)
        with open(self.root / f"shard-{shard:05d}.bin", "rb") as f:
            f.seek(row * self._row_bytes)
            raw = f.read(self._row_bytes)
        bits = torch.from_numpy(np.frombuffer(raw, dtype=np.int16).copy())
        half = bits.view(torch.bfloat16 if self.dtype == "bf16" else torch.float16)
        return half.float().reshape(self.shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys_order)

    def __len__(self) -> int:
        return len(self.keys_order)

    @property
    def nbytes(self) -> int:
        return len(self) * self._row_bytes


def build_cache(
    root: Path,
    keys: Sequence[str],
    compute: Callable[[Sequence[str]], Tensor],
    *,
    shard_size: int = 1024,
    dtype: str = "fp16",
    on_shard: Callable[[int], None] | None = None,
    rank: int = 0,
    world: int = 1,
    barrier: Callable[[], None] = lambda: None,
) -> FeatureCache:
    """Features of ``keys`` (``compute(keys) -> (len(keys), tokens, dim)``, one shard's keys at
    a time) written under ``root``, or the finished shards reused: a cache built for other keys,
    another shard size or dtype is cleared first. ``on_shard(i)`` runs after shard i is done.

    Over several ranks (every rank calls this with the same arguments; ``barrier`` waits for
    all of them): shard i is computed by rank ``i % world``, rank 0 alone clears a stale cache,
    and every rank returns once all shards are on disk."""
    if dtype not in DTYPES:
        raise ValueError(f"feature cache dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    keys = list(keys)
    want = {"keys_hash": _keys_hash(keys), "shard_size": shard_size, "dtype": dtype}
    index_path = root / "index.json"
    if rank == 0 and index_path.exists():
        index = json.loads(index_path.read_text())
        if {k: index.get(k) for k in want} != want:
            shutil.rmtree(root)
    barrier()  # nobody writes into a cache that is being cleared
    root.mkdir(parents=True, exist_ok=True)
    shape: list[int] | None = None
    if index_path.exists():
        shape = json.loads(index_path.read_text())["shape"]
    half = torch.bfloat16 if dtype == "bf16" else torch.float16
    for shard, start in enumerate(range(0, len(keys), shard_size)):
        if shard % world != rank:
            continue
        path = root / f"shard-{shard:05d}.bin"
        done = path.with_suffix(".done")
        if done.exists():
            continue
        feats = compute(keys[start : start + shard_size])
        if shape is None:
            shape = list(feats.shape[1:])
            atomic_write_json(index_path, {**want, "keys": keys, "shape": shape})
        if list(feats.shape[1:]) != shape or feats.shape[0] != len(
            keys[start : start + shard_size]
        ):
            raise ValueError(f"feature shard {shard}: shape {tuple(feats.shape)}, rows of {shape}")
        data = feats.detach().to("cpu", half).contiguous().view(torch.int16).numpy().tobytes()
        del feats
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        del data
        os.replace(tmp, path)
        done.touch()
        if on_shard is not None:
            on_shard(shard)
    barrier()  # every rank's shards (and the index, written by whoever finished one) are there
    if rank == 0 and not index_path.exists():  # no keys at all
        atomic_write_json(index_path, {**want, "keys": keys, "shape": [0, 0]})
    barrier()
    return FeatureCache(root)


def disk_features(
    root: Path,
    cfg: Any,
    encoder: Any,
    images: Mapping[str, bytes],
    keys: Sequence[str],
    image_size: int,
    rank: int = 0,
    world: int = 1,
    barrier: Callable[[], None] = lambda: None,
) -> FeatureCache:
    """The VQA evaluation's frozen patch features in an on-disk cache under ``root``
    (``cfg``: a VqaEval), computed from ``encoder`` a shard of images at a time, the shards
    spread over ``world`` ranks."""
    from webssl_cli.eval.features import extract

    def compute(ks: Sequence[str]) -> Tensor:
        f = extract(encoder, [images[k] for k in ks], image_size, batch_size=cfg.batch_size,
                    keep_patches=True)  # fmt: skip
        assert f.patches is not None
        return f.patches

    return build_cache(root, keys, compute, shard_size=cfg.feature_shard, dtype=cfg.feature_dtype,
                       rank=rank, world=world, barrier=barrier)  # fmt: skip
