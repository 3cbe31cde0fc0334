import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from shapes import write_shards  # noqa: E402

from webssl_cli.rundir import CellDir  # noqa: E402
from webssl_cli.specs.cell import CellData, CellSpec  # noqa: E402
from webssl_cli.specs.presets import preset_settings  # noqa: E402
from webssl_cli.specs.train import TrainConfig  # noqa: E402


@pytest.fixture(scope="session")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shapes"), n_shards=2, per_shard=24, size=40)


@pytest.fixture(autouse=True)
def _cpu(monkeypatch):
    monkeypatch.setenv("WEBSSL_DEVICE", "cpu")


def make_cell(root: Path, shards: str, samples: int, method: str = "webdino", **train) -> Path:
    cfg = TrainConfig.model_validate(preset_settings("test", method) | train)
    spec = CellSpec.build(
        method=method,
        uid=root.name,
        model="vit-test",
        samples_seen=samples,
        train=cfg,
        data=CellData(source="synth", shards=shards),
        seed=0,
    )
    CellDir(root).write_cell(spec)
    return root
