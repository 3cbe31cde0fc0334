import json

from typer.testing import CliRunner

from webssl_cli.cli import app
from webssl_cli.rundir import CellDir

runner = CliRunner()


def test_train_from_run_file(tmp_path, shards):
    cfg = tmp_path / "small.yaml"
    cfg.write_text(
        f"model: vit-test\nsamples_seen: 24\nshards: '{shards}'\npreset: test\n"
        "train:\n  batch_size: 8\n  crops: {n_local: 1}\n"
    )
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    spec = json.loads((out / "cell.json").read_text())
    assert spec["train"]["crops"]["n_local"] == 1 and spec["train"]["crops"]["global_size"] == 32
    assert CellDir(out).stage_status("train")["state"] == "done"
    # A rerun resumes (nothing left to do) and stays done.
    res = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(out), "--quiet"])
    assert res.exit_code == 0 and "done" in res.output


def test_train_cell_dir_with_progress(tmp_path, shards):
    from conftest import make_cell

    cell = make_cell(tmp_path / "c", shards, samples=16)
    res = runner.invoke(app, ["train", str(cell)])
    assert res.exit_code == 0, res.output
    assert "samples" in res.output and "img/s" in res.output


def test_user_errors_are_one_line(tmp_path, shards):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"model: vit-test\nshards: '{shards}'\ntrain:\n  batch_sise: 8\n")
    res = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "batch_sise" in res.output and "bad.yaml:4" in res.output
    res = runner.invoke(
        app, ["train", "--preset", "nope", "--shards", shards, "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 2 and "valid: webdino, smoke, test" in res.output
    res = runner.invoke(app, ["train", str(tmp_path)])
    assert res.exit_code == 2 and "no cell.json" in res.output
    res = runner.invoke(
        app, ["train", "--model", "vit-huge", "--shards", shards, "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 2 and "unknown model" in res.output


def test_train_mae_run_from_the_command_line(tmp_path, shards):
    out = tmp_path / "mae"
    args = ["train", "--method", "mae", "--preset", "test", "--model", "vit-test"]
    res = runner.invoke(
        app, [*args, "--shards", shards, "--samples", "16", "--batch-size", "8", "--out", str(out),
              "--quiet"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    spec = json.loads((out / "cell.json").read_text())
    assert spec["method"] == "mae" and spec["train"]["mae"]["decoder_width"] == 16
    assert CellDir(out).stage_status("train")["state"] == "done"
    lines = [json.loads(x) for x in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert any("mae_loss" in m for m in lines) and not any("dino_loss" in m for m in lines)
    res = runner.invoke(
        app, ["train", "--method", "byol", "--shards", shards, "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 2 and "method: unknown 'byol'; valid: webdino, clip, mae" in res.output
