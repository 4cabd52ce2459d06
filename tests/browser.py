"""Open a report in headless Chromium and list what a reader would find broken."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from fwbench.claims import CLAIMS, UNMEASURED_CLAIMS

ARTIFACT_DIR = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
# The flags the machine's probe uses: no sandbox as root, and no background
# networking, whose connections this offline machine refuses.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def chromium_path() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return shutil.which("chromium")


def inspect_report(html_path: Path, screenshot_path: Path) -> dict:
    """Console errors, undecoded images, verdict cells per claim row, provenance text; saves a screenshot."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("requestfailed", lambda request: errors.append(f"request failed: {request.url}"))
        page.goto(Path(html_path).resolve().as_uri(), wait_until="load")
        images = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.alt, i.complete, i.naturalWidth])")
        claim_rows = page.eval_on_selector_all(
            "table.claims tbody tr",
            "rows => rows.map(r => [r.cells[0].innerText, r.querySelector('td.verdict')?.innerText ?? ''])",
        )
        provenance = page.inner_text("#provenance")
        screenshot_path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot_path), full_page=True)
        browser.close()
    return {"errors": errors, "images": images, "claim_rows": claim_rows, "provenance": provenance}


def require_chromium() -> None:
    """In CI a missing browser is a failure (.ci/run installs it); elsewhere the test is skipped."""
    if chromium_path():
        return
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed: run `make browser` (apt-get install chromium)")
    pytest.skip("chromium is not installed (make browser)")


def check_report_page(html_path: Path, screenshot_name: str, article_claims_only: bool = False) -> None:
    """The page loads without errors, its figures decode, every claim has a verdict cell and the
    provenance names a commit. `article_claims_only`: a report committed by an earlier commit lacks the
    pipeline's later lines beyond the article (Claim.from_article), never an article claim."""
    require_chromium()
    found = inspect_report(html_path, ARTIFACT_DIR / screenshot_name)
    assert found["errors"] == [], found["errors"]
    assert found["images"], "the report has no figures"
    undecoded = [alt for alt, complete, width in found["images"] if not complete or width <= 0]
    assert undecoded == [], f"images not decoded: {undecoded}"
    verdicts = {claim: verdict for claim, verdict in found["claim_rows"]}
    measured = [c.id for c in CLAIMS if c.from_article or not article_claims_only]
    for claim in measured + [c.id for c in UNMEASURED_CLAIMS]:
        assert verdicts.get(claim, "").strip(), f"no verdict cell for claim {claim}"
    commit = re.search(r"git commit\s+([0-9a-f]{40})", found["provenance"])
    assert commit, "the provenance section names no git commit"
