"""`webssl study run/status/cancel/logs` through the CLI, and bad input: one line, exit 2, nothing submitted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from webssl_cli.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_user_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in result.output, result.output


def nothing_written(study: Path) -> bool:
    return not (study.parent / "out").exists()


def test_run_status_logs_cancel(fake_stages, write_study):
    study = write_study()
    res = invoke("study", "run", study, "--wait")
    assert res.exit_code == 0, res.output
    assert "local: 4 submission(s)" in res.output
    res = invoke("study", "run", study, "--wait")
    assert res.exit_code == 0 and "nothing to do: 2/2 cells done" in res.output
    out = study.parent / "out"
    res = invoke("study", "status", out, "--json")
    data = json.loads(res.output)
    assert data["totals"]["done"] == 2 and {s["state"] for s in data["stages"]} == {"done"}
    res = invoke("study", "status", study)  # the study file works too
    assert res.exit_code == 0 and "cells: 2/2 done" in res.output
    uid = data["stages"][0]["cell"]
    res = invoke("study", "logs", out, uid[:6], "train")
    assert res.exit_code == 0 and "Job completed successfully" in res.output
    res = invoke("study", "cancel", out)
    assert res.exit_code == 0 and "nothing to cancel" in res.output


def test_failed_run_exits_1_and_status_shows_error(fake_stages, write_study, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL_MODEL", "vit-test")
    study = write_study(**{"samples_seen: [1K, 2K]": "samples_seen: [1K]"})
    res = invoke("study", "run", study, "--wait", "--retries", "0")
    assert res.exit_code == 1, res.output
    res = invoke("study", "status", study.parent / "out")
    assert "failed" in res.output and "ValueError: train.micro_batch" in res.output
    res = invoke("study", "logs", study.parent / "out", res.output.splitlines()[2].split()[0])
    assert "ValueError" in res.output


def test_unknown_profile(fake_stages, write_study):
    study = write_study()
    assert_user_error(
        invoke("study", "run", study, "--profile", "nope"),
        "cluster profile 'nope' not found",
        "valid:",
    )
    assert nothing_written(study)


def test_unknown_profile_field(fake_stages, write_study, tmp_path):
    study = write_study()
    prof = tmp_path / "bad.yaml"
    prof.write_text("partition: debug\nmax_paralel: 2\n")
    assert_user_error(
        invoke("study", "run", study, "--profile", prof),
        "bad.yaml:2: max_paralel: unknown field",
        'did you mean "max_parallel"',
    )
    assert nothing_written(study)


def test_gpu_count_the_profile_cannot_provide(fake_stages, write_study, tmp_path):
    study = write_study()
    prof = tmp_path / "gpus.yaml"
    prof.write_text("node: {gpus: 4}\ntrain:\n  default: {gpus_per_node: 8}\n")
    assert_user_error(
        invoke("study", "run", study, "--profile", prof, "-e", "slurm"),
        "gpus_per_node = 8 but a node has 4 GPUs",
    )
    # A profile that fits its cluster but not this machine (no GPU here) on the local executor.
    prof.write_text("node: {gpus: 8}\ntrain:\n  default: {gpus_per_node: 8}\n")
    assert_user_error(
        invoke("study", "run", study, "--profile", prof, "-e", "local"),
        "the local executor has one node with 0 GPU(s)",
    )
    assert nothing_written(study)


def test_unwritable_output_dir(fake_stages, write_study, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("")
    study = write_study(**{"{out}": str(blocker / "out")})
    assert_user_error(invoke("study", "run", study), "is not writable", "output_dir")
    assert not (blocker.parent / "out").exists()


def test_sbatch_line_with_shell_metacharacters(fake_stages, write_study, tmp_path):
    study = write_study()
    prof = tmp_path / "evil.yaml"
    prof.write_text('sbatch_extra: ["--comment=$(reboot)"]\n')
    assert_user_error(
        invoke("study", "run", study, "--profile", prof, "-e", "slurm"),
        "evil.yaml:1: sbatch_extra:",
        "shell",
    )
    prof.write_text("setup: ['source env.sh; curl x | sh']\n")
    assert_user_error(
        invoke("study", "run", study, "--profile", prof), "setup", "shell would interpret"
    )
    assert nothing_written(study)


def test_only_matching_nothing(fake_stages, write_study):
    study = write_study()
    assert_user_error(invoke("study", "run", study, "--only", "zzz"), "--only zzz: matches no cell")
    assert_user_error(
        invoke("study", "run", study, "--only", "modle=vit-test"),
        "unknown axis 'modle'",
        'did you mean "model"',
    )
    assert nothing_written(study)


def test_status_of_unknown_study(tmp_path):
    assert_user_error(
        invoke("study", "status", tmp_path / "nope"), "no such study file or directory"
    )


def test_launch_imports_no_torch():
    code = (
        "import sys\n"
        "import webssl_cli.launch.commands, webssl_cli.launch.runner, webssl_cli.launch.jobs, webssl_cli.launch.dag\n"
        "import webssl_cli.launch.state, webssl_cli.launch.progress, webssl_cli.launch.executors, webssl_cli.launch.snapshot\n"
        "import webssl_cli.launch.cancel, webssl_cli.launch.driver, webssl_cli.launch.selection\n"
        "import webssl_cli.launch.detached, webssl_cli.launch.rounds, webssl_cli.launch.options\n"
        "import webssl_cli.launch.prepare, webssl_cli.launch.postrun, webssl_cli.device\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ["start-cluster.sh", "stop-cluster.sh"])
def test_cluster_scripts_are_valid_bash(name):
    script = Path(__file__).resolve().parents[2] / "slurm" / name
    subprocess.run(["bash", "-n", str(script)], check=True)
