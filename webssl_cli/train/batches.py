"""The batch sequence of a run and each rank's slice of it: decode + multi-crop augmentation.

The global batch of step i is the concatenation, in lane order, of ``batch_size / lanes``
images from each of ``lanes`` independent sample streams (lane l is ``ShardStream(seed,
rank=l)``: shards drawn by ``Generator(seed, l, chunk)``, crops by ``Generator(seed, l, chunk,
offset)``). Rank r of W reads lanes [r L/W, (r+1) L/W): a contiguous slice of every global
batch, distinct from every other rank's, with no sample read twice. The lane count is fixed by
the config, not by W, so the same images make step i at any world size, any micro-batch size,
and after a resume at another world size (the checkpoint holds every lane's position).

A sample's crops are a pure function of its place in its lane, so worker count and scheduling
never change them. Single-view mode (``single_view``: the crop's area range; CLIP and MAE)
makes one view per image at the global crop size instead of the multi-crop set: ``globals_u8``
then holds one view and ``locals_u8`` none; lanes, streams and resume positions are the same.
Workers return results in order; read-ahead is bounded. Undecodable images and samples without
an image are skipped and counted per lane. Each image's caption (``captions.caption_of``)
travels with it; a loader that trains on captions counts the images without one per lane
(``no_caption``) and keeps them, for the objective to leave out.
"""

from __future__ import annotations

import math
import multiprocessing as mp
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from webssl_cli.data.captions import caption_of
from webssl_cli.data.multicrop import MEAN, STD, MultiCrop, SingleView, UndecodableImage
from webssl_cli.data.stream import Position, ShardStream, image_bytes
from webssl_cli.errors import UserError
from webssl_cli.specs.train import CropConfig, TrainConfig


def lanes_for(cfg: TrainConfig, world_size: int, resumed: int | None = None) -> int:
    """The run's lane count; it must divide the batch and be a multiple of the world size.

    ``resumed``: the lane count of the checkpoint being resumed, kept when the config leaves it
    open (a cell started by the single-stream loop has one lane).
    """
    lanes = cfg.dist.data_lanes or resumed or math.gcd(cfg.batch_size, 64)
    if cfg.batch_size % lanes:
        raise UserError(
            f"train.dist.data_lanes: {lanes} does not divide train.batch_size {cfg.batch_size}; "
            "choose a divisor of the batch size"
        )
    if lanes % world_size:
        raise UserError(
            f"train.dist.data_lanes: {lanes} lanes cannot be split over {world_size} ranks; set it "
            f"to a multiple of {world_size} that divides the batch size {cfg.batch_size}"
        )
    return lanes


def single_view_scale(cfg: TrainConfig, method: str) -> tuple[float, float] | None:
    """The single view's crop area range of ``method`` (clip, mae); None: DINOv2's multi-crop."""
    if method == "clip":
        return cfg.clip.crop_scale
    if method == "mae":
        return cfg.mae.crop_scale
    return None


def micro_batches_for(cfg: TrainConfig, world_size: int) -> tuple[int, int]:
    """(micro-batch, accumulation steps) per rank so that W x micro x accum = batch_size."""
    if cfg.batch_size % world_size:
        raise UserError(
            f"train.batch_size: {cfg.batch_size} does not split over {world_size} ranks; use a multiple of {world_size}"
        )
    per_rank = cfg.batch_size // world_size
    mb = cfg.micro_batch or per_rank
    if per_rank % mb:
        raise UserError(
            f"train.micro_batch: {mb} does not divide the {per_rank} images per rank "
            f"(batch_size {cfg.batch_size} / {world_size} ranks); choose a divisor"
        )
    return mb, per_rank // mb


@dataclass
class Batch:
    """This rank's slice of one global batch (what an objective's ``step_inputs`` receives)."""

    globals_u8: torch.Tensor  # (2, B_rank, G, G, 3) uint8 (single-view mode: (1, ...)), this
    # rank's slice of the global batch
    locals_u8: torch.Tensor  # (L, B_rank, S, S, 3) uint8
    positions: dict[int, Position]  # lane -> position after its last sample in this batch
    problems: dict[int, Counter[str]] = field(default_factory=dict)  # lane -> skipped samples
    captions: list[str | None] = field(default_factory=list)  # per image, None: no caption


