"""The report renders in a real browser (issue 37): headless Chromium draws the page and its
DOM holds the verdict and both plots. CI installs Chromium (.ci/run); without it, skipped."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_demo_report import synthetic
from tests.unit.test_demo_verdict import BINARY
from tideline.demo.report import write_report
from tideline.demo.verdict import verdict

BROWSER = next(
    (b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
)
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no headless Chromium on PATH (apt-get install chromium)"
)


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert BROWSER is not None
    return subprocess.run(
        [BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu", *args],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip


def test_the_report_renders_with_its_verdict_and_plots(tmp_path: Path) -> None:
    history, events = synthetic(BINARY)
    report = write_report(tmp_path / "report.html", history, events, BINARY)
    png = tmp_path / "report.png"
    _chromium(f"--screenshot={png}", "--window-size=1200,2000", report.as_uri())
    assert png.exists() and png.stat().st_size > 50_000, "a page with plots drawn, not a blank"
    dom = _chromium("--dump-dom", report.as_uri()).stdout
    assert 'id="verdict"' in dom
    for sentence in verdict(BINARY):
        assert sentence in dom
    assert dom.count("<img") == 2 and dom.count('src="data:image/png;base64,') == 2
