import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from shapes import write_shards  # noqa: E402

from webssl_cli.specs.presets import PRESETS  # noqa: E402
from webssl_cli.specs.train import TrainConfig  # noqa: E402


@pytest.fixture(scope="session")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shapes"), n_shards=2, per_shard=24, size=40)


@pytest.fixture(autouse=True)
def _cpu(monkeypatch):
    monkeypatch.setenv("WEBSSL_DEVICE", "cpu")


def make_cell(root: Path, shards: str, samples: int, **train) -> Path:
    cfg = TrainConfig.model_validate(PRESETS["test"] | train)
    spec = {
        "uid": root.name,
        "model": "vit-test",
        "samples_seen": samples,
        "data": {"source": "synth", "shards": shards, "filter": "none", "filter_dir": None},
        "train": cfg.model_dump(mode="json"),
        "evals": [],
        "seed": 0,
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "cell.json").write_text(json.dumps(spec))
    return root