class LaneLoader:
    """Yields this rank's slice of every global batch; one worker pool serves all its lanes."""

    def __init__(
        self,
        urls: list[str],
        seed: int,
        crops: CropConfig,
        batch_size: int,
        lanes: int,
        rank: int,
        world_size: int,
        positions: dict[int, Position] | None = None,
        problems: dict[int, Counter[str]] | None = None,
        num_workers: int = 0,
        single_view: tuple[float, float] | None = None,
        captions: bool = False,
    ) -> None:
        self.crops, self.per_lane = crops, batch_size // lanes
        self.single_view = single_view
        per_rank = lanes // world_size
        self.lanes = list(range(rank * per_rank, (rank + 1) * per_rank))
        positions = positions or {}
        self.streams = {
            lane: ShardStream(urls, seed=seed, rank=lane, start=positions.get(lane, Position()))
            for lane in self.lanes
        }
        self.problems: dict[int, Counter[str]] = {
            lane: Counter((problems or {}).get(lane, {})) for lane in self.lanes
        }
        self.num_workers = num_workers
        self.count_captions = captions  # count images without a caption (objectives that need one)
        self._pool: Any = None

    def _lane_results(
        self, lane: int
    ) -> Iterator[tuple[tuple[str, Any, Any], tuple[Position, str | None]]]:
        s = self.streams[lane]
        jobs = (
            ((image_bytes(x.members), [s.seed, s.rank, x.position.chunk, x.position.offset]),
             (x.position, caption_of(x.members)))
            for x in s
        )  # fmt: skip
        if self._pool is None:
            for job, pos in jobs:
                yield _augment(job), pos
            return
        group = max(1, min(8, self.per_lane))
        inflight: deque[tuple[Any, list[tuple[Position, str | None]]]] = deque()
        ahead = max(2, -(-2 * self.per_lane // group))  # about two steps of this lane in flight
        while True:
            while len(inflight) < ahead:
                chunk = [next(jobs) for _ in range(group)]
                res = self._pool.apply_async(_augment_many, ([j for j, _ in chunk],))
                inflight.append((res, [p for _, p in chunk]))
            res, positions = inflight.popleft()
            yield from zip(res.get(), positions, strict=True)

    def __iter__(self) -> Iterator[Batch]:
        if self.num_workers > 0:
            ctx = mp.get_context("fork")
            self._pool = ctx.Pool(
                self.num_workers, initializer=_init_worker, initargs=(self.crops, self.single_view)
            )
        else:
            _init_worker(self.crops, self.single_view)
        results = {lane: self._lane_results(lane) for lane in self.lanes}
        while True:
            gl: list[np.ndarray] = []
            lo: list[np.ndarray] = []
            positions: dict[int, Position] = {}
            captions: list[str | None] = []
            for lane in self.lanes:
                got = 0
                while got < self.per_lane:
                    (status, g, loc), (pos, caption) = next(results[lane])
                    if status != "ok":
                        self.problems[lane][status] += 1
                        continue
                    if caption is None and self.count_captions:
                        self.problems[lane]["no_caption"] += 1
                    captions.append(caption)
                    gl.append(g)
                    lo.append(loc)
                    positions[lane] = pos
                    got += 1
            c = self.crops
            g_arr = np.stack([np.stack(x) for x in zip(*gl, strict=True)])  # (2, B_rank, G, G, 3)
            if c.n_local and self.single_view is None:
                l_arr = np.stack([np.stack(x) for x in zip(*lo, strict=True)])
            else:
                l_arr = np.zeros((0, len(gl), c.local_size, c.local_size, 3), np.uint8)
            problems = {
                lane: self.problems[lane] + self.streams[lane].problems for lane in self.lanes
            }
            yield Batch(
                torch.from_numpy(g_arr), torch.from_numpy(l_arr), positions, problems, captions
            )

    def epochs(self) -> float:
        """This rank's share of the passes over the shard list (sum over ranks for the run's)."""
        return sum(s.epochs() for s in self.streams.values())

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None


_WORKER_MC: MultiCrop | SingleView | None = None


def _init_worker(cfg: CropConfig, single_view: tuple[float, float] | None = None) -> None:
    global _WORKER_MC
    _WORKER_MC = MultiCrop(cfg) if single_view is None else SingleView(cfg.global_size, single_view)
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


def to_model_input(u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (N, 3, H, W) float, ImageNet-normalised, on ``device``."""
    x = u8.to(device, non_blocking=True)
    x = x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.contiguous_format)
