import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow.parquet as pq
import pytest

from webssl_cli.data.filtering import (
    filter_key,
    filter_stats,
    filtered_sources,
    run_filter_shards,
)
from webssl_cli.data.shards import iter_shards, write_shard
from webssl_cli.data.synth import shard_pattern, synthesize
from webssl_cli.errors import UserError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    paths = synthesize(tmp_path_factory.mktemp("src"), n=48, seed=3, shard_size=8, image_size=64)
    return shard_pattern(paths)


def truth(pattern, field):
    from webssl_cli.data.shards import list_shards

    return {s.key: bool(s.meta()[field]) for s in iter_shards(list_shards(pattern))}


def test_filter_key():
    assert filter_key("synth", "light", "ocr") == "synth-light-ocr-v1"
    with pytest.raises(UserError, match='did you mean "heavy"'):
        filter_key("synth", "heavvy", "ocr")


@pytest.mark.parametrize(
    ("filt", "field"), [("light", "has_text"), ("heavy", "is_chart_or_document")]
)
def test_label_filter_outputs(tmp_path, corpus, filt, field):
    res = run_filter_shards(corpus, filt, "label", tmp_path / "f")
    assert res["complete"] and res["processed"] == list(range(6))
    want = truth(corpus, field)
    keep = pq.read_table(tmp_path / "f" / "keep.parquet").to_pydict()
    assert set(keep) >= {"key", "score", "decision", "classifier", "version"}
    assert dict(zip(keep["key"], keep["decision"], strict=True)) == want
    assert set(keep["classifier"]) == {"label"} and set(keep["version"]) == {"1"}
    stats = json.loads((tmp_path / "f" / "stats.json").read_text())
    assert stats["total"] == 48 and stats["kept"] == sum(want.values())
    assert stats["fraction"] == pytest.approx(stats["kept"] / 48)
    assert filter_stats(tmp_path / "f") == stats
    kept_keys = [s.key for s in iter_shards(filtered_sources(tmp_path / "f"))]
    assert sorted(kept_keys) == sorted(k for k, v in want.items() if v)
    # Cached: a second call does no work.
    again = run_filter_shards(corpus, filt, "label", tmp_path / "f")
    assert again["cached"] and again["processed"] == []


def test_disjoint_shard_subsets_then_finalise(tmp_path, corpus):
    out = tmp_path / "f"
    a = run_filter_shards(corpus, "light", "label", out, shard_ids=[0, 2, 4])
    assert not a["complete"] and a["stats"] is None
    assert filter_stats(out)["shards_done"] == 3
    with pytest.raises(UserError, match="unfinished"):
        filtered_sources(out)
    b = run_filter_shards(corpus, "light", "label", out, shard_ids=[1, 3, 5])
    assert b["complete"] and b["stats"]["total"] == 48
    with pytest.raises(UserError, match="another filter"):
        run_filter_shards(corpus, "heavy", "label", out)
    with pytest.raises(UserError, match="out of range"):
        run_filter_shards(corpus, "light", "label", tmp_path / "g", shard_ids=[6])


def bad_shard(path):
    """Two good samples around every kind of bad member (as in test_shards.py)."""
    from webssl_cli.data.synth import make_sample, parse_mix

    k0, m0 = make_sample(5, 0, 64, parse_mix("natural=1"))
    k1, m1 = make_sample(5, 1, 64, parse_mix("natural=1"))
    jpg = m0["jpg"]
    samples = [
        (k0, m0),
        ("undecodable", {"jpg": b"\xff\xd8\xff\xe0 not really a jpeg", "json": b"{}"}),
        ("cut_jpeg", {"jpg": jpg[: len(jpg) // 2], "json": b"{}"}),
        ("no_image", {"json": b'{"has_text": true}'}),
        ("extra", {"jpg": jpg, "exe": b"MZ\x90\x00"}),
        (k1, m1),
    ]
    return write_shard(path, samples)


def test_bad_data_is_counted_and_skipped(tmp_path, corpus):
    src = tmp_path / "src"
    bad_shard(src / "shard-000000.tar")
    from webssl_cli.data.synth import make_sample, parse_mix

    samples = [make_sample(6, i, 64, parse_mix(None)) for i in range(4)]
    raw = write_shard(src / "shard-000001.tar", samples).read_bytes()
    (src / "shard-000001.tar").write_bytes(raw[: int(len(raw) * 0.6)])  # truncated
    res = run_filter_shards(str(src), "light", "label", tmp_path / "f")
    st = res["stats"]
    assert st["skipped"] == {
        "undecodable": 2,
        "no_image": 1,
        "non_image_member": 1,
        "truncated_tar": 1,
    }
    assert 4 <= st["total"] <= 5  # shard 0's three good samples plus those before the cut


SLOW_FILTER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import webssl_cli.data.filtering as f
    real = f._process_shard
    def slow(*args, **kwargs):
        out = real(*args, **kwargs)
        time.sleep(0.5)
        return out
    f._process_shard = slow
    f.run_filter_shards(sys.argv[1], "heavy", "label", Path(sys.argv[2]))
    """
)


def test_rerun_after_kill_redoes_only_unfinished_shards(tmp_path, corpus):
    out = tmp_path / "f"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_FILTER, corpus, str(out)], env=env)
    done = out / "done"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(done.glob("*.json"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = sorted(int(p.stem.split("-")[1]) for p in done.glob("*.json"))
    assert 2 <= len(finished) < 6, "the kill must land midway"
    before = {p.name: p.read_bytes() for p in done.glob("*.json")}
    assert not (out / "stats.json").exists()
    res = run_filter_shards(corpus, "heavy", "label", out)
    assert res["already_done"] == finished
    assert res["processed"] == [i for i in range(6) if i not in finished]
    assert all((done / name).read_bytes() == data for name, data in before.items())
    assert res["complete"] and res["stats"]["total"] == 48


def test_nothing_usable(tmp_path):
    write_shard(tmp_path / "src" / "shard-000000.tar", [("a", {"jpg": b"junk"})])
    res = run_filter_shards(str(tmp_path / "src"), "light", "label", tmp_path / "f")
    assert res["stats"]["total"] == 0 and res["stats"]["skipped"] == {"undecodable": 1}
    with pytest.raises(UserError, match="kept no samples"):
        filtered_sources(tmp_path / "f")
