"""Multi-crop batches from a shard stream: decode + augment (optionally in worker processes).

A sample's augmentation draws from ``Generator(seed, rank, chunk, offset)``: a pure function of
its place in the stream, so worker count and scheduling never change the crops. Workers return
results in order; read-ahead is bounded. Undecodable images and samples without an image are
skipped and counted.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from webssl_cli.data.multicrop import MEAN, STD, MultiCrop, UndecodableImage
from webssl_cli.data.stream import Position, ShardStream, image_bytes
from webssl_cli.specs.train import CropConfig


@dataclass
class Batch:
    globals_u8: torch.Tensor  # (2, B, G, G, 3) uint8
    locals_u8: torch.Tensor  # (L, B, S, S, 3) uint8 (L may be 0)
    position: Position  # stream position after the batch's last sample
    problems: Counter[str] = field(default_factory=Counter)  # cumulative skipped samples


_WORKER_MC: MultiCrop | None = None


def _init_worker(cfg: CropConfig) -> None:
    global _WORKER_MC
    _WORKER_MC = MultiCrop(cfg)
    torch.set_num_threads(1)


def _augment(job: tuple[bytes | None, list[int]]) -> tuple[str, Any, Any]:
    data, seed = job
    assert _WORKER_MC is not None
    if data is None:
        return "no_image", None, None
    try:
        g, loc = _WORKER_MC(data, np.random.default_rng(seed))
    except UndecodableImage:
        return "undecodable", None, None
    return "ok", g, loc


def _augment_many(jobs: list[tuple[bytes | None, list[int]]]) -> list[tuple[str, Any, Any]]:
    return [_augment(j) for j in jobs]


class BatchLoader:
    """Iterates multi-crop batches of ``batch_size`` images from ``stream``."""

    def __init__(
        self, stream: ShardStream, crops: CropConfig, batch_size: int, num_workers: int = 0
    ) -> None:
        self.stream, self.crops, self.batch_size = stream, crops, batch_size
        self.num_workers = num_workers
        self.problems: Counter[str] = Counter()
        self._pool: Any = None

    def _jobs(self) -> Iterator[tuple[tuple[bytes | None, list[int]], Position]]:
        s = self.stream
        for sample in s:
            seed = [s.seed, s.rank, sample.position.chunk, sample.position.offset]
            yield (image_bytes(sample.members), seed), sample.position

    def _results(self) -> Iterator[tuple[tuple[str, Any, Any], Position]]:
        jobs = self._jobs()
        if self.num_workers == 0:
            _init_worker(self.crops)
            for job, pos in jobs:
                yield _augment(job), pos
            return
        ctx = mp.get_context("fork")
        self._pool = ctx.Pool(self.num_workers, initializer=_init_worker, initargs=(self.crops,))
        group = 8  # samples per task: amortises the pickling round trip
        inflight: deque[tuple[Any, list[Position]]] = deque()
        while True:
            while len(inflight) < 4 * self.num_workers:
                chunk = [next(jobs) for _ in range(group)]
                inflight.append(
                    (
                        self._pool.apply_async(_augment_many, ([j for j, _ in chunk],)),
                        [p for _, p in chunk],
                    )
                )
            res, positions = inflight.popleft()
            yield from zip(res.get(), positions, strict=True)

    def __iter__(self) -> Iterator[Batch]:
        gl: list[list[np.ndarray]] = []
        lo: list[list[np.ndarray]] = []
        for (status, g, loc), pos in self._results():
            if status != "ok":
                self.problems[status] += 1
                continue
            gl.append(g)
            lo.append(loc)
            if len(gl) == self.batch_size:
                c = self.crops
                g_arr = np.stack([np.stack(x) for x in zip(*gl, strict=True)])  # (2, B, G, G, 3)
                if c.n_local:
                    l_arr = np.stack([np.stack(x) for x in zip(*lo, strict=True)])
                else:
                    l_arr = np.zeros((0, self.batch_size, c.local_size, c.local_size, 3), np.uint8)
                problems = self.problems + self.stream.problems
                yield Batch(torch.from_numpy(g_arr), torch.from_numpy(l_arr), pos, problems)
                gl, lo = [], []

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None


def to_model_input(u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (N, 3, H, W) float, ImageNet-normalised, on ``device``."""
    x = u8.to(device, non_blocking=True)
    x = x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.contiguous_format)
