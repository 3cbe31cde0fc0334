import io
import json
import tarfile

import pytest

from webssl_cli.data.shards import (
    Problems,
    decode_image,
    expand_braces,
    iter_samples,
    list_shards,
    shard_bytes,
    write_shard,
)
from webssl_cli.data.synth import make_sample, parse_mix
from webssl_cli.errors import UserError


def good(i):
    return make_sample(5, i, 64, parse_mix("natural=1,document=1"))


def bad_shard(path):
    """Two good samples around every kind of bad member."""
    k0, m0 = good(0)
    k1, m1 = good(1)
    jpg = m0["jpg"]
    samples = [
        (k0, m0),
        ("undecodable", {"jpg": b"\xff\xd8\xff\xe0 not really a jpeg", "json": b"{}"}),
        ("cut_jpeg", {"jpg": jpg[: len(jpg) // 2], "json": b"{}"}),
        ("no_image", {"json": b'{"has_text": true}'}),
        ("extra", {"jpg": jpg, "exe": b"MZ\x90\x00"}),  # an image plus a non-image member
        (k1, m1),
    ]
    return write_shard(path, samples)


def test_write_is_deterministic_and_reads_back(tmp_path):
    samples = [good(i) for i in range(3)]
    assert shard_bytes(samples) == shard_bytes(samples)
    path = write_shard(tmp_path / "s.tar", samples)
    got = list(iter_samples(path))
    assert [s.key for s in got] == [k for k, _ in samples]
    assert got[0].members == samples[0][1]
    assert decode_image(got[0].image_bytes).ndim == 3


def test_bad_members_are_counted_and_skipped(tmp_path):
    path = bad_shard(tmp_path / "bad.tar")
    problems = Problems()
    got = list(iter_samples(path, problems))
    # The reader yields every sample with an image member; decoding is the caller's check.
    assert [s.key for s in got] == [
        "s5_00000000",
        "undecodable",
        "cut_jpeg",
        "extra",
        "s5_00000001",
    ]
    assert problems.as_dict() == {"no_image": 1, "non_image_member": 1}
    assert [decode_image(s.image_bytes) is None for s in got] == [False, True, True, False, False]


@pytest.mark.parametrize("where", ["mid_member", "member_boundary", "header"])
def test_truncated_tar_yields_what_came_before(tmp_path, where):
    path = write_shard(tmp_path / "t.tar", [good(i) for i in range(4)])
    raw = path.read_bytes()
    with tarfile.open(path) as tar:
        third = tar.getmembers()[4]  # sample 2's image
    cut = {
        "mid_member": third.offset_data + 100,
        "member_boundary": third.offset,
        "header": third.offset + 200,
    }
    path.write_bytes(raw[: cut[where]])
    problems = Problems()
    keys = [s.key for s in iter_samples(path, problems)]
    assert problems.as_dict() == {"truncated_tar": 1}
    # Samples 0 and 1 were whole; the one being read at the cut is dropped.
    assert keys in (["s5_00000000", "s5_00000001"], ["s5_00000000"])


def test_unreadable_and_empty_shards(tmp_path):
    (tmp_path / "junk.tar").write_bytes(b"")
    problems = Problems()
    assert list(iter_samples(tmp_path / "junk.tar", problems)) == []
    assert sum(problems.counts.values()) == 1
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w"):
        pass
    (tmp_path / "empty.tar").write_bytes(buf.getvalue())
    problems = Problems()
    assert list(iter_samples(tmp_path / "empty.tar", problems)) == [] and not problems.counts


def test_list_shards(tmp_path):
    for i in range(3):
        write_shard(tmp_path / f"shard-{i:06d}.tar", [good(i)])
    assert expand_braces("a-{08..10}.tar") == ["a-08.tar", "a-09.tar", "a-10.tar"]
    assert len(list_shards(str(tmp_path / "shard-{000000..000002}.tar"))) == 3
    assert len(list_shards(str(tmp_path))) == 3
    assert len(list_shards(str(tmp_path / "shard-*.tar"))) == 3
    with pytest.raises(UserError, match="1 of 4 shards do not exist"):
        list_shards(str(tmp_path / "shard-{000000..000003}.tar"))
    with pytest.raises(UserError, match="no such file"):
        list_shards(str(tmp_path / "nope"))
    assert json.loads(next(iter_samples(list_shards(str(tmp_path))[0])).members["json"])["kind"]
