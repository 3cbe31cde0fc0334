"""A tiny synthetic study (3 models x 2 budgets x 2 filters), ingested."""

from __future__ import annotations

from pathlib import Path

import pytest

from webssl_cli.results.ingest import ingest
from webssl_cli.results.synthetic import write_study


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report") / "study"
    write_study(root)
    ingest(root)
    return root


@pytest.fixture(scope="module")
def tiny_report(tiny_study: Path) -> Path:
    from webssl_cli.report.build import build_report

    out = tiny_study / "report"
    build_report(tiny_study, out, n_boot=40, n_boot_stats=500)
    return out
