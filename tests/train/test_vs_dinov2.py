"""``benchmarks/vs_dinov2.py`` without an official checkout: a clear message, exit 0, nothing
compared (the comparison itself needs ``DINOV2_SRC``; its figures are in docs/distributed.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "vs_dinov2.py"


@pytest.mark.parametrize("src", [None, "/nonexistent/dinov2"])
def test_without_an_official_checkout_it_says_so_and_exits_0(src: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DINOV2_SRC"}
    if src is not None:
        env["DINOV2_SRC"] = src
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--rounds", "1"], env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "set DINOV2_SRC" in out.stdout and "nothing compared" in out.stdout
