from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

BASE = """\
name: t
output_dir: {out}
preset: test
data:
  sources:
    synth: {synthesize: {n: 100, shard_size: 50}}
  filters:
    full: {source: synth}
    light: {source: synth, filter: light, classifier: label}
grid:
  model: [vit-test, vit-pico]
  samples_seen: [1K, 2K]
  data_filter: [full, light]
evals:
  - {task: knn}
"""


@pytest.fixture
def base_study() -> str:
    """A valid study text (8 cells) with ``{out}`` for the output directory."""
    return BASE


@pytest.fixture
def write_study(tmp_path: Path):
    """write_study(text=None) -> a study file in tmp_path; ``{out}`` becomes tmp_path/out."""

    def _write(text: str | None = None, name: str = "study.yaml") -> Path:
        body = BASE if text is None else textwrap.dedent(text)
        path = tmp_path / name
        path.write_text(body.replace("{out}", str(tmp_path / "out")))
        return path

    return _write
