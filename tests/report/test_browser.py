"""The HTML report in a real browser (Debian's chromium; .ci/run installs it)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

# the CDP helper sits beside this file (tests run with --import-mode=importlib: no sys.path)
_spec = importlib.util.spec_from_file_location(
    "webssl_tests_report_cdp", Path(__file__).with_name("cdp.py")
)
assert _spec is not None and _spec.loader is not None
cdp = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = cdp
_spec.loader.exec_module(cdp)
CHROMIUM, check_page = cdp.CHROMIUM, cdp.check_page

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason="needs /usr/bin/chromium (apt-get install chromium)"
    ),
]


def test_report_html_loads_cleanly(tiny_report: Path, tmp_path: Path) -> None:
    html = tiny_report / "report.html"
    # the file stands alone: move it away from its PNGs before opening it
    alone = tmp_path / "alone" / "report.html"
    alone.parent.mkdir()
    shutil.copy(html, alone)
    shot = tiny_report / "report-screenshot.png"
    res = check_page(alone, screenshot=shot)
    assert res.console_errors == []
    # every plot the report drew is in the page (a law's plot only where one was fitted)
    plots = [p for p in tiny_report.glob("*.png") if p != shot]
    assert len(res.images) == len(plots) >= 4
    assert res.broken_images == []
    assert all(i["w"] > 400 for i in res.images)
    assert res.title.startswith("webssl report")
    assert shot.stat().st_size > 50_000
    keep = os.environ.get("WEBSSL_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / "report-screenshot.png")


def test_the_check_catches_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><head><title>bad</title></head><body>"
        '<img alt="missing" src="nope.png"><script>console.error("boom")</script></body></html>'
    )
    res = check_page(bad)
    assert "missing" in res.broken_images
    assert any("boom" in e for e in res.console_errors)
