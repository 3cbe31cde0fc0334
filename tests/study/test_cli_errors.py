"""Bad study files: one line naming file, line and dotted field; exit 2; no traceback; nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from webssl_cli.cli import app
from webssl_cli.study.loader import load_study

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


# (name, edit of the base study (conftest.BASE) as (old, new), regex the one-line message must match)
CASES = [
    (
        "malformed_yaml",
        ("  model: [vit-test, vit-pico]", "  model: [vit-test, vit-pico"),
        r"study\.yaml:1[0-3]: malformed YAML",
    ),
    (
        "unknown_key",
        ("preset: test", "preset: test\nprest: x"),
        r"study\.yaml:4: prest: unknown key \(did you mean \"preset\"\?\)",
    ),
    (
        "unknown_nested_key",
        ("    full: {source: synth}", "    full: {source: synth, filtr: light}"),
        r"study\.yaml:8: data\.filters\.full\.filtr: unknown key \(did you mean \"filter\"\?\)",
    ),
    (
        "wrong_type",
        (
            "    synth: {synthesize: {n: 100, shard_size: 50}}",
            "    synth: {synthesize: {n: lots, shard_size: 50}}",
        ),
        r"study\.yaml:6: data\.sources\.synth\.synthesize\.n: .*integer",
    ),
    (
        "unknown_model",
        ("[vit-test, vit-pico]", "[vit-test, vit-hug]"),
        r"study\.yaml:11: grid\.model\[1\]: unknown model 'vit-hug'.*valid: webdino-300m",
    ),
    (
        "zero_samples",
        ("[1K, 2K]", "[1K, 0]"),
        r"study\.yaml:12: grid\.samples_seen\[1\]: .*positive",
    ),
    (
        "negative_samples",
        ("[1K, 2K]", "[-5, 2K]"),
        r"study\.yaml:12: grid\.samples_seen\[0\]: .*positive",
    ),
    (
        "garbage_samples",
        ("[1K, 2K]", "[1K, lots]"),
        r"study\.yaml:12: grid\.samples_seen\[1\]: expected a positive count",
    ),
    ("empty_axis", ("[full, light]", "[]"), r"study\.yaml:13: grid\.data_filter: empty axis"),
    (
        "zip_unequal",
        (
            "  data_filter: [full, light]",
            "  data_filter: [full, light]\n  train.base_lr: [0.1, 0.2, 0.3]\nzip: [[model, train.base_lr]]",
        ),
        r"study\.yaml:15: zip\[0\]: axes in a zip group need equal lengths: model has 2, train\.base_lr has 3",
    ),
    (
        "duplicate_value",
        ("[vit-test, vit-pico]", "[vit-test, vit-test]"),
        r"study\.yaml:11: grid\.model\[1\]: duplicate value",
    ),
    (
        "duplicate_cells_alias",
        ("[vit-test, vit-pico]", "[webdino-7b, 7B]"),
        r"study\.yaml:11: grid\.model\[1\]: duplicate value '7B'",
    ),
    (
        "duplicate_include",
        (
            "  data_filter: [full, light]",
            "  data_filter: [full, light]\ninclude:\n  - {model: vit-test, samples_seen: 1K, data_filter: full}",
        ),
        r"study\.yaml:15: include\[0\]: duplicate cell",
    ),
    (
        "include_matches_nothing",
        (
            "  data_filter: [full, light]",
            "  data_filter: [full, light]\ninclude:\n  - {model: vit-nano, train.base_lr: 0.1}",
        ),
        r"study\.yaml:15: include\[0\]: matches no cell; to add a cell give every axis \(missing: samples_seen, data_filter\)",
    ),
    (
        "exclude_matches_nothing",
        (
            "  data_filter: [full, light]",
            "  data_filter: [full, light]\nexclude:\n  - {model: vit-nano}",
        ),
        r"study\.yaml:15: exclude\[0\]: matches no cell",
    ),
    (
        "name_escapes",
        ("name: t", "name: ../../etc"),
        r"study\.yaml:1: name: String should match pattern",
    ),
    (
        "source_name_escapes",
        ("    synth: {synthesize", "    ../x: {synthesize"),
        r"study\.yaml:5: data\.sources: .*must not escape the output directory",
    ),
    (
        "python_tag",
        ("name: t", "name: !!python/object/apply:os.system [touch /tmp/pwned]"),
        r"study\.yaml:1: malformed YAML: YAML tag not allowed",
    ),
    (
        "unknown_axis",
        ("  data_filter: [full, light]", "  data_filter: [full, light]\n  train.lrr: [1]"),
        r"study\.yaml:14: grid\.train\.lrr: unknown setting 'lrr'",
    ),
    (
        "unknown_filter",
        ("[full, light]", "[full, heavy]"),
        r"study\.yaml:13: grid\.data_filter\[1\]: unknown data filter 'heavy'",
    ),
    (
        "bad_train_value",
        ("preset: test", "preset: test\ntrain: {crops.global_size: 2}"),
        r"study\.yaml:4: train\.crops\.global_size: .*greater than or equal to 8",
    ),
    (
        "duplicate_key",
        ("preset: test", "preset: test\npreset: smoke"),
        r"study\.yaml:4: preset: duplicate key",
    ),
]


@pytest.mark.parametrize(("name", "edit", "pattern"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("command", ["validate", "plan"])
def test_bad_input_is_one_located_line(
    tmp_path: Path, base_study: str, name: str, edit: tuple[str, str], pattern: str, command: str
) -> None:
    old, new = edit
    assert old in base_study, name
    path = tmp_path / "study.yaml"
    path.write_text(base_study.replace("{out}", str(tmp_path / "out")).replace(old, new, 1))
    result = runner.invoke(app, ["study", command, str(path)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    import re

    assert re.search(pattern, lines[0]), lines[0]
    assert lines[0].startswith(f"Error: {path}:")
    assert not (tmp_path / "out").exists()  # nothing written
    assert not Path("/tmp/pwned").exists()


def test_set_override_errors(tmp_path: Path, base_study: str) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(base_study.replace("{out}", str(tmp_path / "out")))
    for bad, pattern in [
        ("train.lr=1", "unknown setting 'lr'"),
        ("novalue", "expected key=value"),
        ("model=vit-test", "axes are set in the study's grid"),
    ]:
        result = runner.invoke(app, ["study", "plan", str(path), "--set", bad])
        assert result.exit_code == 2 and pattern in result.output, result.output


def test_plan_formats(tmp_path: Path, base_study: str) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(base_study.replace("{out}", str(tmp_path / "out")))
    out = runner.invoke(app, ["study", "plan", str(path), "--format", "json"])
    assert out.exit_code == 0, out.output
    plan = json.loads(out.output)
    assert plan["totals"]["cells"] == 8 == len(plan["cells"])
    row = plan["cells"][0]
    assert set(row) >= {
        "uid",
        "model",
        "params",
        "samples_seen",
        "data_filter",
        "iterations",
        "flops",
        "gpu_hours",
        "stages",
    }
    assert row["iterations"] == 125  # 1K samples / batch 8
    assert any(r["stages"][0].startswith("filter:synth-light-label") for r in plan["cells"])
    csv_out = runner.invoke(app, ["study", "plan", str(path), "-f", "csv"]).output.splitlines()
    assert csv_out[0].startswith("uid,model,params") and len(csv_out) == 9
    table = runner.invoke(app, ["study", "plan", str(path)]).output
    assert "total" in table and "8 cells" in table


def test_paper_plan_runs() -> None:
    result = runner.invoke(
        app, ["study", "plan", str(REPO / "studies" / "webssl-paper.yaml"), "-f", "json"]
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["totals"]["cells"] == 24  # 12 Web-DINO (2 high-resolution), 8 MetaCLIP, 4 Web-MAE
    assert {m: sum(r["method"] == m for r in plan["cells"]) for m in ("webdino", "clip", "mae")} == {
        "webdino": 12, "clip": 8, "mae": 4
    }  # fmt: skip
    seven_b = [
        r
        for r in plan["cells"]
        if r["model"] == "webdino-7b"
        and r["samples_seen"] == 8_000_000_000
        and r["method"] == "webdino"
        and "init_from" not in r
    ][0]
    assert seven_b["flops_per_sample"] == pytest.approx(42.3e12, rel=0.01)  # FACTS.md


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from webssl_cli.cli import app\n"
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output\n"
        f"r = CliRunner().invoke(app, ['study', 'plan', {str(REPO / 'studies' / 'webssl-paper.yaml')!r}]); assert r.exit_code == 0, r.output\n"
        "heavy = [m for m in ('torch', 'transformers', 'matplotlib', 'cv2') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_load_study_is_pure(tmp_path: Path, base_study: str) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(base_study.replace("{out}", str(tmp_path / "out")))
    load_study(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]
