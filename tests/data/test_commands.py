import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from webssl_cli.cli import app
from webssl_cli.data.shards import iter_shards, list_shards, write_shard
from webssl_cli.data.synth import make_sample, parse_mix

runner = CliRunner()


def run(*args):
    return runner.invoke(app, ["data", *map(str, args)])


def test_synth_stats_filter_roundtrip(tmp_path):
    r = run(
        "synth", tmp_path / "src", "--n", 24, "--shard-size", 10, "--image-size", 64, "--seed", 2
    )
    assert r.exit_code == 0, r.output
    assert "24 samples in 3 shards" in r.output
    r = run("stats", tmp_path / "src", "--json")
    st = json.loads(r.output)
    assert r.exit_code == 0 and st["samples"] == 24 and st["shards"] == 3 and st["skipped"] == {}
    assert st["image_size"]["width"]["max"] == 64 and "label_fractions" in st
    r = run(
        "filter",
        tmp_path / "src",
        "--filter",
        "light",
        "--classifier",
        "label",
        "--out",
        tmp_path / "f",
    )
    assert r.exit_code == 0, r.output
    assert "processed 3 shards, 0 already done" in r.output
    r = run(
        "filter",
        tmp_path / "src",
        "--filter",
        "light",
        "--classifier",
        "label",
        "--out",
        tmp_path / "f",
    )
    assert r.exit_code == 0 and "processed 0 shards, 3 already done" in r.output
    r = run("stats", tmp_path / "f", "--json")
    st = json.loads(r.output)
    assert st["label_fractions"]["light"] == 1.0 and st["filter"]["kept"] == st["samples"]


def test_filter_workers_and_user_errors(tmp_path):
    run("synth", tmp_path / "src", "--n", 12, "--shard-size", 4, "--image-size", 48)
    args = [
        "filter",
        tmp_path / "src",
        "--filter",
        "heavy",
        "--classifier",
        "label",
        "--out",
        tmp_path / "f",
    ]
    r = run(*args, "--workers", 2)
    assert r.exit_code == 0, r.output
    assert "processed 3 shards" in r.output
    r = run("filter", tmp_path / "src", "--filter", "light", "--classifier", "clip")
    assert r.exit_code == 2 and "unknown classifier 'clip'" in r.output
    r = run("filter", tmp_path / "src", "--filter", "light", "--classifier", "vlm")
    assert r.exit_code == 2 and "--vlm-path" in r.output
    r = run("filter", tmp_path / "nope", "--filter", "light")
    assert r.exit_code == 2 and "no such file" in r.output
    r = run("synth", tmp_path / "x", "--mix", "photo=1")
    assert r.exit_code == 2 and "unknown kind" in r.output


def test_bad_data_through_the_commands(tmp_path):
    src = tmp_path / "src"
    good = [make_sample(1, i, 48, parse_mix(None)) for i in range(3)]
    write_shard(
        src / "shard-000000.tar", [*good, ("bad", {"jpg": b"nope"}), ("meta", {"json": b"{}"})]
    )
    raw = write_shard(src / "shard-000001.tar", good).read_bytes()
    (src / "shard-000001.tar").write_bytes(raw[:700])
    r = run("stats", src, "--json")
    st = json.loads(r.output)
    assert r.exit_code == 0
    assert st["samples"] == 3 and st["skipped"] == {
        "no_image": 1,
        "truncated_tar": 1,
        "undecodable": 1,
    }
    r = run("filter", src, "--filter", "light", "--classifier", "label", "--out", tmp_path / "f")
    assert r.exit_code == 0 and "no_image 1, truncated_tar 1, undecodable 1" in r.output
    # Nothing usable: non-zero exit with the counts.
    write_shard(tmp_path / "junk" / "shard-000000.tar", [("bad", {"jpg": b"nope"})])
    r = run("stats", tmp_path / "junk")
    assert r.exit_code == 2 and "undecodable" in r.output
    r = run(
        "filter",
        tmp_path / "junk",
        "--filter",
        "light",
        "--classifier",
        "label",
        "--out",
        tmp_path / "g",
    )
    assert r.exit_code == 2 and "no usable samples" in r.output


def _jpeg(i):
    return make_sample(9, i, 48, parse_mix(None))[1]["jpg"]


def test_shard_from_folder_is_stable(tmp_path):
    src = tmp_path / "imgs"
    for cls in ("cats", "dogs"):
        (src / cls).mkdir(parents=True)
        for i in range(3):
            (src / cls / f"img.{i}.jpg").write_bytes(_jpeg(i))
    (src / "cats" / "broken.jpg").write_bytes(b"xx")
    (src / "notes.md").write_text("hi")
    r = run("shard", src, tmp_path / "a", "--shard-size", 4)
    assert r.exit_code == 0, r.output
    assert "6 samples in 2 shards" in r.output and "undecodable 1" in r.output
    run("shard", src, tmp_path / "b", "--shard-size", 4)
    a, b = sorted((tmp_path / "a").glob("*.tar")), sorted((tmp_path / "b").glob("*.tar"))
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    samples = list(iter_shards(list_shards(str(tmp_path / "a"))))
    assert samples[0].key == "cats_img_0"
    assert samples[0].meta()["class_name"] == "cats" and samples[-1].meta()["class"] == 1


def test_shard_from_img2dataset_tar_and_parquet(tmp_path):
    write_shard(
        tmp_path / "i2d" / "00000.tar",
        [(f"0000{i}", {"jpg": _jpeg(i), "txt": b"a cat"}) for i in range(5)],
    )
    r = run("shard", tmp_path / "i2d", tmp_path / "a", "--shard-size", 2)
    assert r.exit_code == 0 and "5 samples in 3 shards" in r.output
    keys = [s.key for s in iter_shards(list_shards(str(tmp_path / "a")))]
    assert keys == [f"0000{i}" for i in range(5)]
    table = pa.table(
        {"key": ["k1", "k2"], "jpg": [_jpeg(1), None], "url": ["http://x/1", "http://x/2"]}
    )
    (tmp_path / "pq").mkdir()
    pq.write_table(table, tmp_path / "pq" / "00000.parquet")
    r = run("shard", tmp_path / "pq", tmp_path / "b")
    assert r.exit_code == 0 and "1 samples" in r.output and "no_image 1" in r.output
    s = next(iter_shards(list_shards(str(tmp_path / "b"))))
    assert s.key == "k1" and s.meta()["url"] == "http://x/1"


@pytest.mark.parametrize("bad", ["--shard-size=0"])
def test_shard_user_errors(tmp_path, bad):
    r = run("shard", tmp_path, tmp_path / "o", bad)
    assert r.exit_code == 2
