import io
import itertools
import tarfile

import pytest

from webssl_cli.data.stream import Position, ShardStream, expand_urls
from webssl_cli.errors import UserError


def _shard(path, keys, corrupt=False):
    with tarfile.open(path, "w") as tar:
        for k in keys:
            for ext, data in (("jpg", f"img{k}".encode()), ("json", b"{}")):
                info = tarfile.TarInfo(f"{k}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    if corrupt:
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])


@pytest.fixture
def pattern(tmp_path):
    for s in range(3):
        _shard(tmp_path / f"s-{s}.tar", [f"{s}-{i:03d}" for i in range(10)])
    return str(tmp_path / "s-{0..2}.tar")


def _keys(stream, n):
    return [x.key for x in itertools.islice(stream, n)]


def test_expand_urls(pattern):
    assert len(expand_urls(pattern)) == 3
    assert len(expand_urls([pattern, pattern])) == 6
    assert len(expand_urls(f"{pattern}::{pattern}")) == 6


def test_endless_resampled_and_grouped(pattern):
    samples = list(itertools.islice(ShardStream(expand_urls(pattern), seed=1, shuffle_block=4), 75))
    assert len(samples) == 75  # more than the 30 samples there are: it repeats
    assert all(set(s.members) == {"jpg", "json"} for s in samples)
    assert samples[0].members["jpg"] == f"img{samples[0].key}".encode()


def test_order_is_a_pure_function_of_seed_rank_and_position(pattern):
    urls = expand_urls(pattern)
    full = list(itertools.islice(ShardStream(urls, seed=3, shuffle_block=4), 50))
    for cut in (1, 7, 10, 23):
        resumed = ShardStream(urls, seed=3, shuffle_block=4, start=full[cut - 1].position)
        assert _keys(resumed, 50 - cut) == [s.key for s in full[cut:]]
    assert _keys(ShardStream(urls, seed=3, rank=1, shuffle_block=4), 50) != [s.key for s in full]
    assert _keys(ShardStream(urls, seed=4, shuffle_block=4), 50) != [s.key for s in full]
    # within a block the order is shuffled, not file order
    assert [s.key for s in full[:4]] != sorted(s.key for s in full[:4])


def test_pipe_urls(pattern, tmp_path):
    urls = [f"pipe:cat {u}" for u in expand_urls(pattern)]
    assert _keys(ShardStream(urls, seed=0, allow_pipe=True), 12) == _keys(
        ShardStream(expand_urls(pattern), seed=0), 12
    )


def test_pipe_urls_refused_unless_allowed(pattern, tmp_path, monkeypatch):
    from collections import Counter

    from webssl_cli.data.stream import ALLOW_PIPE_ENV, read_shard
    from webssl_cli.errors import UserError

    marker = tmp_path / "ran"
    urls = [f"pipe:touch {marker}; cat {u}" for u in expand_urls(pattern)]
    monkeypatch.delenv(ALLOW_PIPE_ENV, raising=False)
    with pytest.raises(UserError, match="set data.allow_pipe: true") as err:
        ShardStream(urls, seed=0)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="pipe: command"):
        next(read_shard(urls[0], Counter()))
    monkeypatch.setenv(ALLOW_PIPE_ENV, "0")
    with pytest.raises(UserError):
        ShardStream(urls, seed=0)
    assert not marker.exists()  # nothing ran
    monkeypatch.setenv(ALLOW_PIPE_ENV, "1")  # what a study with data.allow_pipe gives its jobs
    assert len(_keys(ShardStream(urls, seed=0), 5)) == 5 and marker.exists()
    with pytest.raises(UserError):
        ShardStream(urls, seed=0, allow_pipe=False)


def test_truncated_shard_is_counted_not_fatal(tmp_path):
    _shard(tmp_path / "good.tar", [f"g{i}" for i in range(10)])
    _shard(tmp_path / "bad.tar", [f"b{i}" for i in range(40)], corrupt=True)
    urls = [str(tmp_path / "good.tar"), str(tmp_path / "bad.tar"), str(tmp_path / "missing.tar")]
    stream = ShardStream(urls, seed=0)
    keys = _keys(stream, 200)
    assert len(keys) == 200 and any(k.startswith("g") for k in keys)
    assert stream.problems["truncated_tar"] > 0 and stream.problems["unreadable_shard"] > 0


def test_no_readable_shard_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no sample"):
        _keys(ShardStream([str(tmp_path / "none.tar")], seed=0), 1)
    with pytest.raises(UserError):
        ShardStream([], seed=0)


def test_position_default():
    assert Position() == Position(0, 0)
