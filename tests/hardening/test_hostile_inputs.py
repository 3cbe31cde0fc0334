"""A catalog of hostile and careless inputs: each is a one-line error with exit code 2, or a
counted skip, within seconds; never a traceback, a hang or a silent loss.

Kinds: study files, profiles, status files, metrics, cell/eval files, shards, checkpoints,
command-line arguments. ``KINDS`` counts the cases of each.
"""

from __future__ import annotations

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
