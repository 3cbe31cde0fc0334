"""Fake run directories (no trainer needed): a 3 models x 2 budgets x 2 filters study."""

from __future__ import annotations

from pathlib import Path

import pytest

from webssl_cli.results.synthetic import write_study


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    root = tmp_path / "study"
    write_study(root)
    return root
