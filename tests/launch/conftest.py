from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FAKE = HERE / "fake_stages.py"

STUDY = """\
name: t
output_dir: {out}
preset: test
data:
  sources:
    web: {shards: "{tmp}/shard-{000000..000001}.tar"}
  filters:
    full: {source: web}
    light: {source: web, filter: light, classifier: label}
grid:
  model: [vit-test]
  samples_seen: [1K, 2K]
  data_filter: [full]
evals:
  - {task: knn}
"""


@pytest.fixture
def fake_stages(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Jobs (and this process) use the tiny fake stages of fake_stages.py."""
    monkeypatch.setenv("WEBSSL_STAGE_IMPL", str(FAKE))
    monkeypatch.delenv("FAKE_FAIL_MODEL", raising=False)
    monkeypatch.setenv("FAKE_STEPS", "3")
    monkeypatch.setenv("FAKE_STEP_S", "0")
    return FAKE


@pytest.fixture
def write_study(tmp_path: Path):
    """write_study(text=None, **replace) -> a study file; {out} is tmp_path/out."""

    def _write(text: str | None = None, name: str = "study.yaml", **replace: str) -> Path:
        body = STUDY if text is None else textwrap.dedent(text)
        for k, v in replace.items():
            body = body.replace(k, v)
        body = body.replace("{out}", str(tmp_path / "out")).replace("{tmp}", str(tmp_path))
        path = tmp_path / name
        path.write_text(body)
        return path

    return _write
