"""A catalog of hostile and careless inputs: each is a one-line error with exit code 2, or a
counted skip, within seconds; never a traceback, a hang or a silent loss.

Kinds: study files, profiles, status files, metrics, cell/eval files, shards, checkpoints,
command-line arguments. ``KINDS`` counts the cases of each.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from webssl_cli.cli import app

runner = CliRunner()
LIMIT_S = 20.0  # "within seconds", with room for a loaded 2-core machine

BASE = """\
name: t
output_dir: {out}
preset: test
data:
  sources:
    synth: {synthesize: {n: 100, shard_size: 50}}
  filters:
    full: {source: synth}
grid:
  model: [vit-test]
  samples_seen: [1K, 2K]
  data_filter: [full]
evals:
  - {task: knn}
"""


def _one_line_error(args: list[str]) -> str:
    t0 = time.time()
    r = runner.invoke(app, args)
    took = time.time() - t0
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2, (args, r.exit_code, r.output[-2000:], repr(r.exception))
    assert len(lines) == 1 and "Traceback" not in r.output, r.output[-2000:]
    assert took < LIMIT_S, took
    return lines[0]


# ---- study files ------------------------------------------------------------------------------
def _bomb() -> str:
    rows = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        rows.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return BASE + "extra:\n" + "\n".join("  " + r for r in rows) + "\n"


STUDIES: dict[str, tuple[str | bytes, str]] = {
    "alias-bomb": (_bomb(), "aliases are expanded"),
    "alias-recursive": (BASE + "extra: &r [*r]\n", "alias refers"),
    "deep-flow": (BASE + "extra: " + "[" * 20000 + "]" * 20000 + "\n", "levels deep"),
    "deep-block": (
        BASE + "".join("  " * i + f"k{i}:\n" for i in range(40)) + "  " * 40 + "x: 1\n",
        "levels deep",
    ),
    "nul": (BASE.replace("name: t", "name: t\x00"), "U+0000"),
    "esc": (BASE.replace("name: t", "name: t\x1b[2J"), "U+001B"),
    "del": (BASE + "comment: a\x7fb\n", "U+007F"),
    "c1": (BASE + "comment: a\x85b\n", "U+0085"),
    "bell-in-comment": (BASE + "# ring\x07\n", "U+0007"),
    "not-utf8": (BASE.encode() + b"comment: \xff\xfe\n", "UTF-8"),
    "huge": (BASE + "comment: " + "x" * (5 << 20) + "\n", "at most"),
    "empty": ("", "empty"),
    "top-level-list": ("- a\n- b\n", "expected a mapping"),
    "python-tag": (BASE + "comment: !!python/object/apply:os.system ['true']\n", "tag not allowed"),
    "duplicate-key": (BASE + "name: u\n", "duplicate key"),
    "name-trailing-newline": (BASE.replace("name: t", 'name: "t\\n"'), "name"),
    "source-name-newline": (BASE.replace("    synth: {", '    "synth\\n": {'), "plain name"),
    "filter-name-escape": (BASE.replace("    full: {source", '    "../x": {source'), "plain name"),
    "seed-2**31": (BASE + "seed: 2147483648\n", "2**31"),
    "seed-negative": (
        BASE.replace("  data_filter: [full]", "  data_filter: [full]\n  seed: [-1]"),
        "seed",
    ),
    "samples-1e20": (BASE.replace("[1K, 2K]", "[1e20]"), "below 1e15"),
    "batch-1e12": (BASE + "train: {batch_size: 1000000000000}\n", "2**31"),
    "lr-nan": (BASE + "train: {base_lr: .nan}\n", "train"),
    "lr-inf": (BASE + "train: {min_lr: .inf}\n", "min_lr"),
    "warmup-huge": (BASE + "train: {warmup_iters: 99999999999}\n", "2**31"),
    "million-cells": (
        BASE.replace(
            "  data_filter: [full]",
            "  data_filter: [full]\n  seed: ["
            + ", ".join(map(str, range(1000)))
            + "]\n  train.warmup_iters: ["
            + ", ".join(map(str, range(1000)))
            + "]",
        ),
        "max_cells",
    ),
    "max-cells-small": (BASE + "max_cells: 1\n", "max_cells"),
    "pipe-source": (
        BASE.replace(
            "synth: {synthesize: {n: 100, shard_size: 50}}",
            'synth: {shards: "pipe:curl http://x | cat"}',
        ),
        "allow_pipe",
    ),
    "synth-n-huge": (BASE.replace("n: 100,", "n: 1000000000000,"), "synthesize"),
    "synth-image-16": (BASE.replace("n: 100,", "n: 100, image_size: 16,"), "image_size"),
    "eval-name-newline": (BASE.replace("{task: knn}", '{task: knn, name: "k\\n"}'), "name"),
    "unknown-key": (BASE + "gird: {}\n", "unknown key"),
}


@pytest.mark.parametrize("case", sorted(STUDIES))
def test_hostile_study_file(case: str, tmp_path: Path) -> None:
    text, expect = STUDIES[case]
    path = tmp_path / "study.yaml"
    raw = text if isinstance(text, bytes) else text.encode("utf-8")
    path.write_bytes(raw.replace(b"{out}", str(tmp_path / "out").encode()))
    line = _one_line_error(["study", "validate", str(path)])
    assert expect in line, line
    assert not (tmp_path / "out").exists()


# ---- profiles ---------------------------------------------------------------------------------
PROFILE = "name: p\npartition: gpu\naccount: lab\nmax_array_size: 100\n"
PROFILES: dict[str, tuple[str | bytes, str]] = {
    "partition-newline": ('name: p\npartition: "gpu\\n"\n', "partition"),
    "partition-semicolon": ('name: p\npartition: "gpu; rm -rf ~"\n', "partition"),
    "account-backtick": ("name: p\naccount: '`id`'\n", "account"),
    "sbatch-extra-newline": (
        'name: p\nsbatch_extra: ["--exclusive\\n#SBATCH --x"]\n',
        "sbatch_extra",
    ),
    "setup-dollar": ('name: p\nsetup: ["echo $(id)"]\n', "setup"),
    "not-utf8": (PROFILE.encode() + b"# \xff\n", "UTF-8"),
    "nul": (PROFILE + "x: \x00\n", "U+0000"),
    "alias-bomb": (PROFILE + _bomb().split("extra:\n", 1)[1].replace("  a", "x_a", 1), "alias"),
    "deep": (PROFILE + "x: " + "[" * 5000 + "]" * 5000 + "\n", "levels deep"),
    "time-huge": ("name: p\ntrain: {default: {time_min: 99999999999}}\n", "2**31"),
    "gpus-huge": ("name: p\nnode: {gpus: 4294967296}\n", "2**31"),
}


@pytest.mark.parametrize("case", sorted(PROFILES))
def test_hostile_profile(case: str, tmp_path: Path) -> None:
    text, expect = PROFILES[case]
    prof = tmp_path / "p.yaml"
    prof.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    study = tmp_path / "study.yaml"
    study.write_text(BASE.replace("{out}", str(tmp_path / "out")))
    line = _one_line_error(
        ["study", "run", str(study), "--dry-run", "-e", "slurm", "--profile", str(prof)]
    )
    assert expect in line, line


# ---- run-directory files read back ------------------------------------------------------------
@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    from webssl_cli.results.synthetic import write_study

    root = tmp_path / "study"
    write_study(root)
    return root


def _first_cell(study_dir: Path) -> Path:
    return sorted((study_dir / "cells").iterdir())[0]


STATUS: dict[str, bytes] = {
    "truncated": b'{"cell": "x", "stages": {"train": {"state": "do',
    "not-utf8": b'{"stages": {"train": {"state": "\xff\xfe"}}}',
    "empty": b"",
    "nul-bytes": b"\x00" * 64,
    "a-list": b"[1, 2, 3]",
    "stages-a-list": b'{"stages": ["train"]}',
    "stage-a-string": b'{"stages": {"train": "done"}}',
    "huge-number": b'{"stages": {"train": {"state": "done", "attempts": 1e999}}}',
}


@pytest.mark.parametrize("case", sorted(STATUS))
def test_damaged_status_file_is_reported_per_cell(case: str, study_dir: Path) -> None:
    bad = _first_cell(study_dir)
    (bad / "status.json").write_bytes(STATUS[case])
    (bad / "status.json.bak").unlink(missing_ok=True)
    t0 = time.time()
    r = runner.invoke(app, ["study", "status", str(study_dir), "--json"])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output[-2000:]
    rows = json.loads(r.output).get("stages")
    text = r.output
    assert bad.name in text and time.time() - t0 < LIMIT_S
    if rows is not None:
        mine = [row for row in rows if row["cell"] == bad.name]
        others = [row for row in rows if row["cell"] != bad.name]
        assert mine and all(row["state"] in ("corrupt", "done") for row in mine)
        assert others and all(row["state"] == "done" for row in others)  # the rest unaffected
    ing = runner.invoke(app, ["results", "ingest", str(study_dir)])
    assert ing.exit_code == 0 and "Traceback" not in ing.output, ing.output[-2000:]


METRICS: dict[str, bytes] = {
    "filename-key": b'{"step": 1, "samples_seen": 8, "loss": 1.0, "filename": "x"}\n',
    "not-json": b"this is not json\n",
    "not-utf8": b'{"step": 1, "loss": "\xff"}\n',
    "a-list": b"[1, 2]\n",
    "step-huge": b'{"step": 100000000000000000000000, "loss": 1.0}\n',
    "nul-line": b"\x00\x00\x00\n",
}


@pytest.mark.parametrize("case", sorted(METRICS))
def test_damaged_metrics_line_is_a_counted_skip(case: str, study_dir: Path) -> None:
    bad = _first_cell(study_dir)
    with open(bad / "train" / "metrics.jsonl", "ab") as f:
        f.write(METRICS[case])
    t0 = time.time()
    r = runner.invoke(app, ["results", "ingest", str(study_dir)])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output[-2000:]
    assert time.time() - t0 < LIMIT_S
    skipped = [ln for ln in r.output.splitlines() if ln.startswith("skipped:")]
    from webssl_cli.results import queries

    n_cells = len(list((study_dir / "cells").iterdir()))
    with queries.connect(study_dir) as con:  # every other cell is in
        n = con.execute("SELECT count(DISTINCT uid) FROM train_metrics").fetchone()
    if case == "filename-key":
        # Not damage: a metric that happens to be called "filename" (text, so not a number).
        assert "0 skipped" in r.output and n == (n_cells,)
        return
    assert "1 skipped" in r.output and len(skipped) == 1, r.output
    assert "metrics.jsonl" in skipped[0]
    assert n == (n_cells - 1,)


CELL_FILES: dict[str, tuple[str, bytes]] = {
    "cell-truncated": ("cell.json", b'{"version": 2, "uid": "ab'),
    "cell-not-utf8": ("cell.json", b'{"uid": "\xff"}'),
    "cell-seed-huge": ("cell.json", b"SEED"),
    "eval-not-json": ("eval/knn.json", b"{nope"),
    "eval-results-not-list": ("eval/knn.json", b'{"results": 3}'),
    "eval-value-string": (
        "eval/knn.json",
        b'{"results": [{"benchmark": "b", "metric": "top1", "value": "x"}]}',
    ),
}


@pytest.mark.parametrize("case", sorted(CELL_FILES))
def test_damaged_cell_or_eval_file_is_a_counted_skip(case: str, study_dir: Path) -> None:
    bad = _first_cell(study_dir)
    rel, data = CELL_FILES[case]
    if data == b"SEED":
        spec = json.loads((bad / "cell.json").read_text())
        spec["seed"] = 2**40
        data = json.dumps(spec).encode()
    target = bad / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    r = runner.invoke(app, ["results", "ingest", str(study_dir)])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output[-2000:]
    assert "1 skipped" in r.output, r.output
    st = runner.invoke(app, ["study", "status", str(study_dir)])
    assert st.exit_code == 0 and "Traceback" not in st.output, st.output[-2000:]


# ---- shards -----------------------------------------------------------------------------------
def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


SHARDS: dict[str, tuple[bytes, dict[str, int], int]] = {
    # bytes, the problems counted, the samples still read
    "member-dot-png": (_tar([("a.png", b"PNG"), (".png", b"x")]), {"non_image_member": 1}, 1),
    "truncated": (
        _tar([("a.png", b"x" * 3000), ("b.png", b"y" * 3000)])[:2000],
        {"truncated_tar": 1},
        0,
    ),
    "not-a-tar": (b"hello, not a tar at all" * 10, {"unreadable_shard": 1}, 0),
    "no-image": (_tar([("a.json", b"{}"), ("b.png", b"x")]), {"no_image": 1}, 1),
    "odd-member": (_tar([("a.png", b"x"), ("a.exe", b"MZ")]), {"non_image_member": 1}, 1),
}


@pytest.mark.parametrize("case", sorted(SHARDS))
def test_hostile_shard_is_a_counted_skip(case: str, tmp_path: Path) -> None:
    from webssl_cli.data.shards import Problems, iter_samples

    data, expect, n_samples = SHARDS[case]
    path = tmp_path / "shard-000000.tar"
    path.write_bytes(data)
    problems = Problems()
    samples = list(iter_samples(path, problems))
    assert len(samples) == n_samples
    for reason, count in expect.items():
        assert problems.counts.get(reason) == count, problems.counts


def test_gzip_shard_keeps_its_last_sample(tmp_path: Path) -> None:
    from webssl_cli.data.shards import Problems, iter_samples

    path = tmp_path / "shard-000000.tar.gz"
    path.write_bytes(gzip.compress(_tar([("a.png", _png()), ("b.png", _png())])))
    problems = Problems()
    assert [s.key for s in iter_samples(path, problems)] == ["a", "b"]
    assert not problems.counts


@pytest.mark.parametrize("size", [32, 40, 48, 56])
def test_synth_at_every_allowed_small_size(size: int, tmp_path: Path) -> None:
    from webssl_cli.data.synth import synthesize

    synthesize(tmp_path / "s", n=60, seed=0, shard_size=60, image_size=size, mix={"chart": 1.0})


# ---- checkpoints ------------------------------------------------------------------------------
CHECKPOINTS: dict[str, bytes] = {
    "garbage": b"not a checkpoint",
    "empty": b"",
    "truncated-zip": b"PK\x03\x04" + b"\x00" * 20,
}


@pytest.mark.parametrize("case", sorted(CHECKPOINTS))
def test_damaged_checkpoint_is_skipped(case: str, tmp_path: Path) -> None:
    import torch

    from webssl_cli.train import legacy_checkpoint

    path = tmp_path / "ckpt-00000003.pt"
    path.write_bytes(CHECKPOINTS[case])
    assert legacy_checkpoint.read(path, 3, torch.device("cpu")) is None


def test_planted_checkpoint_pickle_does_not_run(tmp_path: Path) -> None:
    import os

    import torch

    from webssl_cli.train import legacy_checkpoint

    class Planted:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.makedirs, (str(tmp_path / "pwned"),))

    path = tmp_path / "ckpt-00000003.pt"
    torch.save({"iteration": 3, "x": Planted()}, path)
    assert legacy_checkpoint.read(path, 3, torch.device("cpu")) is None
    assert not (tmp_path / "pwned").exists()


# ---- command-line arguments -------------------------------------------------------------------
def test_cli_arguments(tmp_path: Path, study_dir: Path) -> None:
    """Every case here is one line with exit 2."""
    study = tmp_path / "study.yaml"
    study.write_text(BASE.replace("{out}", str(tmp_path / "out")))
    from webssl_cli.results.ingest import ingest

    ingest(study_dir)
    cases = [
        (["results", "query", str(study_dir), "SELECT 1", "--out", str(tmp_path)], "directory"),
        (["results", "query", str(study_dir), "SELECT 1; SELECT 2"], "statements"),
        (["results", "query", str(tmp_path / "nope"), "SELECT 1"], "not a study"),
        (["study", "run", str(study), "--retries", "-1"], "--retries"),
        (["study", "run", str(study), "--max-parallel", "0"], "--max-parallel"),
        (["study", "run", str(tmp_path / "missing.yaml")], "no such"),
        (["study", "run", str(study), "--set", "seed=2147483648"], "seed"),
        (["study", "run", str(study), "--only", "model=nope"], "nope"),
        (["data", "synth", str(tmp_path / "s"), "--image-size", "16"], "--image-size"),
    ]
    for args, expect in cases:
        line = _one_line_error(args)
        assert expect in line, (args, line)
    assert not (tmp_path / "out").exists()


# ---- the machine: a full disk -------------------------------------------------------------------
@pytest.mark.parametrize("where", ["results.ingest.ingest", "study.materialize.write_cells"])
def test_full_disk_is_one_line_naming_the_file(
    where: str, tmp_path: Path, study_dir: Path, monkeypatch, capsys
) -> None:
    import errno
    import importlib
    import sys

    from webssl_cli import cli

    module, _, name = where.rpartition(".")

    def full(*a: object, **k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.tmp"))

    monkeypatch.setattr(importlib.import_module(f"webssl_cli.{module}"), name, full)
    study = tmp_path / "study.yaml"
    study.write_text(BASE.replace("{out}", str(tmp_path / "out")))
    args = (
        ["results", "ingest", str(study_dir)]
        if "ingest" in where
        else ["study", "run", str(study), "-e", "debug"]
    )
    monkeypatch.setattr(sys, "argv", ["webssl", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert exit_info.value.code == 1 and len(lines) == 1, err
    assert "No space left on device" in lines[0] and "x.tmp" in lines[0]


# ---- keep-lists (filter outputs read back) ------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> str:
    from webssl_cli.data.synth import shard_pattern, synthesize

    paths = synthesize(tmp_path_factory.mktemp("src"), n=12, seed=3, shard_size=4, image_size=64)
    return shard_pattern(paths)


@pytest.mark.parametrize("damage", [b"", b"{trunc", b"[1, 2]", b'{"total": "x"}'])
def test_damaged_done_marker_redoes_its_shard(damage: bytes, corpus: str, tmp_path: Path) -> None:
    from webssl_cli.data.filtering import run_filter_shards

    out = tmp_path / "f"
    run_filter_shards(corpus, "light", "label", out, shard_ids=[0, 1])
    (out / "done" / "shard-000001.json").write_bytes(damage)
    res = run_filter_shards(corpus, "light", "label", out)
    assert res["complete"] and res["processed"] == [1, 2], res  # shard 1 classified again
    assert json.loads((out / "stats.json").read_text())["total"] == 12


def test_damaged_keep_list_part_is_one_line(corpus: str, tmp_path: Path) -> None:
    from webssl_cli.data.filtering import run_filter_shards
    from webssl_cli.errors import UserError

    out = tmp_path / "f"
    run_filter_shards(corpus, "light", "label", out, shard_ids=[0, 1])
    (out / "parts" / "shard-000000.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(UserError, match="shard-000000.parquet: unreadable keep-list part") as e:
        run_filter_shards(corpus, "light", "label", out)
    assert "\n" not in e.value.message and "done/shard-000000.json" in e.value.message
