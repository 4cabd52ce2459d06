"""The report: structure on constructed results, and the rendered page in headless Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

from browser import check_report_page
from conftest import PROJECT_ROOT

COMMITTED_REPORTS = sorted((PROJECT_ROOT / "reports").glob("*/comparison.html"))


@pytest.mark.parametrize("html_path", COMMITTED_REPORTS, ids=lambda p: p.parent.name)
def test_committed_report_renders_in_chromium(html_path):
    check_report_page(html_path, f"{html_path.parent.name}.png")
