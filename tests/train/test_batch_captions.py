"""Captions travel with their images through the lane loader; missing ones are counted."""

from __future__ import annotations

import itertools

import pytest

from webssl_cli.data.captions import caption_of
from webssl_cli.data.stream import ShardStream, expand_urls
from webssl_cli.data.synth import shard_pattern, synthesize
from webssl_cli.specs.train import CropConfig
from webssl_cli.train.batches import LaneLoader


@pytest.fixture(scope="module")
def captioned(tmp_path_factory):
    return expand_urls(shard_pattern(synthesize(tmp_path_factory.mktemp("cap"), n=60, seed=4,
                                                shard_size=30, image_size=40)))  # fmt: skip


@pytest.mark.parametrize("workers", [0, 2])
def test_captions_are_in_image_order_and_missing_ones_counted(captioned, workers):
    crops = CropConfig(global_size=16, local_size=8, n_local=0)
    loader = LaneLoader(captioned, 0, crops, 8, 2, 0, 1, num_workers=workers, captions=True)
    batches = list(itertools.islice(loader, 6))
    loader.close()
    want: list[str | None] = []  # lane 0's 4 images, then lane 1's, step after step
    streams = {lane: iter(ShardStream(captioned, seed=0, rank=lane)) for lane in (0, 1)}
    for _ in batches:
        for lane in (0, 1):
            want += [caption_of(next(streams[lane]).members) for _ in range(4)]
    got = [c for b in batches for c in b.captions]
    assert got == want and all(len(b.captions) == 8 for b in batches)
    missing = sum(c is None for c in got)
    assert missing > 0  # the synthetic corpus leaves ~8% without a caption
    counted = sum(c["no_caption"] for c in batches[-1].problems.values())
    assert counted == missing


def test_captions_are_not_counted_when_the_objective_does_not_use_them(captioned):
    crops = CropConfig(global_size=16, local_size=8, n_local=0)
    loader = LaneLoader(captioned, 0, crops, 8, 2, 0, 1)
    batches = list(itertools.islice(loader, 6))
    assert any(c is None for b in batches for c in b.captions)
    assert all(not c["no_caption"] for c in batches[-1].problems.values())
