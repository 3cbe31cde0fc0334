"""CellSpec: the only reader and writer of cell.json; located one-line errors; v1 migration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from webssl_cli.errors import UserError
from webssl_cli.rundir import CellDir
from webssl_cli.specs.cell import CellData, CellSpec, read_cell
from webssl_cli.specs.compute import flops_per_sample
from webssl_cli.specs.presets import PRESETS
from webssl_cli.specs.registry import get_model
from webssl_cli.specs.train import TrainConfig


def _spec(tmp_path: Path) -> CellSpec:
    return CellSpec.build(
        uid="abc123",
        study="s",
        model="vit-pico",
        samples_seen=1000,
        data_filter="light",
        axes={"model": "vit-pico", "samples_seen": 1000, "data_filter": "light"},
        data=CellData(source="web", shards=str(tmp_path / "{0..1}.tar"), filter="light",
                      classifier="ocr", filter_key="web-light-ocr-v1-abc", filter_dir="/f"),
        train=TrainConfig.model_validate(PRESETS["smoke"]),
        evals=[{"task": "knn"}],
    )  # fmt: skip


def test_round_trip_and_facts(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    cd = CellDir(tmp_path / "cells" / "abc123")
    cd.write_cell(spec)
    back = cd.read_cell()
    assert back == spec
    cfg = TrainConfig.model_validate(PRESETS["smoke"])
    assert back.facts.iterations == 32  # ceil(1000 / 32)
    assert back.facts.params == get_model("vit-pico").backbone_params()
    assert back.facts.flops_per_sample == pytest.approx(
        flops_per_sample(get_model("vit-pico"), cfg)
    )
    assert back.facts.flops == pytest.approx(back.facts.flops_per_sample * 32 * 32)
    assert back.evals[0].stage_name == "knn" and back.eval_named("knn") is not None


REQUIRED = ["uid", "model", "samples_seen", "seed", "data", "train", "facts"]
NESTED = ["data.source", "data.shards", "facts.iterations", "facts.params"]


@pytest.mark.parametrize("field", REQUIRED + NESTED)
@pytest.mark.parametrize("how", ["drop", "corrupt"])
def test_each_required_field_named(tmp_path: Path, field: str, how: str) -> None:
    path = tmp_path / "cell.json"
    obj = json.loads(_spec(tmp_path).to_json())
    *parents, leaf = field.split(".")
    node = obj
    for p in parents:
        node = node[p]
    if how == "drop":
        del node[leaf]
    else:
        node[leaf] = {"not": "valid"} if leaf not in ("data", "train", "facts") else 17
    path.write_text(json.dumps(obj))
    with pytest.raises(UserError) as info:
        read_cell(path)
    msg = str(info.value.message)
    assert "\n" not in msg and msg.startswith(f"{path}: {field}")


@pytest.mark.parametrize(
    "text,needle",
    [('{"uid": ', "not valid JSON"), ("[1, 2]", "not a JSON object"), ("\xff\xfe", "")],
)
def test_unreadable_files(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "cell.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(UserError) as info:
        read_cell(path)
    assert str(info.value.message).startswith(str(path)) and needle in str(info.value.message)


def test_unknown_key_and_bad_method(tmp_path: Path) -> None:
    obj = json.loads(_spec(tmp_path).to_json())
    for key, value, field in (("colour", 1, "colour"), ("method", "sup", "method")):
        bad = dict(obj, **{key: value})
        (tmp_path / "cell.json").write_text(json.dumps(bad))
        with pytest.raises(UserError, match=f"cell.json: {field}"):
            read_cell(tmp_path / "cell.json")


def test_version1_cell_json_migrates(tmp_path: Path) -> None:
    """A cell.json as written before the typed spec (no version, method, facts, filter key)."""
    train = TrainConfig.model_validate(PRESETS["smoke"]).model_dump(mode="json")
    v1 = {
        "uid": "0123abcd",
        "study": "smoke",
        "axes": {"model": "vit-nano", "samples_seen": 2000, "data_filter": "light"},
        "model": "vit-nano",
        "samples_seen": 2000,
        "data_filter": "light",
        "data": {"source": "web", "shards": "/d/{000000..000003}.tar", "filter": "light",
                 "classifier": "ocr", "vlm_path": None,
                 "filter_dir": "/runs/smoke/filters/web-light-ocr-v1-4fa2c1"},
        "train": train,
        "evals": [{"task": "knn", "name": None, "dataset": "synth-labelled"}],
        "sources": {"web": {"shards": "/d/{000000..000003}.tar", "synthesize": None}},
        "seed": 0,
    }  # fmt: skip
    (tmp_path / "cell.json").write_text(json.dumps(v1))
    spec = read_cell(tmp_path / "cell.json")
    assert spec.version == 2 and spec.method == "webdino"
    assert spec.data.filter_key == "web-light-ocr-v1-4fa2c1"
    assert (
        spec.facts.iterations == 63 and spec.facts.params == get_model("vit-nano").backbone_params()
    )
    # an unfiltered v1 cell (outside a study: no study, axes or filter)
    run = {"uid": "run", "study": None, "model": "vit-pico", "samples_seen": 100,
           "data": {"source": "shards", "shards": "/x.tar", "filter": "none", "filter_dir": None},
           "train": train, "evals": [], "seed": 3}  # fmt: skip
    (tmp_path / "cell.json").write_text(json.dumps(run))
    spec = read_cell(tmp_path / "cell.json")
    assert spec.data.filter == "none" and spec.data.filter_key is None and spec.seed == 3


def test_train_command_reports_bad_cell_json(tmp_path: Path) -> None:
    from webssl_cli.cli import app

    cell = tmp_path / "cells" / "abc123"
    obj = json.loads(_spec(tmp_path).to_json())
    obj["train"]["batch_size"] = "many"
    cell.mkdir(parents=True)
    (cell / "cell.json").write_text(json.dumps(obj))
    res = CliRunner().invoke(app, ["train", str(cell)])
    assert res.exit_code == 2, res.output
    out = " ".join(res.output.split())
    assert "cell.json: train.batch_size" in out and "Traceback" not in res.output


def test_cells_without_resolution_fields_load_unchanged(tmp_path: Path) -> None:
    """cell.json written before the resolution axis (no ``resolution``, no ``init_from``)."""
    obj = json.loads(_spec(tmp_path).to_json())
    del obj["resolution"], obj["init_from"]
    path = tmp_path / "cell.json"
    path.write_text(json.dumps(obj))
    spec = read_cell(path)
    assert spec.resolution is None and spec.init_from is None
    assert spec.image_size == 48 and spec.train_samples == 1000  # smoke preset's global crop


def test_adaptation_cell_round_trips_and_is_priced_for_its_own_stage(tmp_path: Path) -> None:
    from webssl_cli.specs.cell import InitFrom

    cfg = TrainConfig.model_validate(PRESETS["smoke"] | {"crops": {"global_size": 72}})
    spec = CellSpec.build(
        uid="hi72", model="vit-pico", samples_seen=1000, train=cfg,
        data=CellData(source="web", shards="/x.tar"), resolution=72,
        init_from=InitFrom(uid="abc123", resolution=48, iterations=30),
    )  # fmt: skip
    cd = CellDir(tmp_path / "cells" / "hi72")
    cd.write_cell(spec)
    back = cd.read_cell()
    assert back == spec and back.image_size == 72 and back.train_samples == 30 * 32
    assert back.facts.iterations == 30
    assert back.facts.flops == pytest.approx(flops_per_sample(get_model("vit-pico"), cfg) * 30 * 32)
    obj = json.loads(spec.to_json())
    obj["resolution"] = 64  # disagrees with train.crops.global_size
    with pytest.raises(UserError, match="resolution 64 differs from train.crops.global_size 72"):
        from webssl_cli.specs.cell import parse_cell

        parse_cell(obj, "cell.json")
    obj["resolution"], obj["init_from"]["resolution"] = 72, 96
    with pytest.raises(UserError, match="needs a resolution above its base cell's"):
        parse_cell(obj, "cell.json")
