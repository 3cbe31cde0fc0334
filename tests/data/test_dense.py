"""Synthetic dense scenes: byte-identical per seed, masks and depth consistent with the drawing
(nearer objects cover farther ones), readable back through the shard reader, and the existing
corpus untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from webssl_cli.data.dense import (
    DENSE_CLASSES,
    decode_depth,
    decode_seg,
    encode_depth,
    make_dense_sample,
    render_scene,
    synthesize_dense,
)
from webssl_cli.errors import UserError


def test_byte_identical_per_seed_and_different_across_seeds(tmp_path: Path) -> None:
    a = synthesize_dense(tmp_path / "a", n=6, seed=3, shard_size=4, image_size=64)
    b = synthesize_dense(tmp_path / "b", n=6, seed=3, shard_size=4, image_size=64)
    c = synthesize_dense(tmp_path / "c", n=6, seed=4, shard_size=4, image_size=64)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert a[0].read_bytes() != c[0].read_bytes()
    # a sample depends on (seed, index) only, not on the shard size
    assert make_dense_sample(3, 5, 64) == make_dense_sample(3, 5, 64)


def test_masks_and_depth_agree_with_the_scene() -> None:
    for index in range(12):
        rng = np.random.default_rng([0, index, 1])
        img, seg, depth, meta = render_scene(rng, 96, 72)
        assert img.shape == (72, 96, 3) and seg.shape == depth.shape == (72, 96)
        assert set(np.unique(seg)) <= set(range(len(DENSE_CLASSES)))
        assert np.all(depth > 0) and np.all(depth <= meta["wall_depth"] + 1e-4)
        assert np.allclose(
            depth[seg == 0], meta["wall_depth"], atol=1e-4
        )  # the wall is fronto-parallel
        floor = seg == 1
        if floor.any():  # the floor recedes: depth grows towards the horizon (upwards)
            col = floor[:, 48]
            d = depth[col, 48]
            assert np.all(np.diff(d) <= 1e-5)
        # every object pixel carries the class and depth of one object drawn there
        obj = seg >= 2
        ok = np.zeros_like(obj)
        for o in meta["objects"]:
            ok |= (seg == o["class"]) & np.isclose(depth, o["depth"], atol=1e-4)
        assert np.array_equal(ok, obj)


def test_nearer_objects_are_drawn_last() -> None:
    # find a scene where two objects overlap and check the nearer one owns the overlap
    seen = 0
    for index in range(200):
        rng = np.random.default_rng([1, index, 2])
        _, seg, depth, meta = render_scene(rng, 96, 96)
        objs = meta["objects"]
        for i, a in enumerate(objs):
            for b in objs[i + 1 :]:
                if a["class"] == b["class"]:
                    continue
                ax0, ay0, ax1, ay1 = a["bbox"]
                bx0, by0, bx1, by1 = b["bbox"]
                if ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1:
                    near = a if a["depth"] < b["depth"] else b
                    box = seg[max(ay0, by0) : min(ay1, by1), max(ax0, bx0) : min(ax1, bx1)]
                    dep = depth[max(ay0, by0) : min(ay1, by1), max(ax0, bx0) : min(ax1, bx1)]
                    # inside the boxes' overlap, no pixel is deeper-object while nearer-object depth
                    assert not np.any(
                        (box != near["class"]) & np.isclose(dep, near["depth"]) & (box >= 2)
                    )
                    seen += 1
    assert seen > 0


def test_shards_read_back_with_their_targets(tmp_path: Path) -> None:
    from webssl_cli.data.shards import Problems, iter_shards

    paths = synthesize_dense(tmp_path, n=5, seed=0, shard_size=5, image_size=64)
    problems = Problems()
    samples = list(iter_shards(paths, problems))
    assert len(samples) == 5 and not problems.as_dict()
    s = samples[0]
    assert {"jpg", "seg.png", "depth.png", "json"} <= set(s.members)
    seg, depth = decode_seg(s.members["seg.png"]), decode_depth(s.members["depth.png"])
    assert seg.dtype == np.uint8 and depth.dtype == np.float32 and seg.shape == depth.shape
    assert s.meta()["classes"] == list(DENSE_CLASSES)
    # millimetre encoding round trip; 0 stays invalid
    d = np.array([[0.0, 1.2345, 9.9994]], np.float32)
    assert np.allclose(decode_depth(encode_depth(d)), [[0.0, 1.234, 9.999]], atol=1e-3)


def test_bad_arguments_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--n"):
        synthesize_dense(tmp_path, n=0)
    with pytest.raises(UserError, match="--image-size"):
        synthesize_dense(tmp_path, n=1, image_size=8)


def test_existing_corpus_images_unchanged(tmp_path: Path) -> None:
    """The images of ``synthesize`` for a fixed seed and config (other studies depend on them):
    dense scenes draw from a stream of their own. Pinned at synth.GENERATOR_VERSION 2."""
    from webssl_cli.data.shards import iter_shards
    from webssl_cli.data.synth import synthesize

    paths = synthesize(tmp_path, n=24, seed=0, shard_size=24, image_size=64)
    digest = hashlib.sha256(b"".join(s.members["jpg"] for s in iter_shards(paths))).hexdigest()
    assert digest == GOLDEN_SYNTH_JPG


GOLDEN_SYNTH_JPG = "e154bf7a18cb12bdfd86d360822ae364055c7cb2ff3feb05ea1efc85ac64a041"


def test_cli_synth_dense(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from webssl_cli.cli import app
    from webssl_cli.data.shards import Problems, iter_shards, list_shards

    r = CliRunner().invoke(app, ["data", "synth", str(tmp_path / "d"), "--dense", "--n", "7",
                                 "--shard-size", "4", "--image-size", "48"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "7 dense scenes in 2 shards" in r.output
    problems = Problems()
    samples = list(
        iter_shards(list_shards(str(tmp_path / "d" / "shard-{000000..000001}.tar")), problems)
    )
    assert len(samples) == 7 and not problems.as_dict()
    assert all("seg.png" in s.members and "depth.png" in s.members for s in samples)
    # the stats command reads them as images with no problem either
    r = CliRunner().invoke(app, ["data", "stats", str(tmp_path / "d"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["skipped"] == {}
