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


def test_class_objects_mostly_take_their_class_colour(tmp_path):
    from collections import Counter

    from webssl_cli.data.scenes import CLASS_COLOURS, TYPICAL_COLOUR_P

    paths = synthesize(tmp_path, n=600, seed=9, shard_size=600, image_size=64, mix={"natural": 1.0})
    by_class: dict[str, Counter[str]] = {}
    for s in iter_shards(paths):
        meta = json.loads(s.members["json"])
        by_class.setdefault(meta["class_name"], Counter())[meta["objects"][-1]["color"]] += 1
    typical = sum(c[CLASS_COLOURS[name]] for name, c in by_class.items()) / 600
    # the typical colour where it stands out (about 9 in 10 backgrounds), else a contrasting one
    assert TYPICAL_COLOUR_P - 0.2 < typical <= TYPICAL_COLOUR_P, typical
    for name, counts in by_class.items():
        assert counts.most_common(1)[0][0] == CLASS_COLOURS[name], (name, counts)
    # atypical colours occur, so colour alone never names the class for certain
    assert sum(sum(c.values()) - c[CLASS_COLOURS[n]] for n, c in by_class.items()) >= 10


def test_data_of_another_generator_version_is_refused_in_one_line(tmp_path):
    from webssl_cli.data.synth import GENERATOR_FILE, GENERATOR_VERSION, check_generator

    synthesize(tmp_path / "d", n=4, seed=0, shard_size=4, image_size=32)
    check_generator(tmp_path / "d", "synth", GENERATOR_VERSION)  # its own version: accepted
    stamp = tmp_path / "d" / GENERATOR_FILE
    stamp.write_text(json.dumps({"generator": "synth", "version": GENERATOR_VERSION - 1}))
    with pytest.raises(UserError, match=r"/d: synthetic data written by version 1 .*delete"):
        check_generator(tmp_path / "d", "synth", GENERATOR_VERSION)
    stamp.unlink()  # written before versions were kept
    with pytest.raises(UserError, match="an older version of the synth generator"):
        check_generator(tmp_path / "d", "synth", GENERATOR_VERSION)


def test_study_run_refuses_synthetic_data_of_another_version(tmp_path):
    from typer.testing import CliRunner

    from webssl_cli.cli import app
    from webssl_cli.data.synth import GENERATOR_FILE

    out = tmp_path / "runs"
    study = tmp_path / "s.yaml"
    study.write_text(
        f"name: s\noutput_dir: {out}\ncluster: local\npreset: test\n"
        "data:\n  sources:\n    web: {synthesize: {n: 8, seed: 0, shard_size: 8, image_size: 32}}\n"
        "  filters:\n    full: {source: web}\n"
        "grid:\n  model: [vit-test]\n  samples_seen: [16]\n  data_filter: [full]\nevals: []\n"
    )
    data = out / "data" / "web"
    synthesize(data, n=8, seed=0, shard_size=8, image_size=32)
    (data / GENERATOR_FILE).unlink()  # as written by a webssl before generator versions
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    result = CliRunner().invoke(app, ["study", "run", str(study), "--wait"])
    assert result.exit_code != 0
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert "Traceback" not in result.output
    assert any("synthetic data written by an older version" in x and str(data) in x for x in lines)
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before  # nothing rewritten
    assert not list(out.glob("cells/*/train/*"))  # refused before any stage ran


def test_a_study_source_of_dense_scenes_is_generated_trained_on_and_probed(tmp_path):
    from typer.testing import CliRunner

    from webssl_cli.cli import app
    from webssl_cli.data.synth import GENERATOR_FILE

    out = tmp_path / "runs"
    study = tmp_path / "s.yaml"
    study.write_text(
        f"name: s\noutput_dir: {out}\ncluster: local\npreset: test\n"
        "data:\n  sources:\n"
        "    scenes: {synthesize: {dense: true, n: 8, seed: 3, shard_size: 8, image_size: 32}}\n"
        "    synth-dense: {synthesize: {dense: true, n: 12, seed: 1, shard_size: 6, image_size: 32}}\n"
        "  filters:\n    full: {source: scenes}\n"
        "grid:\n  model: [vit-test]\n  samples_seen: [16]\n  data_filter: [full]\n"
        "evals:\n  - {task: depth, epochs: 1, bins_upsample: 1}\n"
    )
    result = CliRunner().invoke(app, ["study", "run", str(study), "--wait"])
    assert result.exit_code == 0, result.output
    assert "generating synthetic source 'scenes' (8 dense scenes)" in result.output
    for name in ("scenes", "synth-dense"):
        stamp = json.loads((out / "data" / name / GENERATOR_FILE).read_text())
        assert stamp["generator"] == "dense"
    (cell,) = out.glob("cells/*")
    rows = json.loads((cell / "eval" / "depth.json").read_text())["results"]
    assert {(r["metric"], r.get("variant")) for r in rows} >= {
        ("delta1", None),
        ("delta1", "random-init"),
    }
    # the same directory stamped as the web-like generator's is refused, in one line
    (out / "data" / "scenes" / GENERATOR_FILE).write_text('{"generator": "synth", "version": 2}')
    result = CliRunner().invoke(app, ["study", "run", str(study), "--wait"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "an older version of the dense generator" in result.output
    # a dense source with a web-corpus mix is a one-line error naming the field
    study.write_text(
        study.read_text().replace("dense: true, n: 8", "dense: true, mix: {natural: 1.0}, n: 8")
    )
    result = CliRunner().invoke(app, ["study", "validate", str(study)])
    assert result.exit_code != 0 and "mix" in result.output and "Traceback" not in result.output
