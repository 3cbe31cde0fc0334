"""results/report command modules keep heavy imports inside the commands (fast `webssl --help`)."""

from __future__ import annotations

import subprocess
import sys


def test_command_modules_import_nothing_heavy() -> None:
    code = (
        "import sys, webssl_cli.results.commands, webssl_cli.report.commands;"
        "heavy = [m for m in ('torch', 'matplotlib', 'scipy', 'duckdb', 'polars', 'pyarrow') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""


def test_results_and_report_never_import_torch() -> None:
    code = (
        "import sys;"
        "import webssl_cli.results.ingest, webssl_cli.results.queries, webssl_cli.results.reference;"
        "import webssl_cli.report.build, webssl_cli.report.fits, webssl_cli.report.plots;"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "False"
