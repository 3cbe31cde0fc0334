import json

import numpy as np
import pytest

from webssl_cli.data.shards import decode_image, iter_shards
from webssl_cli.data.synth import CLASS_NAMES, KINDS, parse_mix, shard_pattern, synthesize
from webssl_cli.errors import UserError

KEYS = {
    "key", "kind", "class", "class_name", "has_text", "is_chart_or_document", "words",
    "objects", "chart", "document", "width", "height",
}  # fmt: skip


def test_same_seed_is_byte_identical_and_shard_size_independent(tmp_path):
    a = synthesize(tmp_path / "a", n=30, seed=7, shard_size=8, image_size=96)
    b = synthesize(tmp_path / "b", n=30, seed=7, shard_size=8, image_size=96)
    assert [p.name for p in a] == [f"shard-{i:06d}.tar" for i in range(4)]
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    c = synthesize(tmp_path / "c", n=30, seed=8, shard_size=8, image_size=96)
    assert a[0].read_bytes() != c[0].read_bytes()
    # Each sample depends only on (seed, index): other shard sizes hold the same samples.
    d = synthesize(tmp_path / "d", n=30, seed=7, shard_size=30, image_size=96)
    same = {s.key: s.members for s in iter_shards(a)}
    assert {s.key: s.members for s in iter_shards(d)} == same
    assert shard_pattern(a).endswith("shard-{000000..000003}.tar")


def test_ground_truth_schema(tmp_path):
    paths = synthesize(tmp_path, n=60, seed=1, shard_size=60, image_size=128)
    kinds = set()
    for s in iter_shards(paths):
        meta = json.loads(s.members["json"])
        assert set(meta) >= KEYS
        assert meta["key"] == s.key
        assert meta["kind"] in KINDS
        assert meta["class_name"] == CLASS_NAMES[meta["class"]]
        rgb = decode_image(s.members["jpg"])
        assert rgb.shape == (meta["height"], meta["width"], 3)
        assert max(rgb.shape[:2]) == 128
        kinds.add(meta["kind"])
        text = meta["kind"] != "natural"
        assert meta["has_text"] is text and bool(meta["words"]) is text
        assert meta["is_chart_or_document"] is (meta["kind"] in ("chart", "document", "table"))
        if meta["kind"] in ("natural", "scene_text"):
            assert meta["objects"] and meta["objects"][-1]["shape"] == meta["class_name"]
            for obj in meta["objects"]:
                assert obj["color"] in (
                    "red",
                    "green",
                    "blue",
                    "yellow",
                    "orange",
                    "purple",
                    "white",
                    "black",
                )
                assert len(obj["bbox"]) == 4
        if meta["kind"] == "chart":
            c = meta["chart"]
            assert c["type"] in ("bar", "line", "pie") and len(c["labels"]) == len(c["values"])
        if meta["kind"] in ("document", "table"):
            assert meta["document"]["title"] and meta["document"]["fields"]
    assert kinds == set(KINDS)


def test_probe_set_classes_are_balanced_and_distinct(tmp_path):
    paths = synthesize(
        tmp_path, n=200, seed=123, shard_size=200, image_size=64, mix={"natural": 1.0}
    )
    classes = [json.loads(s.members["json"])["class"] for s in iter_shards(paths)]
    counts = np.bincount(classes, minlength=10)
    assert len(counts) == 10 and counts.min() >= 8


def test_mix_parsing_errors():
    assert parse_mix("natural=1,chart=1")["chart"] == 0.5
    with pytest.raises(UserError, match="unknown kind 'photo'"):
        parse_mix("photo=1")
    with pytest.raises(UserError, match="kind=number"):
        parse_mix("natural")
    with pytest.raises(UserError, match="sum to 0"):
        parse_mix("natural=0")
