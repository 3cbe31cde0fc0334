"""Checkpoints and caches never run code: a planted pickle is refused, old files still load."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from webssl_cli.train import legacy_checkpoint
from webssl_cli.train.safe_load import SafeLoadPlanner, SafeReader


class Planted:
    """Unpickling this creates the marker file (what an attacker's command would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.makedirs, (str(self.marker),))


def test_a_planted_legacy_checkpoint_does_not_execute(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "ckpt-00000003.pt"
    torch.save({"iteration": 3, "student": Planted(marker)}, path)
    assert legacy_checkpoint.read(path, 3, torch.device("cpu")) is None  # reads as damaged
    assert not marker.exists()


def test_an_old_style_legacy_checkpoint_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "ckpt-00000003.pt"
    lin = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(lin.parameters(), lr=0.1)
    lin(torch.ones(1, 2)).sum().backward()
    opt.step()
    torch.save({
        "student": lin.state_dict(), "teacher": lin.state_dict(), "optimizer": opt.state_dict(),
        "centers": {"dino": None, "ibot": None}, "data": {"chunk": 1, "offset": 2},
        "problems": {"decode": 1}, "samples_seen": 12, "model": "vit-test", "iteration": 3,
        "rng": {"torch": torch.get_rng_state()},
    }, path)  # fmt: skip
    got = legacy_checkpoint.read(path, 3, torch.device("cpu"))
    assert got is not None and got["meta"]["data"]["0"]["position"] == [1, 2]
    assert torch.equal(got["student"]["weight"], lin.weight.detach())


def _dcp_state() -> dict[str, object]:
    return {
        "w": torch.arange(6.0).reshape(2, 3),
        "opt": {"param_groups": [{"lr": 0.1, "betas": (0.9, 0.99), "name": "x"}], "step": 4},
    }


def test_dcp_checkpoints_load_through_the_safe_reader(tmp_path: Path) -> None:
    dcp.save(_dcp_state(), checkpoint_id=str(tmp_path / "dcp"))
    group = {"lr": 0.0, "betas": (0.0, 0.0), "name": ""}
    state = {"w": torch.zeros(2, 3), "opt": {"param_groups": [group], "step": 0}}
    dcp.load(state, storage_reader=SafeReader(str(tmp_path / "dcp")), planner=SafeLoadPlanner())
    assert torch.equal(state["w"], torch.arange(6.0).reshape(2, 3))  # type: ignore[arg-type]
    assert state["opt"] == _dcp_state()["opt"]


def test_a_planted_dcp_metadata_file_does_not_execute(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    ck = tmp_path / "dcp"
    dcp.save(_dcp_state(), checkpoint_id=str(ck))
    (ck / ".metadata").write_bytes(pickle.dumps(Planted(marker)))
    state = {"w": torch.zeros(2, 3), "opt": {"param_groups": [{}], "step": 0}}
    with pytest.raises(pickle.UnpicklingError, match="refused to load os.makedirs"):
        SafeReader(str(ck)).read_metadata()
    with pytest.raises(CheckpointException):  # DCP wraps the refusal
        dcp.load(state, storage_reader=SafeReader(str(ck)), planner=SafeLoadPlanner())
    assert not marker.exists()


def test_a_planted_feature_cache_is_rebuilt_not_run(tmp_path: Path, monkeypatch) -> None:
    from webssl_cli.eval import features, run

    marker = tmp_path / "pwned"
    cache = tmp_path / "features.pt"
    torch.save({"train": Planted(marker)}, cache)
    split = SimpleNamespace(images=[0], labels=[1], class_names=["a"], keys=["k"])
    monkeypatch.setattr(features, "load_labelled", lambda source, n: (split, split))
    monkeypatch.setattr(features, "extract", lambda *a, **k: torch.ones(1, 2))
    cfg = SimpleNamespace(max_images=1, batch_size=1)
    blob = run._features(cfg, None, 8, 1, cache, "src")  # type: ignore[arg-type]
    assert not marker.exists() and torch.equal(blob["train"], torch.ones(1, 2))
    again = run._features(cfg, None, 8, 1, cache, "src")  # type: ignore[arg-type]
    assert again["names"] == ["a"] and not marker.exists()
