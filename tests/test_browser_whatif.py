"""Issue 25 in a real browser: on the Analyse page, switching on a what-if (a dark vignette drawn
on the uploaded image) shows it beside the original with probabilities that moved. Same set-up
and skips as tests/test_browser.py (Playwright + Debian's Chromium, the tiny bundles)."""
from __future__ import annotations

import re

import pytest

from app_fixtures import FULLRES, app_models_dir  # noqa: F401
from test_browser import RESULT_TIMEOUT_MS, chromium_page, server  # noqa: F401

pytestmark = pytest.mark.browser


def test_what_if_moves_the_probabilities(server, tmp_path):  # noqa: F811
    with chromium_page(viewport={"width": 1400, "height": 2600}) as page:
        page.goto(server, timeout=60_000)
        page.locator("input[type=file]").first.set_input_files(str(FULLRES[0]), timeout=RESULT_TIMEOUT_MS)
        page.get_by_text("What if…? Known confounders").wait_for(timeout=RESULT_TIMEOUT_MS)
        gated = page.get_by_text("Show the model's output anyway", exact=False)
        if gated.count():  # the quality gate hides the output, and the what-ifs with it (issue 26.1)
            page.get_by_text("are hidden too", exact=False).first.wait_for(timeout=RESULT_TIMEOUT_MS)
            gated.first.click()
        assert page.get_by_text(re.compile(r"^Dark vignette — top class")).count() == 0
        page.get_by_role("button", name="dark vignette").click()
        heading = page.get_by_text(re.compile(r"^Dark vignette — top class"))
        heading.wait_for(timeout=RESULT_TIMEOUT_MS)
        table = page.locator("[data-testid=stTable]").filter(has_text="pts").first  # the what-if's (not the timings)
        table.wait_for(timeout=RESULT_TIMEOUT_MS)
        changes = [c for c in table.locator("td").all_inner_texts() if c.endswith("pts")]
        assert changes, table.inner_text()
        assert any(float(c.split()[0]) != 0 for c in changes), changes
        assert page.get_by_text(re.compile(r"dark vignette \(\d+ ms\)")).count() >= 1
        assert page.locator("[data-testid=stException]").count() == 0
        page.screenshot(path=str(tmp_path / "what-if.png"), full_page=True)
